"""Live run feeds: one per watched run in this process, shared by every stream of that run.

A feed reads the database when it is woken: a writer committed points or a status change of its run
and announced it (app/metrics/notify.py), and this process's one listener (app/metrics/listen.py)
handed the run id here. The message only says "look"; the feed reads the rows after its cursor, so
the database stays the source of truth. A slow safety poll (every sse_poll_seconds) catches a missed
message, and revoked credentials that were not announced.

No stream holds a database connection. A read opens one short session: the run's new points, its
state and which of its streams' credentials are still valid, and closes it before the feed waits.
So 500 browser tabs on one run cost one read per change, not 500, and a revoked token or ended
browser session closes its streams at the next read. A stream that is behind the feed's buffer (a
reconnect replaying from Last-Event-ID) reads its backlog in short sessions of its own.
"""
import asyncio
import json
import logging
import weakref
from bisect import bisect_right
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from app.auth import service as auth_service
from app.db import db_slot, get_sessionmaker
from app.metrics import listen, notify, service
from app.runs.models import TERMINAL, Run

log = logging.getLogger(__name__)

BUFFER = 5000  # newest points a feed keeps in memory; a stream further behind reads them from SQL


@dataclass(frozen=True)
class Credential:
    """What opened a stream: an API token or a browser session, by the digest stored for it."""

    kind: str  # "token" | "session"
    digest: str


@dataclass(frozen=True)
class Point:
    id: int
    data: str  # the metric event's JSON, serialised once for every stream


def point_event(p) -> Point:
    return Point(p.id, json.dumps({"name": p.name, "step": p.step, "value": p.value, "time": p.time},
                                  separators=(",", ":")))


@dataclass
class _Read:
    base: int | None  # set on a feed's first read: the newest point id at that moment
    points: list[Point]
    state: tuple[str, float, int] | None
    checked: set[Credential]  # the credentials this read looked at (streams may join meanwhile)
    valid: set[Credential]


def _reader_session():
    """A session whose statements run without an open transaction on PostgreSQL: under READ COMMITTED
    each statement sees its own snapshot anyway, so nothing is lost, and the feed's connection is never
    left "idle in transaction" between its statements. SQLite keeps its snapshot transaction."""
    session = get_sessionmaker()()
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return session


def _read(run_id: int, cursor: int | None, credentials: set[Credential]) -> _Read:
    """One short session: new points, the run's state, which credentials still hold. Closed on return."""
    with _reader_session() as session:
        base, points = None, []
        if cursor is None:
            base = service.latest_cursor(session, run_id)
        else:
            points = [point_event(p) for p in service.points_after(session, run_id, cursor, limit=BUFFER)]
        row = session.execute(select(Run.status, Run.progress, Run.state_version).where(Run.id == run_id)).first()
        tokens = {c.digest for c in credentials if c.kind == "token"}
        sessions = {c.digest for c in credentials if c.kind == "session"}
        valid_tokens, valid_sessions = auth_service.valid_digests(session, tokens=tokens, sessions=sessions)
    valid = {c for c in credentials if c.digest in (valid_tokens if c.kind == "token" else valid_sessions)}
    return _Read(base, points, None if row is None else tuple(row), credentials, valid)


def _backlog(run_id: int, cursor: int, upto: int, limit: int) -> list[Point]:
    with _reader_session() as session:
        return [point_event(p) for p in service.points_after(session, run_id, cursor, limit=limit) if p.id <= upto]


async def read_backlog(run_id: int, cursor: int, upto: int, limit: int = 1000) -> list[Point]:
    """Points in (cursor, upto] for a stream behind the feed's buffer, in a short session of its own."""
    async with db_slot():
        return await run_in_threadpool(_backlog, run_id, cursor, upto, limit)


