"""Metric series downsampled inside the database: per bucket of steps, the point with the smallest and
the point with the largest value (their real steps and times), plus the first and last point.

A 100,000-point series reaches Python as at most max_points rows, so a spike survives and nothing
large crosses the wire. JsonCache keeps encoded results keyed by the run's newest metric id: a live
run's new points make a fresh entry, a finished run is read and encoded once per process.
"""
import threading
from collections import OrderedDict

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.metrics.models import MetricPoint

Point = tuple[int, float, float]  # (step, value, unix time)

# SQLite: a grouped query would sort every row of the series into a temporary B-tree. Instead each
# bucket is an index range scanned twice with one bare MIN()/MAX() (SQLite documents that a bare
# column then comes from the row holding the extreme), which picks the exact steps without sorting;
# the picked rows are then read by (run, name, step).
_SQLITE_PICKS = text("""
    WITH RECURSIVE bucket(b) AS (SELECT 0 UNION ALL SELECT b + 1 FROM bucket WHERE b + 1 < :nb),
    picks(s) AS (
      SELECT (SELECT step FROM (SELECT MIN(value), step FROM metrics WHERE run_id = :run AND name = :name
              AND step >= :lo + b * :width AND step < :lo + (b + 1) * :width)) FROM bucket
      UNION
      SELECT (SELECT step FROM (SELECT MAX(value), step FROM metrics WHERE run_id = :run AND name = :name
              AND step >= :lo + b * :width AND step < :lo + (b + 1) * :width)) FROM bucket)
    SELECT m.step, m.value, m.time FROM picks JOIN metrics m ON m.run_id = :run AND m.name = :name AND m.step = picks.s""")
# PostgreSQL: arrays compare element by element, so MIN/MAX of [value, step, time] carry the step and time.
_POSTGRES_EXTREMES = text("""
    SELECT (CAST(step AS BIGINT) - :lo) * :nb / :span AS b,
           MIN(ARRAY[value, step, time]), MAX(ARRAY[value, step, time]), COUNT(*)
    FROM metrics WHERE run_id = :run AND name = :name GROUP BY b""")


def _end_point(session: Session, run_id: int, name: str, last: bool) -> Point | None:
    order = MetricPoint.step.desc() if last else MetricPoint.step
    row = session.execute(select(MetricPoint.step, MetricPoint.value, MetricPoint.time)
                          .where(MetricPoint.run_id == run_id, MetricPoint.name == name).order_by(order).limit(1)).first()
    return tuple(row) if row else None


def _all_points(session: Session, run_id: int, name: str) -> list[Point]:
    return [tuple(r) for r in session.execute(
        select(MetricPoint.step, MetricPoint.value, MetricPoint.time)
        .where(MetricPoint.run_id == run_id, MetricPoint.name == name).order_by(MetricPoint.step))]


def _count(session: Session, run_id: int, name: str) -> int:
    return session.scalar(select(func.count()).where(MetricPoint.run_id == run_id, MetricPoint.name == name)) or 0


def _extremes(session: Session, run_id: int, name: str, first: Point, last: Point, buckets: int) -> list[Point] | None:
    """Every bucket's lowest and highest point; None when the series is short enough to send whole."""
    span = last[0] - first[0] + 1
    if session.get_bind().dialect.name == "postgresql":
        points, total = [], 0
        params = {"run": run_id, "name": name, "lo": first[0], "nb": buckets, "span": span}
        for _, lo, hi, n in session.execute(_POSTGRES_EXTREMES, params):
            points += [(int(lo[1]), lo[0], lo[2]), (int(hi[1]), hi[0], hi[2])]
            total += n
        return None if total <= 2 * buckets + 2 else points
    if _count(session, run_id, name) <= 2 * buckets + 2:  # an index-only count: cheap next to the scan
        return None
    params = {"run": run_id, "name": name, "lo": first[0], "nb": buckets, "width": -(-span // buckets)}
    return [tuple(row) for row in session.execute(_SQLITE_PICKS, params)]


def downsample(session: Session, run_id: int, name: str, max_points: int) -> list[Point]:
    """At most max_points points of the series in step order, keeping every bucket's minimum and maximum."""
    first = _end_point(session, run_id, name, last=False)
    if first is None:
        return []
    last = _end_point(session, run_id, name, last=True)
    buckets = max(1, (max_points - 2) // 2)  # two points per bucket, plus the two ends
    extremes = _extremes(session, run_id, name, first, last, buckets)
    if extremes is None:
        return _all_points(session, run_id, name)
    by_step = {p[0]: p for p in extremes}  # a bucket whose min and max are one point keeps it once
    by_step[first[0]], by_step[last[0]] = first, last
    return [by_step[s] for s in sorted(by_step)][:max_points]


class JsonCache:
    """A small LRU of encoded results: key → (the run's newest metric id when encoded, JSON text).
    Thread-safe: sync routes run in a thread pool."""

    def __init__(self, size: int = 256):
        self.size = size
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple, cursor: int) -> str | None:
        with self.lock:
            hit = self.entries.get(key)
            if hit is None or hit[0] != cursor:
                return None
            self.entries.move_to_end(key)
            return hit[1]

    def put(self, key: tuple, cursor: int, value: str) -> None:
        with self.lock:
            self.entries[key] = (cursor, value)
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


def cursor(session: Session, run_id: int) -> int:
    """The run's newest metric id: it changes exactly when the run gets new points."""
    return session.scalar(select(func.max(MetricPoint.id)).where(MetricPoint.run_id == run_id)) or 0


def cursors(session: Session, run_ids: list[int]) -> dict[int, int]:
    """cursor() of each run. One query per run on purpose: a bare MAX() is a single (run_id, id) index seek,
    while MAX() ... GROUP BY run_id would walk every index entry of every run."""
    return {run_id: cursor(session, run_id) for run_id in run_ids}


def run_series(session: Session, run_id: int, names: list[str], max_points: int) -> dict[str, list[Point]]:
    """The named series of one run that have points, each downsampled."""
    return {name: pts for name in names if (pts := downsample(session, run_id, name, max_points))}


def first_time(session: Session, run_id: int) -> float | None:
    """When the run recorded its first point (ids grow with time; the (run_id, id) index finds it at once)."""
    return session.scalar(select(MetricPoint.time).where(MetricPoint.run_id == run_id).order_by(MetricPoint.id).limit(1))
