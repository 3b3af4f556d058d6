"""Live event streams against a real server process: many open streams hold no database connection,
the API stays responsive beside them, and revoking the credential that opened a stream ends it. A change
committed and announced by another process reaches a waiting stream at once (not at the safety poll), a
change nobody announced arrives at the safety poll, and Last-Event-ID replays what a client missed.

The run is "live" without a worker: the test writes its points to the database as a worker would.
"""
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

STREAMS = 40  # more than the whole connection pool of the old server (it held one per stream)


def _live_run(user_id: int, worker: str | None = None) -> int:
    """A running run of this user's, with a dataset row to hang it on (no file: nothing reads it)."""
    from app.auth import service as auth
    from app.datasets.models import Dataset
    from app.db import session_scope
    from app.runs.models import Run

    with session_scope() as s:
        project = auth.default_project_id(s, user=auth.get_user(s, user_id=user_id))
        ds = Dataset(name="live", format="csv", has_header=True, num_rows=1, columns=[{"name": "text", "dtype": "str"}],
                     preview=[], sha256="0" * 64, size_bytes=1, storage_name=f"live-{uuid.uuid4().hex}", project_id=project,
                     owner_id=user_id)
        s.add(ds)
        s.flush()
        run = Run(name="live", status="running", config={}, summary={}, dataset_id=ds.id, base_model="minilm-l6",
                  method="lora", task="classification", project_id=project, owner_id=user_id, state_version=1,
                  worker=worker)
        s.add(run)
        s.flush()
        return run.id


def _write_points(run_id: int, steps: range) -> None:
    from app.db import session_scope
    from app.metrics.service import record_points

    with session_scope() as s:
        record_points(s, run_id, [("train/loss", step, 1.0 / step) for step in steps])


def _write_lines(run_id: int, seqs) -> float:
    """Log lines as a worker's flush stores them (announced on commit); returns when they were committed."""
    from app.db import session_scope
    from app.logs import service

    with session_scope() as s:
        service.append(s, run_id, [(q, time.time(), "INFO", f"line {q}") for q in seqs])
    return time.time()


class Stream:
    """One open /events stream (or another of the run's streams: `path`), read in the background: its
    events, and whether it has ended. `opened` is set by the first status event (or the end)."""

    def __init__(self, client: httpx.AsyncClient, run_id: int, last_event_id: str | None = None,
                 path: str = "events", params: dict | None = None):
        self.events: list[dict] = []  # each with "at": when it arrived (time.time())
        self.status_code: int | None = None
        self.opened = asyncio.Event()
        self.ended = asyncio.Event()
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self.task = asyncio.create_task(self._read(client, f"/api/runs/{run_id}/{path}", headers, params or {}))

    async def _read(self, client, path, headers, params):
        try:
            async with client.stream("GET", path, headers=headers, params=params) as res:
                self.status_code = res.status_code
                current: dict = {}
                async for line in res.aiter_lines():
                    if not line:
                        if "event" in current:
                            current["at"] = time.time()
                            self.events.append(current)
                            if current["event"] == "status":
                                self.opened.set()
                        current = {}
                    elif line.startswith(("id:", "event:", "data:")):
                        key, _, value = line.partition(":")
                        current[key] = value.strip()
        finally:
            self.opened.set()
            self.ended.set()

    def steps(self) -> set[int]:
        return {json.loads(e["data"])["step"] for e in self.events if e["event"] == "metric"}

    def seqs(self) -> list[int]:
        return [json.loads(e["data"])["seq"] for e in self.events if e["event"] == "log"]


def _client(url: str, headers: dict, cookies: dict | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers=headers, cookies=cookies, timeout=httpx.Timeout(60.0, connect=10.0),
                             limits=httpx.Limits(max_connections=2 * STREAMS + 20, max_keepalive_connections=2 * STREAMS + 20))


async def _timed_get(client: httpx.AsyncClient, path: str) -> float:
    start = time.monotonic()
    res = await client.get(path)
    assert res.status_code == 200, res.text
    return time.monotonic() - start


