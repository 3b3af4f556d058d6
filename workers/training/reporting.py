"""Where the training loop sends metrics and progress, and where it asks whether to stop.

The loop only knows the small `Reporter` interface. `SqlReporter` is the worker's: it buffers
points and writes them with `record_points` at most every `flush_seconds` (and at the end), so
reporting every optimizer step costs a list append. `MemoryReporter` keeps everything in lists
(tests, benchmarks).
"""
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session

from app.db import session_scope
from app.metrics.service import record_points
from app.runs.lifecycle import set_progress

log = logging.getLogger(__name__)


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


class SqlReporter:
    """Buffers points for one run and flushes them, with the progress, to SQL about once a second.

    `stop` is set from outside (the heartbeat thread, on cancel or a lost lease)."""

    def __init__(self, run_id: int, worker: str, stop: threading.Event, flush_seconds: float = 1.0):
        self.run_id, self.worker, self.stop = run_id, worker, stop
        self.flush_seconds = flush_seconds
        self._points: list[tuple[str, int, float, float]] = []
        self._progress: float | None = None
        self._last_flush = time.monotonic()
        # Extra writes that ride on each flush's session, e.g. the run's captured log lines.
        self.on_flush: list[Callable[[Session], None]] = []

    def report(self, name: str, step: int, value: float) -> None:
        self._points.append((name, step, value, time.time()))
        self._maybe_flush()

    def progress(self, fraction: float) -> None:
        self._progress = fraction
        self._maybe_flush()

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def flush(self) -> None:
        points, progress = self._points, self._progress
        with session_scope() as session:
            if points:
                record_points(session, self.run_id, points)
            if progress is not None:
                set_progress(session, self.run_id, self.worker, progress)
            for write in self.on_flush:
                write(session)
        # Reached only when the write succeeded: a failed one keeps the buffer for the next flush.
        self._points, self._progress = [], None
        self._last_flush = time.monotonic()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush < self.flush_seconds:
            return
        try:
            self.flush()
        except Exception:  # a database hiccup must not kill hours of training; the next flush retries
            log.warning("run %s: could not write metrics, will retry", self.run_id, exc_info=True)
            self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
