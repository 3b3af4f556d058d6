"""Per-bucket rollups of every metric series, kept exact as points arrive, so a chart of a 100,000-point
series reads a few hundred rows and never scans the points.

A bucket at level k holds the steps [bucket·2^k, (bucket+1)·2^k): how many points the series has there,
and its lowest and its highest point (ties: the earliest step), with their real steps and times. Levels are
every second power of two (LEVELS): a chart that wants buckets of 2^(k+1) steps reads level k and merges
pairs. Each level is computed from the one below it, four buckets to one.

Who changes points changes the rollups in the same transaction: `add` with the points an insert really
stored (a point sent twice is not counted twice; any order is fine, since merging is commutative), and
`forget_after` when a resumed attempt drops the points after its checkpoint. Deleting a run deletes its
rollups (foreign key cascade). `backfill` builds them from the points (the migration, bulk loads).
"""
from collections.abc import Iterable

from sqlalchemy import and_, bindparam, case, delete, insert, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.metrics.models import MetricPoint, MetricRollup

LEVELS = tuple(range(2, 31, 2))  # bucket widths 4, 16, 64 … 2^30 steps (a step is a 32-bit integer)
TOP = LEVELS[-1]  # one or two buckets hold a whole series: its count, minimum and maximum

# A block: [count, min_value, min_step, min_time, max_value, max_step, max_time].
Block = list
Point = tuple[int, float, float]  # (step, value, unix time)
_COLUMNS = ("count", "min_value", "min_step", "min_time", "max_value", "max_step", "max_time")


def merge(into: Block, other: Block) -> Block:
    """`into` now covers both blocks' points. The lower value wins the minimum, the higher the maximum;
    on a tie the earlier step, so the outcome never depends on the order points came in."""
    into[0] += other[0]
    if other[1] < into[1] or (other[1] == into[1] and other[2] < into[2]):
        into[1:4] = other[1:4]
    if other[4] > into[4] or (other[4] == into[4] and other[5] < into[5]):
        into[4:7] = other[4:7]
    return into


def fold(points: Iterable[tuple[str, int, float, float]]) -> dict[int, dict[tuple[str, int], Block]]:
    """Points (name, step, value, time) → level → (name, bucket) → block."""
    first = LEVELS[0]
    current: dict[tuple[str, int], Block] = {}
    for name, step, value, time in points:
        key = (name, step >> first)
        block = current.get(key)
        if block is None:
            current[key] = [1, value, step, time, value, step, time]
        else:
            merge(block, [1, value, step, time, value, step, time])
    out = {first: current}
    for below, level in zip(LEVELS, LEVELS[1:]):
        current = _up(current, level - below)
        out[level] = current
    return out


def _up(blocks: dict[tuple[str, int], Block], shift: int) -> dict[tuple[str, int], Block]:
    """The next level's blocks from this level's: buckets whose numbers agree but for the last `shift` bits."""
    out: dict[tuple[str, int], Block] = {}
    for (name, bucket), block in blocks.items():
        key = (name, bucket >> shift)
        above = out.get(key)
        if above is None:
            out[key] = list(block)
        else:
            merge(above, block)
    return out


def _rows(run_id: int, folded: dict[int, dict[tuple[str, int], Block]]) -> list[dict]:
    return [{"run_id": run_id, "name": name, "level": level, "bucket": bucket, **dict(zip(_COLUMNS, block))}
            for level, blocks in folded.items() for (name, bucket), block in blocks.items()]


