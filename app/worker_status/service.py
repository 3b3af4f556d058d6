"""Workers' self-reports (no torch here: the worker measures its device, this only stores it)."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.worker_status.models import Worker

UNCHANGED = object()


def record(session: Session, name: str, *, device: dict, memory_bytes: int | None, run_id=UNCHANGED) -> None:
    """Insert or refresh a worker's row (last_seen = now); run_id: the run it trains now, None when idle."""
    row = session.get(Worker, name)
    now = datetime.now(timezone.utc)
    if row is None:
        row = Worker(name=name, device=device, memory_bytes=memory_bytes, last_seen=now,
                     run_id=None if run_id is UNCHANGED else run_id)
        session.add(row)
    else:
        row.device, row.memory_bytes, row.last_seen = device, memory_bytes, now
        if run_id is not UNCHANGED:
            row.run_id = run_id
    session.commit()


def listed(session: Session) -> list[Worker]:
    """Every worker that ever reported, the most recently seen first."""
    return list(session.scalars(select(Worker).order_by(Worker.last_seen.desc(), Worker.name)))


def recent(session: Session, seconds: float) -> list[Worker]:
    """Workers seen in the last `seconds` (the ones that may take a run submitted now)."""
    since = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    return [w for w in listed(session) if _aware(w.last_seen) >= since]


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
