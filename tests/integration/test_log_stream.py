"""The run's log stream (GET /api/runs/{id}/logs/events) against a real server process: lines written and
announced while it is watched arrive at once, a reconnect resumes after Last-Event-ID, and the stream ends
with `end` only after the lines a worker writes just after the run's final status. The run is "live"
without a worker: the test writes its log lines to the database as a worker's flush would.
"""
import asyncio
import json
import re
import time
from datetime import timedelta

import httpx
import pytest

from tests.integration.test_live_streams import (SAFETY_POLL, Stream, _client, _live_run, _wait_for,  # noqa: F401
                                                 _write_lines, quiet_server)

pytestmark = pytest.mark.integration


def _finish(run_id: int, ago: timedelta = timedelta(0)) -> None:
    """The run's final status, as a worker's finish writes it (announced)."""
    from app.db import session_scope, utcnow
    from app.metrics import notify
    from app.runs.models import Run

    with session_scope() as s:
        run = s.get(Run, run_id)
        run.status, run.finished_at, run.state_version = "succeeded", utcnow() - ago, run.state_version + 1
        notify.changed(s, run_id)


class LogStream(Stream):
    """One open log stream, read in the background."""

    def __init__(self, client: httpx.AsyncClient, run_id: int, last_event_id: str | None = None, after: int | None = None):
        super().__init__(client, run_id, last_event_id, path="logs/events", params=None if after is None else {"after": after})

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_lines_arrive_as_written_and_the_stream_ends_after_the_last_ones(quiet_server, admin_account):
    from app.metrics.live import LOG_GRACE_SECONDS

    run_id = _live_run(admin_account.user_id)
    _write_lines(run_id, range(1, 4))

    async def scenario():
        async with _client(quiet_server, admin_account.headers) as client:
            stream = LogStream(client, run_id)
            await _wait_for(lambda: stream.seqs() == [1, 2, 3], 30)
            await asyncio.sleep(0.5)  # settled: the feed waits for an announcement (its safety poll is far off)
            committed = await asyncio.to_thread(_write_lines, run_id, range(4, 6))
            await _wait_for(lambda: len(stream.seqs()) == 5, SAFETY_POLL / 2)
            await asyncio.to_thread(_finish, run_id)  # committed: the lines below come after the end
            await asyncio.to_thread(_write_lines, run_id, range(6, 8))  # the worker's last lines, after the end
            await asyncio.wait_for(stream.ended.wait(), LOG_GRACE_SECONDS + SAFETY_POLL / 2)
            return stream, committed

    stream, committed = asyncio.run(scenario())
    assert stream.seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert [int(e["id"]) for e in stream.events if e["event"] == "log"] == stream.seqs()  # id = seq
    assert json.loads(stream.events[0]["data"]) | {"time": 0} == {"seq": 1, "time": 0, "level": "INFO", "message": "line 1"}
    assert stream.events[-1]["event"] == "end"
    fourth = next(e for e in stream.events if e.get("id") == "4")
    assert fourth["at"] - committed < 3.0, "an announced line waited for the safety poll"


def test_a_reconnect_resumes_after_the_last_line_it_saw(quiet_server, admin_account):
    run_id = _live_run(admin_account.user_id)
    _write_lines(run_id, range(1, 11))

    async def scenario():
        async with _client(quiet_server, admin_account.headers) as client:
            again = LogStream(client, run_id, last_event_id="4")
            after = LogStream(client, run_id, after=8)
            await _wait_for(lambda: len(again.seqs()) >= 6 and len(after.seqs()) >= 2, 30)
            await asyncio.to_thread(_write_lines, run_id, range(11, 13))
            await _wait_for(lambda: len(again.seqs()) >= 8 and len(after.seqs()) >= 4, SAFETY_POLL / 2)
            await again.close()
            await after.close()
            return again.seqs(), after.seqs()

    try:
        again, after = asyncio.run(scenario())
    finally:
        _finish(run_id)
    assert again == list(range(5, 13))
    assert after == [9, 10, 11, 12]


