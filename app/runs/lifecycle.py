"""The run state machine: queued → running → succeeded | failed | cancelled.

Every transition is one guarded UPDATE (WHERE status = … AND worker = …), so two workers,
a reaper and a cancel can race without corrupting a run. Used by workers and the server. Each change
a live stream shows (status, progress: the state_version bumps) is announced after its commit
(`notify.changed`), so the streams of that run show it at once.

A worker's writes are fenced by its `Lease` (run, worker, attempt number): a worker that was
paused past its lease (the reaper re-queued the run, another attempt may hold it now) can no
longer change the run, its points or its artifacts, whatever it still has buffered.
"""
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.metrics import notify
from app.metrics import service as metrics_service
from app.runs.models import Run


def _lease(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Lease:
    """What a worker holds after a claim: the run, and which attempt at it is this worker's."""

    run_id: int
    worker: str
    attempt: int


def _held(run_id: int, worker: str, attempt: int | None):
    """The WHERE clause of every write by a worker: the run is still running, by this worker and attempt."""
    clause = and_(Run.id == run_id, Run.status == "running", Run.worker == worker)
    return clause if attempt is None else and_(clause, Run.attempts == attempt)


def take(session: Session, run_id: int, worker: str, lease_seconds: float) -> Lease | None:
    """queued → running for this worker: its lease, or None when the run is not queued (taken, cancelled, gone)."""
    now = utcnow()
    row = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued")
        .values(status="running", worker=worker, lease_expires_at=_lease(lease_seconds), started_at=now,
                attempts=Run.attempts + 1, progress=0.0, error=None, traceback=None,
                state_version=Run.state_version + 1)
        .returning(Run.attempts)
    ).first()
    if row is not None:
        notify.changed(session, run_id)
    session.commit()
    return None if row is None else Lease(run_id, worker, row[0])


def claim(session: Session, run_id: int, worker: str, lease_seconds: float) -> bool:
    """queued → running for this worker. False when the run is not queued (taken, cancelled, gone)."""
    return take(session, run_id, worker, lease_seconds) is not None


# The order queued runs start in: lower priority first, NULL priority counts as the run's id.
QUEUE_ORDER = (func.coalesce(Run.priority, Run.id), Run.id)


def claim_next(session: Session, worker: str, lease_seconds: float, *, hint: int | None = None) -> int | None:
    """Claim the first run in queue order for this worker; its id, or None when nothing is queued."""
    lease = take_next(session, worker, lease_seconds, hint=hint)
    return None if lease is None else lease.run_id


def take_next(session: Session, worker: str, lease_seconds: float, *, hint: int | None = None,
              fits: Callable[[Run], bool] | None = None) -> Lease | None:
    """Claim the first run in queue order for this worker; its lease, or None when nothing is queued
    (or, with `fits`, nothing queued fits this worker).

    Every queued run has one broker message, and whichever message a worker gets it takes the run at
    the head of the queue, so reordering changes what starts next while the counts still match.
    Only runs already sent to the broker (enqueued_at set) compete, plus `hint`, the message's own
    run (its enqueued_at may not be committed yet): a queued row nobody sent must not take the turn
    of a run whose message this is, or that run would wait for the reaper.
    `fits(run)`: False for a run this worker's device cannot hold; the worker takes the first run
    in queue order that fits it, and the ones before it wait for a larger worker.
    """
    queued = (select(Run).where(Run.status == "queued", or_(Run.enqueued_at.is_not(None), Run.id == hint))
              .order_by(*QUEUE_ORDER))
    skipped: set[int] = set()
    for _ in range(1000):  # each lost race means another worker took a run: the queue gets shorter
        query = queued.where(Run.id.not_in(skipped)) if skipped else queued
        run_id, window = None, list(session.scalars(query.limit(FIT_WINDOW if fits else 1)))
        for run in window:
            if fits is None or fits(run):
                run_id = run.id
                break
            skipped.add(run.id)
        session.commit()  # no read snapshot held into the UPDATE (SQLite WAL would refuse the upgrade)
        if run_id is None:
            if fits is not None and len(window) == FIT_WINDOW:
                continue  # a whole window did not fit: look further down the queue
            return None
        if (lease := take(session, run_id, worker, lease_seconds)) is not None:
            return lease
    return None


# How many queued runs a worker reads at a time when it looks for one that fits its device.
FIT_WINDOW = 50


def heartbeat(session: Session, run_id: int, worker: str, lease_seconds: float, *,
              attempt: int | None = None) -> bool | None:
    """Renew the lease. Returns cancel_requested, or None when this worker no longer holds the run."""
    res = session.execute(
        update(Run)
        .where(_held(run_id, worker, attempt))
        .values(lease_expires_at=_lease(lease_seconds))
        .returning(Run.cancel_requested)
    )
    row = res.first()
    session.commit()
    return None if row is None else bool(row[0])


def set_progress(session: Session, run_id: int, worker: str, progress: float, *, attempt: int | None = None) -> bool:
    res = session.execute(
        update(Run)
        .where(_held(run_id, worker, attempt))
        .values(progress=max(0.0, min(1.0, progress)), state_version=Run.state_version + 1)
    )
    if res.rowcount == 1:
        notify.changed(session, run_id)
    session.commit()
    return res.rowcount == 1