class RunFeed:
    def __init__(self, run_id: int, poll_every: float):
        self.run_id = run_id
        self.poll_every = poll_every
        self.base: int | None = None  # points with id <= base are not in the buffer (None: not read yet)
        self.points: list[Point] = []
        self._ids: list[int] = []
        self.state: tuple[str, float, int] | None = None
        self.final = False  # the run has ended and every point of it has been read
        self.revoked: set[Credential] = set()
        self.credentials: Counter[Credential] = Counter()
        self._tick = asyncio.Event()
        self._wake = asyncio.Event()  # set by the listener when this run's change was announced
        self.task: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.base is not None

    @property
    def cursor(self) -> int:
        return self._ids[-1] if self._ids else (self.base or 0)

    def covers(self, cursor: int) -> bool:
        return self.base is not None and cursor >= self.base

    def after(self, cursor: int) -> list[Point]:
        return self.points[bisect_right(self._ids, cursor):]

    async def next_tick(self, timeout: float) -> None:
        """Wait for the next read (or the timeout, so a stream can send keep-alives). asyncio.timeout, not
        wait_for: on Python 3.11 wait_for makes a task per call, and every stream of a run waits here once
        per change (500 streams: 500 tasks per point)."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._tick.wait()

    def wake(self) -> None:
        self._wake.set()

    def _apply(self, read: _Read) -> None:
        if read.base is not None:
            self.base = read.base
        if read.points:
            self.points.extend(read.points)
            self._ids.extend(p.id for p in read.points)
            if len(self.points) > BUFFER:
                drop = len(self.points) - BUFFER
                self.base = self._ids[drop - 1]
                del self.points[:drop], self._ids[:drop]
        self.state = read.state
        self.revoked |= read.checked - read.valid
        # Ended: the run is gone, or a read saw it terminal and found nothing new after it.
        self.final = read.state is None or (read.state[0] in TERMINAL and read.base is None and not read.points)

    async def poll(self) -> None:
        while True:
            # Cleared before the read: an announcement that comes while it runs wakes the next one.
            self._wake.clear()
            try:
                async with db_slot():
                    read = await run_in_threadpool(_read, self.run_id, None if self.base is None else self.cursor,
                                                   set(self.credentials))
            except Exception:  # noqa: BLE001 — the database is down or busy: streams wait, the next poll retries
                log.warning("live feed of run %s could not read; retrying", self.run_id, exc_info=True)
                read = None
            else:
                self._apply(read)
            old, self._tick = self._tick, asyncio.Event()
            old.set()
            if self.final:
                _forget(self)  # later streams start a fresh feed; the ones here drain this one
                return
            if read is not None and read.state is not None and read.state[0] in TERMINAL:
                continue  # ended: read once more at once, for points committed just before the end
            with suppress(TimeoutError):
                async with asyncio.timeout(self.poll_every):  # the safety poll
                    await self._wake.wait()


# One registry and one listener per event loop (tests run apps on several loops; a feed's task lives on one).
_feeds: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, RunFeed]]" = weakref.WeakKeyDictionary()
_listeners: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object]" = weakref.WeakKeyDictionary()


def _registry() -> dict[int, RunFeed]:
    return _feeds.setdefault(asyncio.get_running_loop(), {})


def _forget(feed: RunFeed) -> None:
    registry = _registry()
    if registry.get(feed.run_id) is feed:
        del registry[feed.run_id]


def wake(run_id: str | None) -> None:
    """The listener's callback: a run's change was announced (None or EVERY_RUN: any run may have changed)."""
    registry = _registry()
    if run_id is None or run_id == notify.EVERY_RUN:
        for feed in registry.values():
            feed.wake()
    elif run_id.isdigit() and (feed := registry.get(int(run_id))) is not None:
        feed.wake()


def start_listening() -> None:
    """This process's one subscription (idempotent). Without it, feeds still see changes at the safety poll."""
    loop = asyncio.get_running_loop()
    if loop in _listeners:
        return
    try:
        _listeners[loop] = listen.start(wake)
    except Exception:  # noqa: BLE001 — e.g. an unwritable data dir: slower streams, not a broken server
        log.warning("live streams cannot listen for announcements; they poll every sse_poll_seconds", exc_info=True)
        _listeners[loop] = None


async def stop_listening() -> None:
    listener = _listeners.pop(asyncio.get_running_loop(), None)
    if listener is not None:
        await listener.close()


def join(run_id: int, credential: Credential, poll_every: float) -> RunFeed:
    start_listening()
    registry = _registry()
    feed = registry.get(run_id)
    if feed is None:
        feed = registry[run_id] = RunFeed(run_id, poll_every)
        feed.task = asyncio.get_running_loop().create_task(feed.poll())
    feed.credentials[credential] += 1
    return feed


def leave(feed: RunFeed, credential: Credential) -> None:
    feed.credentials[credential] -= 1
    if feed.credentials[credential] <= 0:
        del feed.credentials[credential]
    if not feed.credentials:  # nobody watches: stop polling
        _forget(feed)
        if feed.task is not None and not feed.task.done():
            feed.task.cancel()