def test_the_run_stream_carries_the_log_too_and_resumes_both(quiet_server, admin_account):
    """GET /api/runs/{id}/events?logs=true: points, status and log lines on one connection, ids "EVENT.SEQ";
    a reconnect with one resumes both; `end` after the lines written just after the run's end."""
    from tests.integration.test_live_streams import _write_points

    run_id = _live_run(admin_account.user_id)
    _write_points(run_id, range(1, 4))
    _write_lines(run_id, range(1, 3))

    def kinds(stream: Stream) -> list[str]:
        return [e["event"] for e in stream.events]

    async def scenario():
        async with _client(quiet_server, admin_account.headers) as client:
            first = Stream(client, run_id, params={"logs": "true"})
            await _wait_for(lambda: first.steps() == {1, 2, 3} and first.seqs() == [1, 2], 30)
            resume_at = first.events[-1]["id"]
            first.task.cancel()
            await asyncio.gather(first.task, return_exceptions=True)
            await asyncio.to_thread(_write_points, run_id, range(4, 6))  # while it was away
            await asyncio.to_thread(_write_lines, run_id, range(3, 5))
            again = Stream(client, run_id, last_event_id=resume_at, params={"logs": "true"})
            await _wait_for(lambda: again.steps() == {4, 5} and again.seqs() == [3, 4], 30)
            await asyncio.to_thread(_finish, run_id)  # committed: the lines below come after the end
            await asyncio.to_thread(_write_lines, run_id, [5])  # the worker's last lines, after the end
            await asyncio.wait_for(again.ended.wait(), 30)
            return first, again, resume_at

    first, again, resume_at = asyncio.run(scenario())
    assert "status" in kinds(first) and set(kinds(first)) <= {"metric", "log", "status"}
    assert all(re.fullmatch(r"\d+\.\d+", e["id"]) for e in first.events + again.events if e["event"] != "end")
    assert resume_at.endswith(".2")
    assert again.steps() == {4, 5} and again.seqs() == [3, 4, 5]
    assert kinds(again)[-1] == "end" and '"status":"succeeded"' in "".join(e["data"] for e in again.events)


def test_a_finished_runs_log_comes_whole_and_ends_at_once(api_server, admin_account):
    """More lines than a feed keeps in memory (live.LOG_BUFFER): the rest come from the backlog reads.
    The run ended an hour ago: no wait for late lines."""
    from app.metrics.live import LOG_BUFFER

    run_id = _live_run(admin_account.user_id)
    total = LOG_BUFFER + 500
    _write_lines(run_id, range(1, total + 1))
    _finish(run_id, ago=timedelta(hours=1))

    async def scenario():
        async with _client(api_server, admin_account.headers) as client:
            started = time.monotonic()
            stream = LogStream(client, run_id)
            await asyncio.wait_for(stream.ended.wait(), 30)
            return stream, time.monotonic() - started

    stream, took = asyncio.run(scenario())
    assert stream.seqs() == list(range(1, total + 1))
    assert stream.events[-1]["event"] == "end"
    assert took < 10, took  # no grace for a run that ended long ago (a 2-core machine under test load)


def test_a_stream_of_a_run_one_cannot_see_is_refused(api_server, admin_account, client_as):
    run_id = _live_run(admin_account.user_id)
    try:
        other = client_as("log-stream-outsider")
        res = httpx.get(f"{api_server}/api/runs/{run_id}/logs/events", headers=other.headers, timeout=10)
        assert res.status_code == 404
        assert httpx.get(f"{api_server}/api/runs/{run_id}/logs/events", timeout=10).status_code == 401
    finally:
        _finish(run_id)


def test_the_cli_follows_the_worker_log_to_its_last_line(quiet_server, admin_account):
    """`peftlab runs logs --worker-log --follow` prints each line once, as it comes, the lines written
    after the run's end included, then the final status. (The quiet server: only announcements are fast.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    run_id = _live_run(admin_account.user_id)
    _write_lines(run_id, range(1, 3))
    env = {**os.environ, "PEFTLAB_URL": quiet_server, "PEFTLAB_TOKEN": admin_account.token}
    follow = subprocess.Popen([sys.executable, "-m", "app.cli", "runs", "logs", str(run_id), "--worker-log", "--follow"],
                              cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        first = follow.stdout.readline()  # the status line, then lines 1 and 2 from the page it read first
        assert first.startswith(f"run {run_id} (live): running"), first
        assert [follow.stdout.readline().split()[-1] for _ in range(2)] == ["1", "2"]
        _write_lines(run_id, range(3, 5))
        _finish(run_id)  # committed: line 5 comes after the end
        _write_lines(run_id, [5])  # after the end, as a worker's last flush
        out, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
    lines = out.strip().splitlines()
    assert [line.split()[-1] for line in lines[:-1]] == ["3", "4", "5"], out + err
    assert lines[-1] == f"run {run_id} (live): succeeded, 0%", out
    assert follow.returncode == 0
