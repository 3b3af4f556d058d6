"""Where the training loop sends metrics and progress, and where it asks whether to stop.

The loop only knows the small `Reporter` interface. `SqlReporter` is the worker's: it buffers
points and writes them with `record_points` at most every `flush_seconds` (and at the end), so
reporting every optimizer step costs a list append. `MemoryReporter` keeps everything in lists
(tests, benchmarks).

Every SQL write of a worker is fenced by its `Lease` (app/runs/lifecycle.py): once the run was
given away (the worker was paused past its lease and the reaper re-queued it), the buffered points,
the progress and the final result of the stale attempt are dropped, not written. `LeaseKeeper` is
the heartbeat thread; `retry_database` carries the final write through a database outage.
"""
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from app.db import session_scope
from app.metrics.service import record_points
from app.runs.lifecycle import Lease, heartbeat, hold, set_progress

log = logging.getLogger(__name__)
T = TypeVar("T")


class Reporter(Protocol):
    def report(self, name: str, step: int, value: float) -> None:
        """One metric point; step is the optimizer step. Names as in API.md (train/loss, eval/f1, …)."""

    def progress(self, fraction: float) -> None:
        """Share of the run done, 0..1."""

    def should_stop(self) -> bool:
        """Checked every optimizer step: True ends training early (cancel, lost lease)."""


class MemoryReporter:
    def __init__(self, stop_after_steps: int | None = None):
        self.points: list[tuple[str, int, float]] = []
        self.progress_values: list[float] = []
        self._stop_after_steps = stop_after_steps  # should_stop() turns True after this many progress() calls

    def report(self, name: str, step: int, value: float) -> None:
        self.points.append((name, step, value))

    def progress(self, fraction: float) -> None:
        self.progress_values.append(fraction)

    def should_stop(self) -> bool:
        return self._stop_after_steps is not None and len(self.progress_values) >= self._stop_after_steps

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(s, v) for n, s, v in self.points if n == name]


class LeaseKeeper:
    """The heartbeat thread: renews the lease every heartbeat_seconds; a cancel request or a lost
    lease sets `stop` (and a lost lease `lost`)."""

    def __init__(self, lease: Lease, lease_seconds: float, heartbeat_seconds: float):
        self.lease, self.lease_seconds, self.heartbeat_seconds = lease, lease_seconds, heartbeat_seconds
        self.stop, self.lost, self._done = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{lease.run_id}", daemon=True)

    def start(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def close(self) -> None:
        self._done.set()

    def lose(self) -> None:
        """The run belongs to someone else now: stop, and write nothing more."""
        self.lost.set()
        self.stop.set()

    def _beat(self) -> None:
        lease = self.lease
        while not self._done.wait(self.heartbeat_seconds):
            try:
                with session_scope() as session:
                    cancel = heartbeat(session, lease.run_id, lease.worker, self.lease_seconds, attempt=lease.attempt)
            except Exception:  # a database hiccup: the lease has slack, try again next beat
                log.warning("run %s: heartbeat failed", lease.run_id, exc_info=True)
                continue
            if cancel is None:  # the reaper gave the run away: stop, and leave it to its new owner
                self.lose()
                return
            if cancel:
                self.stop.set()


class LeaseLost(Exception):
    """This worker's attempt no longer holds the run; whatever it still has to write is dropped."""


class SqlReporter:
    """Buffers points for one run and flushes them, with the progress, to SQL about once a second.

    Each flush is one transaction that first locks the run for this lease (`hold`), so points of an
    attempt that lost its lease are never written. `stop` is set from outside (the heartbeat
    thread, on cancel or a lost lease) and here when a flush finds the lease gone."""

    def __init__(self, lease: Lease, keeper: LeaseKeeper, flush_seconds: float = 1.0):
        self.lease, self.keeper = lease, keeper
        self.stop = keeper.stop
        self.flush_seconds = flush_seconds
        self._points: list[tuple[str, int, float, float]] = []
        self._progress: float | None = None
        self._last_flush = time.monotonic()
        # Extra writes that ride on each flush's transaction, e.g. the run's captured log lines: called with
        # the session before anything is committed, each returns a callable to run once the flush committed.
        self.on_flush: list[Callable[[Session], Callable[[], None]]] = []

    def report(self, name: str, step: int, value: float) -> None:
        if self.keeper.lost.is_set():  # the loop stops within a step; nothing it reports goes anywhere
            return
        self._points.append((name, step, value, time.time()))
        self._maybe_flush()

    def progress(self, fraction: float) -> None:
        if self.keeper.lost.is_set():
            return
        self._progress = fraction
        self._maybe_flush()

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def flush(self) -> None:
        """Write the buffer under the lease; raises LeaseLost (buffer dropped) when the run was given away."""
        if self.keeper.lost.is_set():
            self._points, self._progress = [], None
            raise LeaseLost()
        points, progress, lease = self._points, self._progress, self.lease
        with session_scope() as session:
            if hold(session, lease) is None:
                self._points, self._progress = [], None
                self.keeper.lose()
                raise LeaseLost()
            # The extra writes go first, inside the held transaction (fenced like the points); each gives
            # back what to do once it is committed.
            committed = [write(session) for write in self.on_flush]
            if points:
                record_points(session, lease.run_id, points)  # commits the held transaction
            if progress is not None:
                set_progress(session, lease.run_id, lease.worker, progress, attempt=lease.attempt)
        # Reached only when the write succeeded: a failed one keeps the buffer for the next flush.
        for done in committed:
            done()
        self._points, self._progress = [], None
        self._last_flush = time.monotonic()

    def check_lease(self) -> None:
        """Raise LeaseLost when this attempt no longer holds the run. A database error proves nothing
        either way and is let pass: every SQL write is fenced on its own."""
        if self.keeper.lost.is_set():
            raise LeaseLost()
        try:
            with session_scope() as session:
                held = hold(session, self.lease)
        except (OperationalError, InterfaceError):
            return
        if held is None:
            self.keeper.lose()
            raise LeaseLost()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush < self.flush_seconds:
            return
        try:
            self.flush()
        except LeaseLost:
            log.warning("run %s: lease lost (attempt %s); dropping its points and stopping",
                        self.lease.run_id, self.lease.attempt)
        except Exception:  # a database hiccup must not kill hours of training; the next flush retries
            log.warning("run %s: could not write metrics, will retry", self.lease.run_id, exc_info=True)
            self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()


def retry_database(write: Callable[[], T], *, until: float, what: str) -> T:
    """Run `write` until it gets through a database outage (connection refused, server restarting,
    SQLite busy), with backoff, until the monotonic time `until`; then the last error propagates.

    Only for fenced writes: retrying one that comes too late is harmless, it finds the lease gone."""
    delay = 0.5
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as e:
            if time.monotonic() + delay > until:
                raise
            log.warning("%s: database unavailable (%s); retrying in %.1f s", what, type(e.orig).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