def finish(session: Session, run_id: int, worker: str, status: str, *, summary: dict | None = None,
           error: str | None = None, traceback: str | None = None, attempt: int | None = None) -> bool:
    """running → succeeded | failed | cancelled, only by the worker (and attempt) that holds the run."""
    assert status in ("succeeded", "failed", "cancelled")
    values = dict(status=status, finished_at=utcnow(), lease_expires_at=None, error=error,
                  traceback=traceback, state_version=Run.state_version + 1)
    if status == "succeeded":
        values["progress"] = 1.0
    if summary is not None:
        values["summary"] = summary
    res = session.execute(update(Run).where(_held(run_id, worker, attempt)).values(**values))
    if res.rowcount == 1:
        notify.changed(session, run_id)
    session.commit()
    return res.rowcount == 1


def hold(session: Session, lease: Lease) -> bool | None:
    """Lock the run's row for the rest of this transaction if `lease` still holds it.

    Returns cancel_requested, or None when the lease is lost (nothing may be written then). Writes
    to other tables (points, artifacts) go in the same transaction after it: the reaper's UPDATE
    of the row waits for that commit (or, having gone first, makes this return None), so a stale
    worker's write can never land after the run was given away.
    """
    row = session.execute(
        update(Run).where(_held(lease.run_id, lease.worker, lease.attempt))
        .values(worker=Run.worker)  # a no-op write: it takes the row lock (the database lock on SQLite)
        .returning(Run.cancel_requested)
    ).first()
    if row is None:
        session.rollback()
        return None
    return bool(row[0])


def save_result(session: Session, lease: Lease, summary: dict, record_outputs: Callable[[Session], None]) -> str | None:
    """The final write of a run that trained to the end, in one transaction.

    Returns "succeeded" (outputs recorded, summary kept), "cancelled" (a cancel came in first: it
    wins, nothing is recorded) or None (the lease is lost). After the commit a cancel answers 409,
    so a user never hears "cancel requested" about a run that then succeeds.
    """
    cancel = hold(session, lease)
    if cancel is None:
        return None
    if cancel:
        finish(session, lease.run_id, lease.worker, "cancelled", attempt=lease.attempt)
        return "cancelled"
    record_outputs(session)  # e.g. artifacts rows, written without committing
    finish(session, lease.run_id, lease.worker, "succeeded", summary=summary, attempt=lease.attempt)
    return "succeeded"


def request_cancel(session: Session, run_id: int) -> str | None:
    """A queued run is cancelled at once; a running one is flagged and its worker stops it.

    Returns the status after the request, or None if the run had already ended.
    """
    res = session.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == "queued")
        .values(status="cancelled", finished_at=utcnow(), cancel_requested=True,
                state_version=Run.state_version + 1)
    )
    if res.rowcount == 1:
        notify.changed(session, run_id)
        session.commit()
        return "cancelled"
    res = session.execute(
        update(Run).where(Run.id == run_id, Run.status == "running")
        .values(cancel_requested=True, state_version=Run.state_version + 1)
    )
    if res.rowcount == 1:
        notify.changed(session, run_id)
    session.commit()
    return "running" if res.rowcount == 1 else None


def mark_enqueued(session: Session, run_id: int) -> None:
    session.execute(update(Run).where(Run.id == run_id).values(enqueued_at=utcnow()))
    session.commit()


def recover_expired(session: Session, max_attempts: int) -> list[int]:
    """Runs whose worker stopped heartbeating: back to queued (to be re-sent), or failed after max_attempts.

    Returns the ids put back in the queue.
    """
    now = utcnow()
    expired = and_(Run.status == "running", Run.lease_expires_at < now)
    ended = session.execute(  # a cancel was asked for: there is nothing to retry
        update(Run).where(expired, Run.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=now, lease_expires_at=None, state_version=Run.state_version + 1)
        .returning(Run.id)
    ).scalars().all()
    ended += session.execute(
        update(Run).where(expired, Run.attempts >= max_attempts)
        .values(status="failed", finished_at=now, lease_expires_at=None, state_version=Run.state_version + 1,
                error=f"the worker stopped responding {max_attempts} times; giving up")
        .returning(Run.id)
    ).scalars().all()
    requeued = session.execute(
        update(Run).where(expired, Run.attempts < max_attempts)
        .values(status="queued", worker=None, lease_expires_at=None, enqueued_at=None, progress=0.0,
                state_version=Run.state_version + 1)
        .returning(Run.id)
    ).scalars().all()
    # The dead attempt's points stay: the retry resumes from its last checkpoint and drops only the
    # points after it when it starts (start_attempt), so the curve keeps its original times.
    for run_id in [*ended, *requeued]:
        notify.changed(session, run_id)
    session.commit()
    return list(requeued)


def start_attempt(session: Session, lease: Lease, *, from_step: int) -> bool:
    """A new attempt continues from its checkpoint at `from_step` (0: from scratch): the points up
    to it stay with their original times, the ones after it go (the attempt computes them again).
    False when the lease is lost (nothing is changed then)."""
    if hold(session, lease) is None:
        return False
    metrics_service.delete_after(session, lease.run_id, from_step)
    if from_step > 0:
        session.execute(update(Run).where(_held(lease.run_id, lease.worker, lease.attempt))
                        .values(summary={"resumed_from": {"step": from_step, "attempt": lease.attempt}},
                                state_version=Run.state_version + 1))
        notify.changed(session, lease.run_id)
    session.commit()
    return True


def stale_queued(session: Session, older_than: timedelta) -> list[int]:
    """Queued runs never sent, or sent long ago and still not picked up (a lost broker message)."""
    cutoff = utcnow() - older_than
    return list(session.scalars(
        Run.__table__.select().with_only_columns(Run.id).where(
            Run.status == "queued", or_(Run.enqueued_at.is_(None), Run.enqueued_at < cutoff))
    ).all())
