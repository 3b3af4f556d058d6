"""Min/max downsampling of a series from its rollups: a chart gets at most max_points points and a spike
stays visible, without the series' points being scanned.

The series' steps are cut into buckets of 2^L steps (bucket = step >> L), L the smallest from 2 up that
leaves at most (max_points - 2) // 2 buckets between the first and the last point. Each bucket gives
its lowest and its highest point (ties: the earliest step), the series its first and last point; all
of them real points, in step order, each step once. A series of at most 2·buckets + 2 points comes
back whole. Buckets are aligned to powers of two so that each one is a stored rollup (app/metrics/rollups.py).
"""
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.metrics import rollups
from app.metrics.models import MetricPoint

Point = tuple[int, float, float]  # (step, value, unix time)


def bucket_count(max_points: int) -> int:
    return max(1, (max_points - 2) // 2)  # two points per bucket, plus the two ends


def level_for(first_step: int, last_step: int, buckets: int) -> int:
    """The smallest bucket level (2^level steps) from 2 up that cuts [first_step, last_step] into at most
    `buckets` buckets (the top level when none does)."""
    level = rollups.LEVELS[0]
    while level < rollups.TOP and (last_step >> level) - (first_step >> level) + 1 > buckets:
        level += 1
    return level


_ALL_POINTS = (select(MetricPoint.step, MetricPoint.value, MetricPoint.time)
               .where(MetricPoint.run_id == bindparam("run_id"), MetricPoint.name == bindparam("name"))
               .order_by(MetricPoint.step))  # built once, like rollups' read statements


def all_points(session: Session, run_id: int, name: str) -> list[Point]:
    return [tuple(r) for r in session.connection().execute(_ALL_POINTS, {"run_id": run_id, "name": name})]


def _plan(max_points: int, total: rollups.Block) -> tuple[int, Point, Point] | None:
    """How to downsample a series: (bucket level, its first point, its last point); None: it comes whole."""
    buckets = bucket_count(max_points)
    if total[0] <= 2 * buckets + 2:
        return None
    first, last = (total[8], total[7], total[9]), (total[11], total[10], total[12])
    return level_for(first[0], last[0], buckets), first, last


def _thinned(first: Point, last: Point, pairs: list[tuple[Point, Point]], max_points: int) -> list[Point]:
    by_step = {first[0]: first, last[0]: last}
    for low, high in pairs:
        by_step[low[0]] = low
        by_step[high[0]] = high
    return [by_step[s] for s in sorted(by_step)][:max_points]


def run_series(session: Session, run_id: int, names: list[str] | None, max_points: int,
               totals: dict[str, rollups.Block] | None = None) -> dict[str, list[Point]]:
    """The named series of one run (default: all, by name) that have points, each downsampled, in the
    order asked for. Series thinned at the same bucket level are read in one statement (a comparison's
    curves share their steps, so most runs take one). `totals`: their rollups.totals, when known."""
    totals = rollups.totals(session, run_id, names) if totals is None else totals
    order = totals if names is None else [n for n in dict.fromkeys(names) if n in totals]
    plans = {name: _plan(max_points, totals[name]) for name in order}
    by_level: dict[int, list[str]] = {}
    for name, plan in plans.items():
        if plan is not None:
            by_level.setdefault(plan[0], []).append(name)
    pairs: dict[str, list] = {}
    for level, group in by_level.items():
        lo, hi = min(plans[n][1][0] for n in group), max(plans[n][2][0] for n in group)
        pairs.update(rollups.extremes(session, run_id, group, level, lo, hi))
    return {name: all_points(session, run_id, name) if plan is None
            else _thinned(plan[1], plan[2], pairs[name], max_points) for name, plan in plans.items()}
