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

While a run's log tail is watched (GET /api/runs/{id}/logs/events), its feed also reads the run's new
worker log lines in the same short session. The worker writes its last lines just after the run's final
status, so such a feed keeps reading for LOG_GRACE_SECONDS after the run ended before it calls it final.
"""
import asyncio
import json
import logging
import time
import weakref
from bisect import bisect_right
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from app.auth import service as auth_service
from app.db import db_slot, get_sessionmaker
from app.logs import service as logs_service
from app.metrics import listen, notify, service
from app.runs.models import TERMINAL, Run

log = logging.getLogger(__name__)

BUFFER = 5000  # newest points a feed keeps in memory; a stream further behind reads them from SQL
LOG_BUFFER = 1000  # newest log lines likewise
LOG_GRACE_SECONDS = 3.0  # how long after a run's end its last log lines may still come
KEEP_ALIVE_SECONDS = 15  # a stream's comment line now and then keeps proxies from closing a quiet one


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


def line_event(line) -> Point:
    """A log line as a Point whose id is its seq."""
    return Point(line.seq, json.dumps({"seq": line.seq, "time": line.time, "level": line.level, "message": line.message},
                                      separators=(",", ":")))


@dataclass
class _Read:
    base: int | None  # set on a feed's first read: the newest point id at that moment
    points: list[Point]
    state: tuple[str, float, int] | None
    checked: set[Credential]  # the credentials this read looked at (streams may join meanwhile)
    valid: set[Credential]
    log_base: int | None = None  # set on the first read for a log tail: the newest line's seq then
    lines: list[Point] = ()
    ended_at: float | None = None  # unix time the run finished, when it has


def _reader_session():
    """A session whose statements run without an open transaction on PostgreSQL: under READ COMMITTED
    each statement sees its own snapshot anyway, so nothing is lost, and the feed's connection is never
    left "idle in transaction" between its statements. SQLite keeps its snapshot transaction."""
    session = get_sessionmaker()()
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    return session


_NO_LOGS = -1  # _read's log_cursor when nobody watches the run's log tail


def _read(run_id: int, cursor: int | None, credentials: set[Credential], log_cursor: int | None = _NO_LOGS) -> _Read:
    """One short session: new points (and log lines, unless log_cursor is _NO_LOGS), the run's state, which
    credentials still hold. Closed on return."""
    with _reader_session() as session:
        base, points = None, []
        if cursor is None:
            base = service.latest_cursor(session, run_id)
        else:
            points = [point_event(p) for p in service.points_after(session, run_id, cursor, limit=BUFFER)]
        log_base, lines = None, []
        if log_cursor is None:
            log_base = logs_service.last_seq(session, run_id)
        elif log_cursor != _NO_LOGS:
            lines = [line_event(line) for line in logs_service.lines_after(session, run_id, log_cursor, LOG_BUFFER)]
        row = session.execute(select(Run.status, Run.progress, Run.state_version, Run.finished_at)
                              .where(Run.id == run_id)).first()
        tokens = {c.digest for c in credentials if c.kind == "token"}
        sessions = {c.digest for c in credentials if c.kind == "session"}
        valid_tokens, valid_sessions = auth_service.valid_digests(session, tokens=tokens, sessions=sessions)
    valid = {c for c in credentials if c.digest in (valid_tokens if c.kind == "token" else valid_sessions)}
    ended_at = row[3].timestamp() if row is not None and row[3] is not None else None
    return _Read(base, points, None if row is None else tuple(row[:3]), credentials, valid, log_base, lines, ended_at)


def _backlog(run_id: int, cursor: int, upto: int, limit: int) -> list[Point]:
    with _reader_session() as session:
        return [point_event(p) for p in service.points_after(session, run_id, cursor, limit=limit) if p.id <= upto]


async def read_backlog(run_id: int, cursor: int, upto: int, limit: int = 1000) -> list[Point]:
    """Points in (cursor, upto] for a stream behind the feed's buffer, in a short session of its own."""
    async with db_slot():
        return await run_in_threadpool(_backlog, run_id, cursor, upto, limit)


def _log_backlog(run_id: int, after: int, upto: int) -> list[Point]:
    with _reader_session() as session:
        return [line_event(line) for line in logs_service.lines_after(session, run_id, after, min(upto - after, LOG_BUFFER))]


async def read_log_backlog(run_id: int, after: int, upto: int) -> list[Point]:
    """Log lines with seq in (after, upto] for a stream behind the feed's log buffer (a short session)."""
    async with db_slot():
        return await run_in_threadpool(_log_backlog, run_id, after, upto)


class Buffer:
    """The newest `size` events of one kind, in id order (a run's points by id, its log lines by seq). Ids up
    to `base` are not held: a stream further behind reads them from SQL. base is None until the first read."""

    def __init__(self, size: int):
        self.size = size
        self.base: int | None = None
        self.items: list[Point] = []
        self._ids: list[int] = []

    @property
    def ready(self) -> bool:
        return self.base is not None

    @property
    def cursor(self) -> int:
        return self._ids[-1] if self._ids else (self.base or 0)

    def covers(self, cursor: int) -> bool:
        return self.base is not None and cursor >= self.base

    def after(self, cursor: int) -> list[Point]:
        return self.items[bisect_right(self._ids, cursor):]

    def add(self, base: int | None, items: list[Point]) -> None:
        if base is not None:
            self.base = base
        if items:
            self.items.extend(items)
            self._ids.extend(p.id for p in items)
            if len(self.items) > self.size:
                drop = len(self.items) - self.size
                self.base = self._ids[drop - 1]
                del self.items[:drop], self._ids[:drop]

    def clear(self) -> None:
        self.base, self.items, self._ids = None, [], []


