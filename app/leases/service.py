"""Job leases: every periodic job the server runs happens on one replica at a time.

A replica takes or renews a job's lease with one guarded statement: an UPDATE that matches only a row that
is its own or has expired, or an INSERT that does nothing when the row exists. PostgreSQL re-checks the
UPDATE's condition on the row a concurrent UPDATE just wrote, and SQLite runs one writer at a time, so two
replicas racing for an expired lease never both get it. Lease times come from each replica's clock: hosts
must keep their clocks in step (NTP) to well within a lease.

The lease only keeps replicas from doing the same work twice; what each job writes is guarded row by row
as well (runs, webhook deliveries, search trials), so a replica that stalls past its lease and wakes up
beside the new holder does no harm.
"""
import logging
import os
import secrets
import socket
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db import utcnow
from app.leases.models import JobLease

log = logging.getLogger("peftlab")
_TAG = secrets.token_hex(4)


def this_replica() -> str:
    """A name for this server process, unique across hosts and restarts (host:pid:random)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TAG}"


def _insert(session: Session):
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(JobLease)


def take(session: Session, *, name: str, holder: str, seconds: float) -> datetime | None:
    """Take or renew the lease on job `name` for `seconds`; its new expiry when `holder` now holds it,
    None when another replica does. Commits."""
    now = utcnow()
    expires = now + timedelta(seconds=seconds)
    current = session.execute(select(JobLease.holder, JobLease.expires_at).where(JobLease.name == name)).first()
    session.rollback()  # end the read before writing: SQLite upgrades no stale snapshot to a writer
    if current is not None and current.holder != holder and current.expires_at >= now:
        return None  # held elsewhere: no write at all, so idle replicas cost the database a read per round
    # RETURNING tells whether the row is now ours (an INSERT's rowcount is not reported on PostgreSQL).
    if current is None:
        stmt = (_insert(session).values(name=name, holder=holder, expires_at=expires)
                .on_conflict_do_nothing(index_elements=["name"]))
    else:
        stmt = (update(JobLease).where(JobLease.name == name, (JobLease.holder == holder) | (JobLease.expires_at < now))
                .values(holder=holder, expires_at=expires))
    ours = session.execute(stmt.returning(JobLease.name)).first() is not None
    session.commit()
    return expires if ours else None


def release(session: Session, *, name: str, holder: str) -> bool:
    """Give the lease up (a replica shutting down), so another takes the job at its next round."""
    res = session.execute(delete(JobLease).where(JobLease.name == name, JobLease.holder == holder))
    session.commit()
    return res.rowcount == 1


def holders(session: Session) -> dict[str, tuple[str, datetime]]:
    """{job: (holder, expires_at)} for every job lease (health pages, tests)."""
    return {row.name: (row.holder, row.expires_at) for row in session.scalars(select(JobLease))}


class Lease:
    """This replica's view of one job's lease. `held()` is asked before each round: the holder renews
    only once half the lease has passed (one write per half lease, not per round); any other replica
    reads the row and takes it once it has expired."""

    def __init__(self, name: str, seconds: float, holder: str | None = None):
        self.name, self.seconds, self.holder = name, seconds, holder or this_replica()
        self.until: datetime | None = None

    def held(self, session: Session) -> bool:
        now = utcnow()
        if self.until is not None and now < self.until - timedelta(seconds=self.seconds / 2):
            return True
        had = self.until is not None and now < self.until
        self.until = take(session, name=self.name, holder=self.holder, seconds=self.seconds)
        if self.until is not None and not had:
            log.info("job %s: this replica (%s) runs it now", self.name, self.holder)
        elif self.until is None and had:
            log.warning("job %s: this replica (%s) lost its lease to another", self.name, self.holder)
        return self.until is not None

    def release(self, session: Session) -> None:
        if self.until is not None:
            release(session, name=self.name, holder=self.holder)
            self.until = None