def _upsert(dialect: str):
    """Insert a block, or merge it into the stored one (the same rule as `merge`, in SQL)."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(MetricRollup)
    new, old = stmt.excluded, MetricRollup.__table__.c
    lower = or_(new.min_value < old.min_value, and_(new.min_value == old.min_value, new.min_step < old.min_step))
    higher = or_(new.max_value > old.max_value, and_(new.max_value == old.max_value, new.max_step < old.max_step))
    changes = {"count": old.count + new.count}
    for side, wins in (("min", lower), ("max", higher)):
        for part in ("value", "step", "time"):
            column = f"{side}_{part}"
            changes[column] = case((wins, new[column]), else_=old[column])
    return stmt.on_conflict_do_update(index_elements=["run_id", "name", "level", "bucket"], set_=changes)


def add(session: Session, run_id: int, points: list[tuple[str, int, float, float]]) -> None:
    """Count newly stored points (name, step, value, time) into the run's rollups. Only points that were
    really inserted: a point already there is in the rollups already."""
    if points:
        session.execute(_upsert(session.get_bind().dialect.name), _rows(run_id, fold(points)))


def forget_after(session: Session, run_id: int, step: int) -> None:
    """The points after `step` were deleted: drop the buckets that lie after it and compute the one that
    straddles it again at each level, from the points left (lowest level) or from the level below."""
    table = MetricRollup
    below = None
    for level in LEVELS:
        edge = step >> level
        untouched = (step + 1) % (1 << level) == 0  # the edge bucket ends at `step`: all of it stays
        session.execute(delete(table).where(table.run_id == run_id, table.level == level,
                                            table.bucket > edge if untouched else table.bucket >= edge))
        if not untouched:
            if below is None:
                rows = session.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value, MetricPoint.time)
                                       .where(MetricPoint.run_id == run_id, MetricPoint.step >= edge << level,
                                              MetricPoint.step <= step))
                blocks = fold(rows)[level]
            else:
                shift = level - below
                rows = session.execute(select(table.name, table.bucket, *(table.__table__.c[c] for c in _COLUMNS))
                                       .where(table.run_id == run_id, table.level == below,
                                              table.bucket >= edge << shift, table.bucket < (edge + 1) << shift))
                blocks = _up({(r[0], r[1]): list(r[2:]) for r in rows}, shift)
            if blocks:
                session.execute(insert(table), _rows(run_id, {level: blocks}))
        below = level


# PostgreSQL builds the rollups in SQL. Arrays compare element by element, so MIN of [value, step, time]
# is the lowest point with the earliest step on a tie, and MAX of [value, -step, time] the highest one with
# the earliest step: the rule of `merge`.
_PG_FIRST_LEVEL = text("""
    INSERT INTO metric_rollups (run_id, name, level, bucket, count, min_value, min_step, min_time,
                                max_value, max_step, max_time)
    SELECT run_id, name, :level, bucket, n, lo[1], CAST(lo[2] AS INTEGER), lo[3], hi[1], CAST(-hi[2] AS INTEGER), hi[3]
    FROM (SELECT run_id, name, step >> :level AS bucket, COUNT(*) AS n,
                 MIN(ARRAY[value, step, time]) AS lo, MAX(ARRAY[value, -step, time]) AS hi
          FROM metrics WHERE run_id IN :runs GROUP BY run_id, name, step >> :level) AS g""")
_PG_NEXT_LEVEL = text("""
    INSERT INTO metric_rollups (run_id, name, level, bucket, count, min_value, min_step, min_time,
                                max_value, max_step, max_time)
    SELECT run_id, name, :level, bucket, n, lo[1], CAST(lo[2] AS INTEGER), lo[3], hi[1], CAST(-hi[2] AS INTEGER), hi[3]
    FROM (SELECT run_id, name, bucket >> :shift AS bucket, SUM(count) AS n,
                 MIN(ARRAY[min_value, min_step, min_time]) AS lo, MAX(ARRAY[max_value, -max_step, max_time]) AS hi
          FROM metric_rollups WHERE level = :below AND run_id IN :runs
          GROUP BY run_id, name, bucket >> :shift) AS g""")


def backfill(connection: Connection, run_ids: list[int] | None = None) -> None:
    """(Re)build the rollups of these runs (default: every run with points) from their points."""
    if run_ids is None:
        run_ids = list(connection.scalars(select(MetricPoint.run_id).distinct()))
    if not run_ids:
        return
    connection.execute(delete(MetricRollup).where(MetricRollup.run_id.in_(run_ids)))
    if connection.dialect.name == "postgresql":
        runs = bindparam("runs", expanding=True)
        connection.execute(_PG_FIRST_LEVEL.bindparams(runs), {"level": LEVELS[0], "runs": run_ids})
        for below, level in zip(LEVELS, LEVELS[1:]):
            connection.execute(_PG_NEXT_LEVEL.bindparams(runs),
                               {"level": level, "below": below, "shift": level - below, "runs": run_ids})
        return
    for run_id in run_ids:  # one run's points at a time, read in index order
        points = connection.execute(select(MetricPoint.name, MetricPoint.step, MetricPoint.value, MetricPoint.time)
                                    .where(MetricPoint.run_id == run_id).order_by(MetricPoint.name, MetricPoint.step))
        rows = _rows(run_id, fold(points))
        if rows:
            connection.execute(insert(MetricRollup), rows)


# Reading.

def totals(session: Session, run_id: int, names: list[str] | None) -> dict[str, Block]:
    """name → the whole series' block (count, minimum, maximum), for the named series (default: all) that
    have points, by name."""
    table = MetricRollup
    query = select(table.name, *(table.__table__.c[c] for c in _COLUMNS)).where(table.run_id == run_id, table.level == TOP)
    if names is not None:
        query = query.where(table.name.in_(names))
    out: dict[str, Block] = {}
    for name, *block in session.execute(query.order_by(table.name, table.bucket)):
        if name in out:
            merge(out[name], block)
        else:
            out[name] = block
    return out


def blocks(session: Session, run_id: int, name: str, level: int, lo: int, hi: int) -> list[Block]:
    """The series' blocks of 2^level steps from the one holding step lo to the one holding step hi, in step
    order. `level` may be one above a stored level: pairs of that level are merged."""
    stored = level if level in LEVELS else level - 1
    table = MetricRollup
    rows = session.execute(select(table.bucket, *(table.__table__.c[c] for c in _COLUMNS))
                           .where(table.run_id == run_id, table.name == name, table.level == stored,
                                  table.bucket >= lo >> stored, table.bucket <= hi >> stored)
                           .order_by(table.bucket))
    if stored == level:
        return [list(r[1:]) for r in rows]
    out: dict[int, Block] = {}
    for bucket, *block in rows:
        key = bucket >> 1
        if key in out:
            merge(out[key], block)
        else:
            out[key] = block
    return list(out.values())