def _idle_in_transaction() -> list[tuple]:
    """The server's PostgreSQL connections that sit inside an open transaction, doing nothing, for longer
    than a statement-to-statement gap (a stream holding a transaction while it waits sits there for a
    whole poll interval)."""
    from sqlalchemy import text

    from app.db import session_scope

    with session_scope() as s:
        return s.execute(text("SELECT pid, state, query FROM pg_stat_activity WHERE application_name = 'peftlab-api-server' "
                              "AND state LIKE 'idle in transaction%' "
                              "AND now() - state_change > interval '200 milliseconds'")).all()


def _server_connections() -> int:
    from sqlalchemy import text

    from app.db import session_scope

    with session_scope() as s:
        return s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'peftlab-api-server'"))


async def _many_streams_scenario(url: str, account, run_id: int, check_postgres: bool) -> dict:
    """STREAMS run pages: each holds the run's metric stream and its log stream."""
    await asyncio.to_thread(_write_lines, run_id, [1])  # a log stream has said nothing before its first line
    async with _client(url, account.headers) as client:
        streams = [Stream(client, run_id) for _ in range(STREAMS)]
        logs = [Stream(client, run_id, path="logs/events") for _ in range(STREAMS)]
        await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), 60)
        await _wait_for(lambda: all(s.seqs() for s in logs), 60)
        assert [s.status_code for s in streams + logs] == [200] * 2 * STREAMS
        assert not any(s.ended.is_set() for s in streams + logs), "a stream ended although its run is still running"

        # The API answers beside them (the old server made these wait for a free connection: 25-29 s).
        timings = [await _timed_get(client, path) for path in ("/api/me", "/api/runs", "/api/me", "/api/runs")]
        idle = []
        if check_postgres:
            for _ in range(3):
                idle += await asyncio.to_thread(_idle_in_transaction)
                await asyncio.sleep(0.3)
            connections = await asyncio.to_thread(_server_connections)
            assert connections < STREAMS, f"{connections} server connections for {2 * STREAMS} streams"

        # The run is live: points and log lines written now reach every open stream.
        await asyncio.to_thread(_write_points, run_id, range(1, 21))
        await asyncio.to_thread(_write_lines, run_id, range(2, 22))

        def everything(stream: Stream) -> bool:
            return stream.seqs() == list(range(1, 22)) if stream in logs else stream.steps() >= set(range(1, 21))

        await _wait_for(lambda: all(everything(s) for s in streams + logs), 30)
        missing = [i for i, s in enumerate(streams + logs) if not everything(s)]
        for s in streams + logs:
            s.task.cancel()
        await asyncio.gather(*(s.task for s in streams + logs), return_exceptions=True)
    return {"timings": timings, "idle": idle, "missing": missing}


def test_many_streams_open_keep_receiving_and_the_api_stays_fast(api_server, admin_account):
    run_id = _live_run(admin_account.user_id)
    result = asyncio.run(_many_streams_scenario(api_server, admin_account, run_id, check_postgres=False))
    assert not result["missing"], f"streams {result['missing']} did not receive every point"
    # Generous: this is a shared 2-core machine; bench/streams.py measures the real figures.
    assert max(result["timings"]) < 5, result["timings"]


def test_streams_leave_no_connection_idle_in_transaction_on_postgresql(api_server, admin_account, settings):
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL: set PEFTLAB_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test")
    run_id = _live_run(admin_account.user_id)
    result = asyncio.run(_many_streams_scenario(api_server, admin_account, run_id, check_postgres=True))
    assert result["idle"] == [], f"connections idle in transaction while {STREAMS} streams were open: {result['idle']}"
    assert not result["missing"], f"streams {result['missing']} did not receive every point"
    assert max(result["timings"]) < 5, result["timings"]


