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


# Workers seen within this window count as the ones that could take a run submitted now.
RECENT = timedelta(hours=1)


def recent(session: Session) -> list[Worker]:
    """The workers seen in the last RECENT."""
    since = datetime.now(timezone.utc) - RECENT
    return [w for w in listed(session) if _aware(w.last_seen) >= since]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # SQLite returns naive UTC


def gpus_problem(session: Session, gpus: int) -> str | None:
    """Why no recent worker can take a run on `gpus` GPUs, or None. Only workers that report how many
    processes they can run a run as (device.processes) decide; with none of those seen recently,
    nothing is refused (a larger worker may start later)."""
    if gpus <= 1:
        return None
    reporting = [w for w in recent(session) if isinstance((w.device or {}).get("processes"), int)]
    if not reporting or any(w.device["processes"] >= gpus for w in reporting):
        return None
    most = max(w.device["processes"] for w in reporting)
    seen = ", ".join(f"{w.name} ({w.device.get('kind')}: {w.device['processes']})" for w in reporting[:5])
    return (f"{gpus} GPUs is more than any worker seen in the last hour has (at most {most}: {seen}); ask for "
            f"{most} or fewer, or start a worker that owns {gpus} (`peftlab worker --gpus 0,1,…`)")


def quantization_problem(session: Session, kind: str) -> str | None:
    """Why no recent worker can run training.quantization `kind`, or None. Only workers that report what
    they can quantise (device.quantization) decide; with none of those seen recently, nothing is refused
    (a worker may start later, and it refuses the run itself if it cannot)."""
    reporting = [w for w in recent(session) if isinstance((w.device or {}).get("quantization"), list)]
    if not reporting or any(kind in w.device["quantization"] for w in reporting):
        return None
    seen = ", ".join(f"{w.name} ({w.device.get('kind')}: {', '.join(w.device['quantization']) or 'none'})"
                     for w in reporting[:5])
    return (f"no worker seen in the last hour can load a {kind} base (bitsandbytes missing or without a backend for "
            f"its device): {seen}. Install bitsandbytes on a worker or leave training.quantization empty")
