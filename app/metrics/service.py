"""Metric points: write (idempotent) and read (series, downsampled; live-stream cursors)."""
import math
import time as _time
from collections.abc import Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.metrics import notify, rollups
from app.metrics.models import MetricPoint


def record_points(session: Session, run_id: int, points: Iterable[tuple[str, int, float] | tuple[str, int, float, float]]) -> int:
    """Insert points (name, step, value[, time]); ones already there are ignored, not duplicated."""
    now = _time.time()
    rows = [
        {"run_id": run_id, "name": p[0], "step": int(p[1]), "value": float(p[2]), "time": float(p[3]) if len(p) > 3 else now}
        for p in points
        if math.isfinite(float(p[2]))  # NaN/inf have no place on a chart (and SQLite stores NaN as NULL)
    ]
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = MetricPoint.__table__
    stmt = (insert(table).on_conflict_do_nothing(index_elements=["run_id", "name", "step"])
            .returning(table.c.name, table.c.step, table.c.value, table.c.time))
    # RETURNING gives the rows really inserted (rowcount is -1 on psycopg): only they join the rollups,
    # in the same transaction, so a chart never sees points its rollups do not count. Executed with a list
    # of rows, SQLAlchemy sends them in batches of multi-row INSERTs compiled once.
    inserted = [tuple(r) for r in session.execute(stmt, rows)]
    rollups.add(session, run_id, inserted)
    if inserted:
        notify.changed(session, run_id)  # sent once the commit below is through
    session.commit()
    return len(inserted)


def delete_after(session: Session, run_id: int, step: int) -> None:
    """Delete the run's points after `step` (a resumed attempt computes them again) and mend the rollups;
    the caller commits."""
    session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id, MetricPoint.step > step))
    rollups.forget_after(session, run_id, step)


def points_after(session: Session, run_id: int, cursor: int, limit: int = 5000) -> list[MetricPoint]:
    """Points with id > cursor, oldest first: what a live stream has not sent yet."""
    return list(session.scalars(
        select(MetricPoint).where(MetricPoint.run_id == run_id, MetricPoint.id > cursor).order_by(MetricPoint.id).limit(limit)
    ))


def latest_cursor(session: Session, run_id: int) -> int:
    return session.scalar(select(func.max(MetricPoint.id)).where(MetricPoint.run_id == run_id)) or 0


def series(session: Session, run_id: int, names: list[str] | None) -> dict[str, list[tuple[int, float]]]:
    query = select(MetricPoint.name, MetricPoint.step, MetricPoint.value).where(MetricPoint.run_id == run_id)
    if names:
        query = query.where(MetricPoint.name.in_(names))
    out: dict[str, list[tuple[int, float]]] = {}
    for name, step, value in session.execute(query.order_by(MetricPoint.name, MetricPoint.step)):
        out.setdefault(name, []).append((step, value))
    return out


def summaries(session: Session, run_ids: list[int], names: list[str]) -> dict[int, dict[str, dict[str, float]]]:
    """run id → name → {min, max, last (the value at the highest step)} for the named series of those runs."""
    if not run_ids or not names:
        return {}
    where = (MetricPoint.run_id.in_(run_ids), MetricPoint.name.in_(names))
    grouped = (select(MetricPoint.run_id, MetricPoint.name, func.min(MetricPoint.value).label("lo"),
                      func.max(MetricPoint.value).label("hi"), func.max(MetricPoint.step).label("last_step"))
               .where(*where).group_by(MetricPoint.run_id, MetricPoint.name).subquery())
    query = (select(grouped.c.run_id, grouped.c.name, grouped.c.lo, grouped.c.hi, MetricPoint.value)
             .join(MetricPoint, (MetricPoint.run_id == grouped.c.run_id) & (MetricPoint.name == grouped.c.name)
                   & (MetricPoint.step == grouped.c.last_step)))
    out: dict[int, dict[str, dict[str, float]]] = {}
    for run_id, name, lo, hi, last in session.execute(query):
        out.setdefault(run_id, {})[name] = {"min": lo, "max": hi, "last": last}
    return out
