"""Workers' self-reports (no torch here: the worker measures its device, this only stores it)."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.worker_status.models import Worker

UNCHANGED = object()


def record(session: Session, name: str, *, device: dict, memory_bytes: int | None, run_id=UNCHANGED,
           refused: tuple[int, datetime | None] = (0, None)) -> None:
    """Insert or refresh a worker's row (last_seen = now); run_id: the run it trains now, None when idle;
    refused: (how many task messages the process refused so far, when the last one was): totals, so a
    repeated report writes the same."""
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
    row.refused_messages, row.last_refused_at = refused
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


# A worker reports about every 30 seconds; silent for this long, it has stopped (the Workers page agrees).
LIVE = timedelta(minutes=3)
KEY_FIX = "set the same PEFTLAB_SECRET_KEY on every server and worker"


def refusal_window(requeue_after_seconds: float) -> timedelta:
    """How long a refusal stays news. While a run waits, the reaper sends its message again every
    requeue_after_seconds, and a worker with another key refuses it again: 5 minutes longer than that (and
    at least 15 minutes), so the warning holds while runs wait and goes once they stop coming."""
    return timedelta(seconds=max(600.0, requeue_after_seconds) + 300)


def refusal_warning(worker: Worker, *, window: timedelta, now: datetime | None = None) -> str | None:
    """What is wrong when a live worker refused task messages within `window` (not signed with its
    PEFTLAB_SECRET_KEY: the server or another host has another key), in words, with the fix; else None. A
    stopped worker says nothing: a worker restarted with the right key is a new process with a new row."""
    now = now or datetime.now(timezone.utc)
    count, last = worker.refused_messages or 0, worker.last_refused_at
    if not count or last is None or now - _aware(worker.last_seen) > LIVE or now - _aware(last) > window:
        return None
    messages = "task message that was" if count == 1 else "task messages that were"
    return f"refused {count} {messages} not signed with its PEFTLAB_SECRET_KEY — {KEY_FIX}"


def key_refusals(session: Session, *, requeue_after_seconds: float) -> list[tuple[str, str]]:
    """(worker name, warning) for every live worker that refused messages recently (refusal_window)."""
    window = refusal_window(requeue_after_seconds)
    found = session.scalars(select(Worker).where(Worker.refused_messages > 0)
                            .order_by(Worker.last_seen.desc(), Worker.name))
    return [(w.name, text) for w in found if (text := refusal_warning(w, window=window))]


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
