"""Live event streams against a real server process: many open streams hold no database connection,
the API stays responsive beside them, and revoking the credential that opened a stream ends it.

The run is "live" without a worker: the test writes its points to the database as a worker would.
"""
import asyncio
import json
import time
import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration

STREAMS = 40  # more than the whole connection pool of the old server (it held one per stream)


def _live_run(user_id: int) -> int:
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
                  method="lora", task="classification", project_id=project, owner_id=user_id, state_version=1)
        s.add(run)
        s.flush()
        return run.id


def _write_points(run_id: int, steps: range) -> None:
    from app.db import session_scope
    from app.metrics.service import record_points

    with session_scope() as s:
        record_points(s, run_id, [("train/loss", step, 1.0 / step) for step in steps])


class Stream:
    """One open /events stream, read in the background: its events, and whether it has ended."""

    def __init__(self, client: httpx.AsyncClient, run_id: int):
        self.events: list[dict] = []
        self.status_code: int | None = None
        self.opened = asyncio.Event()
        self.ended = asyncio.Event()
        self.task = asyncio.create_task(self._read(client, run_id))

    async def _read(self, client, run_id):
        try:
            async with client.stream("GET", f"/api/runs/{run_id}/events") as res:
                self.status_code = res.status_code
                current: dict = {}
                async for line in res.aiter_lines():
                    if not line:
                        if "event" in current:
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


def _client(url: str, headers: dict, cookies: dict | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers=headers, cookies=cookies, timeout=httpx.Timeout(60.0, connect=10.0),
                             limits=httpx.Limits(max_connections=STREAMS + 20, max_keepalive_connections=STREAMS + 20))


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
    async with _client(url, account.headers) as client:
        streams = [Stream(client, run_id) for _ in range(STREAMS)]
        await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), 60)
        assert [s.status_code for s in streams] == [200] * STREAMS
        assert not any(s.ended.is_set() for s in streams), "a stream ended although its run is still running"

        # The API answers beside them (the old server made these wait for a free connection: 25-29 s).
        timings = [await _timed_get(client, path) for path in ("/api/me", "/api/runs", "/api/me", "/api/runs")]
        idle = []
        if check_postgres:
            for _ in range(3):
                idle += await asyncio.to_thread(_idle_in_transaction)
                await asyncio.sleep(0.3)
            connections = await asyncio.to_thread(_server_connections)
            assert connections < STREAMS, f"{connections} server connections for {STREAMS} streams"

        # The run is live: points written now reach every open stream.
        await asyncio.to_thread(_write_points, run_id, range(1, 21))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(s.steps() >= set(range(1, 21)) for s in streams):
            await asyncio.sleep(0.2)
        missing = [i for i, s in enumerate(streams) if not s.steps() >= set(range(1, 21))]
        for s in streams:
            s.task.cancel()
        await asyncio.gather(*(s.task for s in streams), return_exceptions=True)
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
