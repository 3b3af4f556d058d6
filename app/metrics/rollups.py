"""Per-bucket rollups of every metric series, kept exact as points arrive, so a chart of a 100,000-point
series reads a few hundred rows and never scans the points.

A bucket at level k holds the steps [bucket·2^k, (bucket+1)·2^k): how many points the series has there,
its lowest and its highest point (ties: the earliest step) and its first and last point, with their real
steps, values and times. Levels are
every second power of two (LEVELS): a chart that wants buckets of 2^(k+1) steps reads level k and merges
pairs. Each level is computed from the one below it, four buckets to one.

Who changes points changes the rollups in the same transaction: `add` with the points an insert really
stored (a point sent twice is not counted twice; any order is fine, since merging is commutative), and
`forget_after` when a resumed attempt drops the points after its checkpoint. Deleting a run deletes its
rollups (foreign key cascade). `backfill` builds them from the points (the migration, bulk loads).
"""
from collections.abc import Iterable
from contextlib import contextmanager

from sqlalchemy import and_, bindparam, case, delete, insert, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.metrics.models import MetricPoint, MetricRollup

LEVELS = tuple(range(2, 31, 2))  # bucket widths 4, 16, 64 … 2^30 steps (a step is a 32-bit integer)
TOP = LEVELS[-1]  # one or two buckets hold a whole series: its count, minimum and maximum

# A block: [count, then (value, step, time) of its lowest, highest, first and last point].
Block = list
Point = tuple[int, float, float]  # (step, value, unix time)
_COLUMNS = ("count", "min_value", "min_step", "min_time", "max_value", "max_step", "max_time",
            "first_value", "first_step", "first_time", "last_value", "last_step", "last_time")


def merge(into: Block, other: Block) -> Block:
    """`into` now covers both blocks' points. The lower value wins the minimum, the higher the maximum;
    on a tie the earlier step, so the outcome never depends on the order points came in."""
    into[0] += other[0]
    if other[1] < into[1] or (other[1] == into[1] and other[2] < into[2]):
        into[1:4] = other[1:4]
    if other[4] > into[4] or (other[4] == into[4] and other[5] < into[5]):
        into[4:7] = other[4:7]
    if other[8] < into[8]:
        into[7:10] = other[7:10]
    if other[11] > into[11]:
        into[10:13] = other[10:13]
    return into


def fold(points: Iterable[tuple[str, int, float, float]]) -> dict[int, dict[tuple[str, int], Block]]:
    """Points (name, step, value, time) → level → (name, bucket) → block."""
    first = LEVELS[0]
    current: dict[tuple[str, int], Block] = {}
    for name, step, value, time in points:  # the hot loop of a backfill: merge() written out
        key = (name, step >> first)
        b = current.get(key)
        if b is None:
            current[key] = [1, value, step, time, value, step, time, value, step, time, value, step, time]
            continue
        b[0] += 1
        if value < b[1] or (value == b[1] and step < b[2]):
            b[1], b[2], b[3] = value, step, time
        if value > b[4] or (value == b[4] and step < b[5]):
            b[4], b[5], b[6] = value, step, time
        if step < b[8]:
            b[7], b[8], b[9] = value, step, time
        if step > b[11]:
            b[10], b[11], b[12] = value, step, time
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
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(MetricRollup.__table__)
    new, old = stmt.excluded, MetricRollup.__table__.c
    wins = {"min": or_(new.min_value < old.min_value, and_(new.min_value == old.min_value, new.min_step < old.min_step)),
            "max": or_(new.max_value > old.max_value, and_(new.max_value == old.max_value, new.max_step < old.max_step)),
            "first": new.first_step < old.first_step, "last": new.last_step > old.last_step}
    changes = {"count": old.count + new.count}
    for side, new_wins in wins.items():
        for part in ("value", "step", "time"):
            column = f"{side}_{part}"
            changes[column] = case((new_wins, new[column]), else_=old[column])
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
                session.execute(insert(MetricRollup.__table__), _rows(run_id, {level: blocks}))
        below = level


