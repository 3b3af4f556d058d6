"""A run's captured worker log: append (idempotent, bounded) and read after a cursor."""
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.logs.models import RunLogLine
from app.metrics import notify

# Bounds that keep a chatty run from filling the database: lines past MAX_LINES are dropped (the
# last kept line says so), and each line is cut at MAX_LINE_CHARS.
MAX_LINES = 5000
MAX_LINE_CHARS = 2000
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def clip(message: str) -> str:
    if len(message) <= MAX_LINE_CHARS:
        return message
    return message[: MAX_LINE_CHARS - 1] + "…"


def append(session: Session, run_id: int, lines: Sequence[tuple[int, float, str, str]], *, commit: bool = True) -> int:
    """Insert (seq, time, level, message) lines; ones already stored are ignored. Returns how many were new.
    commit=False leaves the transaction open (a worker's flush commits it with its points)."""
    rows = [{"run_id": run_id, "seq": int(seq), "time": float(t), "level": level[:16], "message": clip(message)}
            for seq, t, level, message in lines if 1 <= seq <= MAX_LINES]
    if not rows:
        return 0
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(RunLogLine).values(rows).on_conflict_do_nothing(index_elements=["run_id", "seq"])
    inserted = len(session.execute(stmt.returning(RunLogLine.seq)).all())
    if inserted:
        notify.changed(session, run_id)  # wakes the servers' feeds of the run's log tail once committed
    if commit:
        session.commit()
    return inserted


def last_seq(session: Session, run_id: int) -> int:
    return session.scalar(select(func.max(RunLogLine.seq)).where(RunLogLine.run_id == run_id)) or 0


def lines_after(session: Session, run_id: int, after: int, limit: int) -> list[RunLogLine]:
    """Lines with seq > after, oldest first."""
    return list(session.scalars(select(RunLogLine).where(RunLogLine.run_id == run_id, RunLogLine.seq > after)
                                .order_by(RunLogLine.seq).limit(limit)))