class RunFeed:
    def __init__(self, run_id: int, poll_every: float):
        self.run_id = run_id
        self.poll_every = poll_every
        self.points = Buffer(BUFFER)
        self.state: tuple[str, float, int] | None = None
        self.final = False  # the run has ended and every point of it has been read
        self.log_watchers = 0  # streams of the run's log tail; while there are none, lines are not read
        self.lines = Buffer(LOG_BUFFER)  # filled while log_watchers > 0
        self._ended_at: float | None = None  # when the run finished (unix time, the worker's clock)
        self._seen_ended: float | None = None  # when this feed first saw it ended (monotonic, ours)
        self._news = False  # the last read found something new
        self.revoked: set[Credential] = set()
        self.credentials: Counter[Credential] = Counter()
        self._tick = asyncio.Event()
        self._wake = asyncio.Event()  # set by the listener when this run's change was announced
        self.task: asyncio.Task | None = None

    async def lines_after(self, seq: int) -> tuple[list[Point], int]:
        """A log stream's next lines after `seq`, and its seq after them: from the buffer, or from SQL (a page
        at a time) while it is behind the buffer. Nothing before the feed's first log read."""
        if not self.lines.ready:
            return [], seq
        if seq < self.lines.base:
            backlog = await read_log_backlog(self.run_id, seq, self.lines.base)
            return backlog, backlog[-1].id if backlog else self.lines.base
        lines = self.lines.after(seq)
        return lines, lines[-1].id if lines else seq

    def logs_done(self, seq: int) -> bool:
        """Every log line of the ended run is out to a stream at `seq`."""
        return self.final and self.lines.ready and seq >= self.lines.cursor

    def _grace_left(self) -> float:
        """Seconds the run's last log lines may still take: a watched log tail of a run that ended a moment
        ago. Counted from the run's end and from when this feed saw it, whichever gives less (a run that
        ended long ago has none; a worker clock ahead of ours cannot stretch it)."""
        if self.log_watchers == 0 or self._ended_at is None or self._seen_ended is None:
            return 0.0
        return max(0.0, min(self._ended_at - time.time(), self._seen_ended - time.monotonic()) + LOG_GRACE_SECONDS)

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
        self.points.add(read.base, read.points)
        if self.log_watchers:  # else the last log stream left while this read ran: its lines are not kept
            self.lines.add(read.log_base, read.lines)
        self.state = read.state
        self._ended_at = read.ended_at
        if read.state is not None and read.state[0] in TERMINAL and self._seen_ended is None:
            self._seen_ended = time.monotonic()
        self.revoked |= read.checked - read.valid
        # Ended: the run is gone, or a read saw it terminal and found nothing new after it (and, for a
        # watched log tail, no line either, once the grace for its last lines has passed).
        quiet = read.base is None and not read.points and read.log_base is None and not read.lines
        self.final = read.state is None or (read.state[0] in TERMINAL and quiet and not self._grace_left())
        self._news = not quiet

    def _log_cursor_to_read(self) -> int | None:
        if self.log_watchers == 0:
            return _NO_LOGS
        return self.lines.cursor if self.lines.ready else None

    def watch_logs(self, delta: int) -> None:
        """A log tail stream joins (+1) or leaves (-1). The first one wakes the feed for its first lines;
        after the last one, the lines are dropped (they would go stale unread)."""
        self.log_watchers += delta
        if self.log_watchers <= 0:
            self.log_watchers = 0
            self.lines.clear()
        elif not self.lines.ready:
            self.wake()

    async def poll(self) -> None:
        while True:
            # Cleared before the read: an announcement that comes while it runs wakes the next one.
            self._wake.clear()
            try:
                async with db_slot():
                    read = await run_in_threadpool(_read, self.run_id, self.points.cursor if self.points.ready else None,
                                                   set(self.credentials), self._log_cursor_to_read())
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
            wait = self.poll_every  # the safety poll
            if read is not None and read.state is not None and read.state[0] in TERMINAL:
                if self._news or not self._grace_left():
                    continue  # ended: read once more at once, for points committed just before the end
                wait = min(wait, self._grace_left())  # then again when the log's last lines are due
            with suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
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


def join(run_id: int, credential: Credential, poll_every: float, *, logs: bool = False) -> RunFeed:
    """The run's feed, for a stream opened with `credential`; logs=True: a stream of its log tail."""
    start_listening()
    registry = _registry()
    feed = registry.get(run_id)
    if feed is None:
        feed = registry[run_id] = RunFeed(run_id, poll_every)
        feed.task = asyncio.get_running_loop().create_task(feed.poll())
    feed.credentials[credential] += 1
    if logs:
        feed.watch_logs(+1)
    return feed


def leave(feed: RunFeed, credential: Credential, *, logs: bool = False) -> None:
    if logs:
        feed.watch_logs(-1)
    feed.credentials[credential] -= 1
    if feed.credentials[credential] <= 0:
        del feed.credentials[credential]
    if not feed.credentials:  # nobody watches: stop polling
        _forget(feed)
        if feed.task is not None and not feed.task.done():
            feed.task.cancel()


def with_log(feed: RunFeed, credential: Credential) -> RunFeed:
    """The feed a log stream should wait on: this one, or a fresh one when this one ended on a read begun
    before the stream joined (the run's log was never read, and an ended feed reads no more)."""
    if feed.final and not feed.lines.ready:
        leave(feed, credential, logs=True)
        return join(feed.run_id, credential, feed.poll_every, logs=True)
    return feed
