"""Capture a run's worker log for its live tail on the run page (table run_logs).

While a run trains, a handler on the root logger (and on transformers' logger, which does not
propagate) keeps this process's log records at the worker's level (INFO by default) in a buffer.
`write(session)` stores what is buffered; the worker's `SqlReporter` calls it on every metric
flush, inside the transaction its lease fences, so the log costs no writes of its own and a stale
attempt's lines are dropped like its points. `stop()` stores the rest when the run ends.
Bounded: at most `MAX_LINES` lines per run (the last one says the rest was dropped), each cut at
`MAX_LINE_CHARS`.
"""
import logging
import os
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from app.db import session_scope
from app.logs.service import MAX_LINES, append, clip, last_seq

log = logging.getLogger(__name__)

# Libraries whose loggers do not propagate to the root logger, but whose warnings a user wants to see
# (e.g. "Some weights of BertForSequenceClassification were not initialized").
NON_PROPAGATING = ("transformers",)
FORMAT = "%(name)s: %(message)s"


class RunLogCapture(logging.Handler):
    def __init__(self, run_id: int):
        super().__init__(level=logging.INFO)
        self.run_id = run_id
        self.setFormatter(logging.Formatter(FORMAT))
        self._pending: list[tuple[int, float, str, str]] = []
        self._buffer_lock = threading.Lock()
        self._next_seq = 1
        self._loggers: list[logging.Logger] = []
        self._pid = os.getpid()

    def start(self) -> "RunLogCapture":
        """Continue after the lines a previous attempt of this run stored, and start listening."""
        try:
            with session_scope() as session:
                self._next_seq = last_seq(session, self.run_id) + 1
        except Exception:  # no log tail is better than no training
            log.warning("run %s: cannot read its stored log lines; not capturing its log", self.run_id, exc_info=True)
            return self
        self._loggers = [logging.getLogger()] + [logging.getLogger(n) for n in NON_PROPAGATING
                                                 if not logging.getLogger(n).propagate]
        for logger in self._loggers:
            logger.addHandler(self)
        return self

    def emit(self, record: logging.LogRecord) -> None:
        if record.process != self._pid:
            return  # a forked child's record (data loader workers) reached us through an inherited handler
        try:
            message = clip(self.format(record))
        except Exception:  # noqa: BLE001 — a bad format string must not break the caller
            self.handleError(record)
            return
        with self._buffer_lock:
            if self._next_seq > MAX_LINES:
                return
            if self._next_seq == MAX_LINES:
                record_level, message = "WARNING", f"log capped at {MAX_LINES} lines; later lines are not kept"
            else:
                record_level = record.levelname
            self._pending.append((self._next_seq, record.created, record_level, message))
            self._next_seq += 1

    def write(self, session: Session) -> Callable[[], None]:
        """Add the buffered lines to the session's transaction (not committed here); returns what drops
        them from the buffer once that transaction is committed. Uncommitted, they are sent again."""
        with self._buffer_lock:
            lines = list(self._pending)
        if lines:
            append(session, self.run_id, lines, commit=False)

        def committed() -> None:
            with self._buffer_lock:
                del self._pending[: len(lines)]

        return committed

    def stop(self, store_rest: bool = True) -> None:
        """Stop listening and store what is left (unless the run was given away: store_rest=False).
        Safe to call more than once."""
        for logger in self._loggers:
            logger.removeHandler(self)
        self._loggers = []
        if not store_rest:
            with self._buffer_lock:
                self._pending.clear()
            return
        try:
            with session_scope() as session:
                committed = self.write(session)
            committed()
        except Exception:  # noqa: BLE001 — losing the tail's last lines must not fail the run
            log.warning("run %s: could not store its last log lines", self.run_id, exc_info=True)
