"""The order queued runs start in, and moving a run within it.

There is one queue, shared by every project (workers serve them all). Positions count from 1 (the
run a free worker takes next). Moving a run renumbers the queued runs' priorities 1..N in the new
order; runs queued later keep a NULL priority, which sorts as their id, i.e. after all of them
(an id is always larger than the number of runs queued before it).
"""
from typing import Literal

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from app.runs.lifecycle import QUEUE_ORDER
from app.runs.models import Run

Position = Literal["top", "bottom", "up", "down"]


def queued_ids(session: Session) -> list[int]:
    """Every queued run's id, in the order they will start."""
    return list(session.scalars(select(Run.id).where(Run.status == "queued").order_by(*QUEUE_ORDER)))


def positions(session: Session) -> dict[int, int]:
    """run id → 1-based place in the queue, for every queued run."""
    return {run_id: i for i, run_id in enumerate(queued_ids(session), start=1)}


def move(session: Session, run_id: int, position: Position, visible: set[int] | None = None) -> int | None:
    """Move a queued run to the top or bottom, or one place up or down. Returns its new position,
    or None when the run is not queued (it started, ended or is gone).

    `visible` (project ids; None = all, for admins) confines the move to those projects' runs: they
    trade places among the slots they already hold, so nobody jumps ahead of other users' runs."""
    order = queued_ids(session)
    if run_id not in order:
        return None
    if visible is None:
        slots = list(range(len(order)))
    else:
        mine = set(session.scalars(select(Run.id).where(Run.id.in_(order), Run.project_id.in_(visible))))
        slots = [n for n, rid in enumerate(order) if rid in mine]
    group = [order[n] for n in slots]
    i = group.index(run_id)
    group.pop(i)
    target = {"top": 0, "bottom": len(group), "up": max(0, i - 1), "down": min(len(group), i + 1)}[position]
    group.insert(target, run_id)
    for n, rid in zip(slots, group, strict=True):
        order[n] = rid
    rank = {rid: n for n, rid in enumerate(order, start=1)}
    # One statement; runs that started meanwhile are left alone (their place no longer matters).
    session.execute(update(Run).where(Run.id.in_(order), Run.status == "queued")
                    .values(priority=case(rank, value=Run.id)))
    session.commit()
    return order.index(run_id) + 1