async def _ends_after(open_stream, revoke, timeout: float = 10.0) -> tuple[bool, bool]:
    """(ended before the revoke, ended within `timeout` after it)."""
    stream = await open_stream()
    await asyncio.wait_for(stream.opened.wait(), 30)
    assert stream.status_code == 200
    await asyncio.sleep(0.6)  # a few polls: the stream is settled and waiting
    ended_before = stream.ended.is_set()
    await asyncio.to_thread(revoke)
    try:
        await asyncio.wait_for(stream.ended.wait(), timeout)
    except TimeoutError:
        pass
    ended = stream.ended.is_set()
    stream.task.cancel()
    await asyncio.gather(stream.task, return_exceptions=True)
    return ended_before, ended


def test_revoking_a_token_ends_the_streams_it_opened(api_server, admin_account):
    run_id = _live_run(admin_account.user_id)
    made = httpx.post(f"{api_server}/api/tokens", json={"name": "stream"}, headers=admin_account.headers)
    assert made.status_code == 201, made.text
    token = made.json()

    async def scenario():
        async with _client(api_server, {"Authorization": f"Bearer {token['token']}"}) as client, \
                _client(api_server, admin_account.headers) as other:
            bystander = Stream(other, run_id)  # opened with another token: keeps streaming
            result = await _ends_after(
                lambda: _opened(Stream(client, run_id)),
                lambda: httpx.delete(f"{api_server}/api/tokens/{token['id']}", headers=admin_account.headers).raise_for_status())
            await asyncio.sleep(1)
            still_open = not bystander.ended.is_set()
            bystander.task.cancel()
            await asyncio.gather(bystander.task, return_exceptions=True)
            return result, still_open

    (ended_before, ended), bystander_open = asyncio.run(scenario())
    assert not ended_before and ended, "the stream outlived the token that opened it"
    assert bystander_open, "a stream opened with another token ended too"


async def _opened(stream: Stream) -> Stream:
    return stream


def test_signing_out_ends_the_streams_of_that_browser_session(api_server, admin_account):
    from app.auth import service
    from app.auth.deps import CSRF_HEADER, SESSION_COOKIE
    from app.db import session_scope

    run_id = _live_run(admin_account.user_id)
    with session_scope() as s:
        cookie, row = service.start_session(s, user=service.get_user(s, user_id=admin_account.user_id))
        csrf = row.csrf_token

    def sign_out():
        res = httpx.post(f"{api_server}/logout", cookies={SESSION_COOKIE: cookie}, headers={CSRF_HEADER: csrf})
        assert res.status_code == 303, res.text

    async def scenario():
        async with _client(api_server, {}, cookies={SESSION_COOKIE: cookie}) as client:
            return await _ends_after(lambda: _opened(Stream(client, run_id)), sign_out)

    ended_before, ended = asyncio.run(scenario())
    assert not ended_before and ended, "the stream outlived the browser session that opened it"


# ---- announced changes (app/metrics/notify.py, listen.py) -------------------------------------------------

SAFETY_POLL = 30.0  # the quiet server's: anything that arrives well before it was announced, not polled

