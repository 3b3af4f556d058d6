"""Metric series for comparisons: downsampled from their rollups (app/metrics/downsample.py), so a
100,000-point series reaches Python as at most max_points rows read from a few hundred stored buckets,
and a spike survives. JsonCache keeps encoded results keyed by the run's newest metric id: a live run's
new points make a fresh entry, a finished run is read and encoded once per process.
"""
import threading
from collections import OrderedDict

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from app.metrics import downsample
from app.metrics.models import MetricPoint

Point = downsample.Point


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


# Built once (a comparison runs these per run; see rollups' read statements).
_CURSOR = select(func.max(MetricPoint.id)).where(MetricPoint.run_id == bindparam("run_id"))
_FIRST_TIME = select(MetricPoint.time).where(MetricPoint.run_id == bindparam("run_id")).order_by(MetricPoint.id).limit(1)


def cursor(session: Session, run_id: int) -> int:
    """The run's newest metric id: it changes exactly when the run gets new points."""
    return session.connection().execute(_CURSOR, {"run_id": run_id}).scalar() or 0


def cursors(session: Session, run_ids: list[int]) -> dict[int, int]:
    """cursor() of each run. One query per run on purpose: a bare MAX() is a single (run_id, id) index seek,
    while MAX() ... GROUP BY run_id would walk every index entry of every run."""
    return {run_id: cursor(session, run_id) for run_id in run_ids}


def run_series(session: Session, run_id: int, names: list[str], max_points: int) -> dict[str, list[Point]]:
    """The named series of one run that have points, each downsampled."""
    return downsample.run_series(session, run_id, names, max_points)


def first_time(session: Session, run_id: int) -> float | None:
    """When the run recorded its first point (ids grow with time; the (run_id, id) index finds it at once)."""
    return session.connection().execute(_FIRST_TIME, {"run_id": run_id}).scalar()