# PostgreSQL builds the rollups in SQL. Arrays compare element by element, so MIN of [value, step, time]
# is the lowest point with the earliest step on a tie, MAX of [value, -step, time] the highest one with
# the earliest step (the rule of `merge`), and MIN/MAX of [step, value, time] the first and last point.
_PG_INSERT = """
    INSERT INTO metric_rollups (run_id, name, level, bucket, count, min_value, min_step, min_time,
                                max_value, max_step, max_time, first_value, first_step, first_time,
                                last_value, last_step, last_time)
    SELECT run_id, name, :level, bucket, n, lo[1], CAST(lo[2] AS INTEGER), lo[3], hi[1], CAST(-hi[2] AS INTEGER), hi[3],
           fst[2], CAST(fst[1] AS INTEGER), fst[3], lst[2], CAST(lst[1] AS INTEGER), lst[3]
    FROM ({source}) AS g"""
_PG_FIRST_LEVEL = text(_PG_INSERT.format(source="""
    SELECT run_id, name, step >> :level AS bucket, COUNT(*) AS n,
           MIN(ARRAY[value, step, time]) AS lo, MAX(ARRAY[value, -step, time]) AS hi,
           MIN(ARRAY[step, value, time]) AS fst, MAX(ARRAY[step, value, time]) AS lst
    FROM metrics WHERE run_id IN :runs GROUP BY run_id, name, step >> :level"""))
_PG_NEXT_LEVEL = text(_PG_INSERT.format(source="""
    SELECT run_id, name, bucket >> :shift AS bucket, SUM(count) AS n,
           MIN(ARRAY[min_value, min_step, min_time]) AS lo, MAX(ARRAY[max_value, -max_step, max_time]) AS hi,
           MIN(ARRAY[first_step, first_value, first_time]) AS fst, MAX(ARRAY[last_step, last_value, last_time]) AS lst
    FROM metric_rollups WHERE level = :below AND run_id IN :runs GROUP BY run_id, name, bucket >> :shift"""))
_SQLITE_POINTS = "SELECT name, step, value, time FROM metrics WHERE run_id = ? ORDER BY name, step"
_SQLITE_INSERT = (f"INSERT INTO metric_rollups (run_id, name, level, bucket, {', '.join(_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * (4 + len(_COLUMNS)))})")


def backfill(connection: Connection, run_ids: list[int] | None = None) -> None:
    """(Re)build the rollups of these runs (default: every run with points) from their points, in the
    connection's transaction."""
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
    # SQLite: folded here, one run's points at a time in index order, through the driver's own cursor
    # (millions of points: SQLAlchemy's per-row work would be most of the time).
    cursor = connection.connection.cursor()
    try:
        for run_id in run_ids:
            folded = fold(cursor.execute(_SQLITE_POINTS, (run_id,)).fetchall())
            cursor.executemany(_SQLITE_INSERT, [(run_id, name, level, bucket, *block) for level, blocks in folded.items()
                                                for (name, bucket), block in blocks.items()])
    finally:
        cursor.close()


# Reading.

# The read statements, built once with bound parameters: a chart of 20 runs runs 80 of them, and
# building each anew (its expression objects and cache key) cost more than running it.
_c = MetricRollup.__table__.c
_TOTALS = select(_c.name, *(_c[c] for c in _COLUMNS)).where(_c.run_id == bindparam("run_id"), _c.level == TOP)
# A run's series names, one index seek each (a loose index scan: the key leads with run_id, then name),
# where DISTINCT or "every series at the top level" walks every bucket of the run (16 ms for a run of
# 3 × 100,000 points on PostgreSQL, against 0.2-2 ms).
_NAMES = text("""
    WITH RECURSIVE names(name) AS (
        SELECT MIN(name) FROM metric_rollups WHERE run_id = :run_id
        UNION ALL
        SELECT (SELECT MIN(m.name) FROM metric_rollups AS m WHERE m.run_id = :run_id AND m.name > names.name)
        FROM names WHERE names.name IS NOT NULL)
    SELECT name FROM names WHERE name IS NOT NULL""")