# Run in another process, as a worker would: commit points, then a progress change; print when each committed.
WRITER = """
import json, sys, time
import app.tables
from app.db import session_scope
from app.metrics.service import record_points
from app.runs.lifecycle import set_progress
run_id, worker = int(sys.argv[1]), sys.argv[2]
out = {}
with session_scope() as s:
    record_points(s, run_id, [("train/loss", 1, 0.5)])
    out["points"] = time.time()
with session_scope() as s:
    assert set_progress(s, run_id, worker, 0.25)
    out["progress"] = time.time()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def quiet_server(peftlab_env, tmp_path_factory):
    """A server whose safety poll is far slower than any announced change should take."""
    from tests.conftest import _stop, start_server

    proc, url = start_server(tmp_path_factory.mktemp("logs") / "quiet-server.log",
                             {"PEFTLAB_SSE_POLL_SECONDS": str(SAFETY_POLL)})
    yield url
    _stop(proc)


def _end_run(run_id: int) -> None:
    from app.db import session_scope
    from app.runs.models import Run

    with session_scope() as s:
        s.get(Run, run_id).status = "cancelled"


async def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_a_change_committed_by_another_process_reaches_a_waiting_stream_at_once(quiet_server, admin_account):
    run_id = _live_run(admin_account.user_id, worker="announcing-writer")

    async def scenario():
        async with _client(quiet_server, admin_account.headers) as client:
            stream = Stream(client, run_id)
            await asyncio.wait_for(stream.opened.wait(), 30)
            await asyncio.sleep(0.5)  # settled: the feed's first read is done, it waits for an announcement
            writer = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", WRITER, str(run_id), "announcing-writer"],
                                             cwd=Path(__file__).resolve().parents[2], env=os.environ, capture_output=True,
                                             text=True, timeout=120)
            assert writer.returncode == 0, writer.stderr
            committed = json.loads(writer.stdout.strip().splitlines()[-1])

            def arrived():
                return stream.steps() == {1} and any(e["event"] == "status" and '"progress":0.25' in e["data"]
                                                     for e in stream.events)

            await _wait_for(arrived, SAFETY_POLL / 2)
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)
            return stream.events, committed

    try:
        events, committed = asyncio.run(scenario())
    finally:
        _end_run(run_id)
    metric = [e for e in events if e["event"] == "metric"]
    status = [e for e in events if e["event"] == "status" and '"progress":0.25' in e["data"]]
    assert metric and status, f"the announced changes did not arrive within {SAFETY_POLL / 2} s: {events}"
    # Generous for a busy 2-core machine, and still far below the safety poll (bench/live_fanout.py measures).
    assert metric[0]["at"] - committed["points"] < 3.0, (metric[0]["at"], committed)
    assert status[0]["at"] - committed["progress"] < 3.0, (status[0]["at"], committed)


def test_a_change_nobody_announced_arrives_at_the_safety_poll(api_server, admin_account, settings):
    """The session server polls every PEFTLAB_SSE_POLL_SECONDS (tests/conftest.py); a point written
    without an announcement (a lost message) still reaches the stream."""
    from app.db import session_scope
    from app.metrics.models import MetricPoint

    run_id = _live_run(admin_account.user_id)

    async def scenario():
        async with _client(api_server, admin_account.headers) as client:
            stream = Stream(client, run_id)
            await asyncio.wait_for(stream.opened.wait(), 30)
            with session_scope() as s:  # a plain insert: record_points would announce it
                s.add(MetricPoint(run_id=run_id, name="train/loss", step=7, value=0.5, time=time.time()))
            await _wait_for(lambda: stream.steps() == {7}, 15 + 10 * settings.sse_poll_seconds)
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)
            return stream.steps()

    try:
        assert asyncio.run(scenario()) == {7}
    finally:
        _end_run(run_id)


def test_a_stream_that_reconnects_with_last_event_id_gets_only_what_it_missed(quiet_server, admin_account):
    run_id = _live_run(admin_account.user_id)
    _write_points(run_id, range(1, 11))

    async def scenario():
        async with _client(quiet_server, admin_account.headers) as client:
            first = Stream(client, run_id)
            await _wait_for(lambda: first.steps() == set(range(1, 11)), 30)
            first.task.cancel()
            await asyncio.gather(first.task, return_exceptions=True)
            seen_5 = next(e["id"] for e in first.events if e["event"] == "metric" and json.loads(e["data"])["step"] == 5)
            await asyncio.to_thread(_write_points, run_id, range(11, 16))  # while it was away
            again = Stream(client, run_id, last_event_id=seen_5)
            await _wait_for(lambda: again.steps() >= set(range(6, 16)), 30)
            await asyncio.to_thread(_write_points, run_id, range(16, 18))  # live again, announced
            await _wait_for(lambda: again.steps() >= set(range(6, 18)), SAFETY_POLL / 2)
            again.task.cancel()
            await asyncio.gather(again.task, return_exceptions=True)
            return first.steps(), again.steps()

    try:
        first, again = asyncio.run(scenario())
    finally:
        _end_run(run_id)
    assert first == set(range(1, 11))
    assert again == set(range(6, 18)), "the replay sent points the client had seen, or missed some"
