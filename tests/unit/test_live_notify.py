"""Announcements of changed runs on the embedded default (app/metrics/notify.py → listen.py): sent only
once the transaction commits, never for one rolled back, and a socket left by a dead server is removed."""
import asyncio
import os
import socket

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session


@pytest.fixture
def local_settings(tmp_path, monkeypatch):
    from app.config import get_settings

    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PEFTLAB_BROKER_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


async def _heard(write, wait: float = 1.0) -> list[str | None]:
    from app.metrics import listen

    heard: list[str | None] = []
    listener = listen.start(heard.append)
    try:
        await asyncio.to_thread(write)  # another thread, as a request's or a worker's commit would be
        deadline = asyncio.get_running_loop().time() + wait
        while not heard and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # anything else that was sent has arrived too
    finally:
        await listener.close()
    return heard


def _session() -> Session:
    return Session(create_engine("sqlite://"))


def test_a_change_is_announced_after_its_commit(local_settings):
    from app.metrics import notify

    def write():
        with _session() as s:
            s.execute(text("SELECT 1"))
            notify.changed(s, 7)
            notify.changed(s, 7)
            notify.changed(s, 9)
            s.commit()

    assert sorted(asyncio.run(_heard(write))) == ["7", "9"]


def test_a_rolled_back_change_is_never_announced(local_settings):
    from app.metrics import notify

    def write():
        with _session() as s:
            s.execute(text("SELECT 1"))
            notify.changed(s, 7)
            s.rollback()
            s.execute(text("SELECT 1"))
            s.commit()  # a later transaction of the same session carries nothing over

    assert asyncio.run(_heard(write, wait=0.5)) == []


def test_a_socket_left_by_a_dead_server_is_removed(local_settings):
    from app.metrics import notify

    folder = notify.socket_dir(local_settings)
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "1-deadbeef.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(stale))
    dead.close()  # its process died without unlinking it
    assert stale.exists()
    notify.publish(["3"])
    assert not stale.exists()
    assert os.listdir(folder) == []


def test_an_unreachable_redis_never_fails_the_commit_and_pauses_announcements(tmp_path, monkeypatch):
    from app.config import get_settings
    from app.metrics import notify

    monkeypatch.setenv("PEFTLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PEFTLAB_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    get_settings.cache_clear()
    monkeypatch.setattr(notify, "_paused_until", 0.0)
    try:
        with _session() as s:
            s.execute(text("SELECT 1"))
            notify.changed(s, 4)
            s.commit()  # the announcement fails after the commit; the commit stands
        assert notify._paused_until > 0, "the failed announcement did not pause the next ones"
    finally:
        get_settings.cache_clear()