_TOTALS_NAMED = _TOTALS.where(_c.name.in_(bindparam("names", expanding=True))).order_by(_c.name, _c.bucket)
_EXTREMES = (select(_c.name, _c.bucket, _c.min_step, _c.min_value, _c.min_time, _c.max_step, _c.max_value, _c.max_time)
             .where(_c.run_id == bindparam("run_id"), _c.name.in_(bindparam("names", expanding=True)),
                    _c.level == bindparam("level"), _c.bucket >= bindparam("lo"), _c.bucket <= bindparam("hi"))
             .order_by(_c.name, _c.bucket))


@contextmanager
def shared_totals(session: Session, names: list[str]):
    """Within the block, totals() of any of these series reads each run's top level once, for all of them
    together, and answers later calls for that run from what it read: a comparison asks for the same runs'
    totals twice (curves, then the groups' best evaluations), and each statement is a round trip on
    PostgreSQL."""
    session.info["rollup_totals"] = (frozenset(names), {})
    try:
        yield
    finally:
        session.info.pop("rollup_totals", None)


def totals(session: Session, run_id: int, names: list[str] | None) -> dict[str, Block]:
    """name → the whole series' block (count, minimum, maximum), for the named series (default: all) that
    have points, by name."""
    shared = session.info.get("rollup_totals")
    if shared is None or names is None or not shared[0].issuperset(names):
        return _read_totals(session, run_id, names)
    covered, read = shared
    if run_id not in read:
        read[run_id] = _read_totals(session, run_id, sorted(covered))
    return {name: list(block) for name, block in read[run_id].items() if name in names}


def series_names(session: Session, run_id: int) -> list[str]:
    """The names of the run's series that have points, in order."""
    return list(session.connection().execute(_NAMES, {"run_id": run_id}).scalars())


def _read_totals(session: Session, run_id: int, names: list[str] | None) -> dict[str, Block]:
    names = series_names(session, run_id) if names is None else names
    if not names:
        return {}
    rows = session.connection().execute(_TOTALS_NAMED, {"run_id": run_id, "names": list(names)})
    out: dict[str, Block] = {}
    for name, *block in rows:
        if name in out:
            merge(out[name], block)
        else:
            out[name] = block
    return out


def extremes(session: Session, run_id: int, names: list[str], level: int, lo: int, hi: int
             ) -> dict[str, list[tuple[Point, Point]]]:
    """name → (lowest point, highest point) of each of the series' buckets of 2^level steps, from the one
    holding step lo to the one holding step hi, in step order: one statement for all the named series.
    A series has no buckets outside its own first and last step, so lo..hi may span several series' ranges
    at no cost. `level` may be one above a stored level: that level's buckets are merged in pairs."""
    stored = level if level in LEVELS else level - 1
    rows = session.connection().execute(_EXTREMES, {"run_id": run_id, "names": list(names), "level": stored,
                                                     "lo": lo >> stored, "hi": hi >> stored}).all()
    out: dict[str, list[tuple[Point, Point]]] = {name: [] for name in names}
    if stored == level:
        for r in rows:
            out[r[0]].append((tuple(r[2:5]), tuple(r[5:])))
        return out
    merged: dict[tuple[str, int], tuple[Point, Point]] = {}
    for name, bucket, *row in rows:
        low, high = tuple(row[:3]), tuple(row[3:])
        key = (name, bucket >> 1)
        if key in merged:  # the second half of a merged pair: later steps, so a tie keeps the first half's
            (low0, high0) = merged[key]
            low, high = (low if low[1] < low0[1] else low0), (high if high[1] > high0[1] else high0)
        merged[key] = (low, high)
    for (name, _), pair in merged.items():  # rows came by name, then bucket: each list is in step order
        out[name].append(pair)
    return out
