"""Side-by-side comparison of runs: their downsampled curves on a common x axis and the config keys
on which they differ."""
import bisect
import json
import logging
import math
from contextlib import suppress

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.compare import groups as groups_db
from app.compare import series as series_db
from app.compare import stats
from app.db import session_scope
from app.metrics import downsample, rollups
from app.runs.models import Run

log = logging.getLogger(__name__)

DEFAULT_NAMES = ("train/loss", "eval/loss", "eval/accuracy", "eval/f1", "eval/perplexity")
EPOCH_SERIES = "train/epoch"
SIGNIFICANT_DIGITS = 4
# Config keys that label a run rather than configure it: the run's name is shown everywhere anyway.
NOT_COMPARED = {"name"}


class RunsNotFound(LookupError):
    """Some asked-for runs are missing or belong to someone else (which is not said)."""


def visible_runs(session: Session, *, run_ids: list[int], visible: set[int] | None) -> list[Run]:
    """The runs in the order asked for, or RunsNotFound if any one is missing or not the viewer's."""
    runs = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(run_ids)))}
    if any(i not in runs or (visible is not None and runs[i].project_id not in visible) for i in run_ids):
        raise RunsNotFound()
    return [runs[i] for i in run_ids]


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"method": {"r": 8}} → {"method.r": 8}; lists stay whole (a list of modules is one setting)."""
    out: dict[str, object] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def config_diff(runs: list[Run]) -> list[dict]:
    """The config keys whose values are not the same in every run (a key one run lacks counts as null)."""
    flat = {r.id: flatten(r.config or {}) for r in runs}
    keys = list(dict.fromkeys(k for r in runs for k in flat[r.id] if k not in NOT_COMPARED))
    diff = []
    for key in keys:
        values = {str(r.id): flat[r.id].get(key) for r in runs}
        if len({repr(v) for v in values.values()}) > 1:
            diff.append({"key": key, "values": values})
    return diff


def _rounded(value: float) -> float | None:
    """SIGNIFICANT_DIGITS digits: plenty for a chart and its hover read-out, and it keeps the JSON for
    20 runs well under a megabyte. NaN and infinities have no JSON form: they become gaps."""
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else None


def _epoch_of(epochs: list[tuple[int, float, float]]):
    """step → epoch by linear interpolation between the run's train/epoch points (None outside them)."""
    steps = [p[0] for p in epochs]

    def at(step: int) -> float | None:
        i = bisect.bisect_left(steps, step)
        if i < len(steps) and steps[i] == step:
            return epochs[i][1]
        if i == 0 or i == len(steps):
            return None
        (s0, e0, _), (s1, e1, _) = epochs[i - 1], epochs[i]
        return e0 + (e1 - e0) * (step - s0) / (s1 - s0)
    return at


def _x_mapper(session: Session, run: Run, x: str, epochs: list):
    if x == "epoch":
        return _epoch_of(epochs)
    if x == "time":
        # Seconds since the run started; a point older than started_at (an earlier attempt) moves the origin.
        starts = [t for t in (series_db.first_time(session, run.id), run.started_at and run.started_at.timestamp()) if t]
        start = min(starts, default=0.0)
        return lambda step, time: round(time - start, 2)
    return None


def curves(session: Session, run: Run, *, names: list[str], x: str, max_points: int) -> dict[str, list[tuple]]:
    """The run's series as [(x, y), ...] on the chosen axis: step, epoch (through train/epoch) or
    seconds since the start (the points' time column)."""
    wanted = names + ([EPOCH_SERIES] if x == "epoch" and EPOCH_SERIES not in names else [])
    data = series_db.run_series(session, run.id, wanted, max_points)
    epochs = data.get(EPOCH_SERIES, [])
    if x == "epoch" and EPOCH_SERIES not in names:
        data = {k: v for k, v in data.items() if k != EPOCH_SERIES}
    to_x = _x_mapper(session, run, x, epochs)
    out = {}
    for name, points in data.items():
        if x == "step":
            out[name] = [(step, value) for step, value, _ in points]
        elif x == "time":
            out[name] = [(to_x(step, time), value) for step, value, time in points]
        else:  # a run without train/epoch points has no epoch axis: its curves stay empty
            mapped = ((to_x(step), value) for step, value, _ in points)
            out[name] = [(round(e, 4), value) for e, value in mapped if e is not None]
    return out


def curves_text(data: dict[str, list[tuple]]) -> str:
    """curves() as JSON: {name: [[x, y], ...]} with y to SIGNIFICANT_DIGITS digits, as _rounded gives it.
    Written out rather than json.dumps'd: a cold comparison of 20 runs encodes ~50,000 points, and one
    format per point costs a fraction of rounding each value and then encoding the nested lists.
    NaN and infinities (formatted nan, inf, -inf: the pair's last item) become null."""
    parts = []
    for name, points in data.items():
        pairs = ",".join([f"[{px},{py:.{SIGNIFICANT_DIGITS}g}]" for px, py in points])
        pairs = pairs.replace("-inf]", "null]").replace("inf]", "null]").replace("nan]", "null]")
        parts.append(f"{json.dumps(name)}:[{pairs}]")
    return "{" + ",".join(parts) + "}"


def run_card(run: Run, color_index: int) -> dict:
    return {"id": run.id, "name": run.name, "method": run.method, "status": run.status, "task": run.task,
            "base_model": run.base_model, "color_index": color_index, "config": run.config or {},
            "summary": run.summary or {}, "tags": run.tags, "created_at": run.created_at.isoformat(),
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None}


_curves_cache = series_db.JsonCache()


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def curves_json(session: Session, run: Run, *, names: list[str], x: str, max_points: int, now: int | None = None) -> str:
    """curves() as JSON text, encoded once per run state: polling finished runs costs one indexed lookup.
    `now`: the run's cursor when the caller has it already."""
    key = (run.id, run.created_at, run.started_at, tuple(names), x, max_points)
    now = series_db.cursor(session, run.id) if now is None else now
    text = _curves_cache.get(key, now)
    if text is None:
        text = curves_text(curves(session, run, names=names, x=x, max_points=max_points))
        _curves_cache.put(key, now, text)
    return text


def _finite(value):
    """NaN and infinities (a diverged seed) have no JSON form: null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def compare_json(session: Session, *, runs: list[Run], names: list[str], x: str, max_points: int,
                 metric: str | None = None) -> str:
    """The comparison as JSON text: {x, runs, series: {run id: {metric: [[x, y], ...]}}, config_diff,
    groups, metric, differences}. color_index is the run's id, so a run keeps its colour on every page
    and in every selection. Groups are the runs that differ only by seed; differences compare every two
    groups of two or more seeds in `metric` (default: the headline eval metric)."""
    now = series_db.cursors(session, [r.id for r in runs])  # read once: curves and groups both key on it
    # The curves and the groups' best values read the same top-level rollups.
    with rollups.shared_totals(session, [*names, EPOCH_SERIES, *groups_db.EVAL_METRICS]):
        series = ",".join(f'"{r.id}":{curves_json(session, r, names=names, x=x, max_points=max_points, now=now[r.id])}'
                          for r in runs)
        groups = groups_db.make_groups(session, runs, now)
    metric = metric or groups_db.headline(groups)
    differences = groups_db.differences(groups, runs, metric) if metric else []
    return (f'{{"x":{_dumps(x)},"runs":{_dumps([run_card(r, r.id) for r in runs])},'
            f'"series":{{{series}}},"config_diff":{_dumps(config_diff(runs))},'
            f'"groups":{_dumps(_finite(groups))},"metric":{_dumps(metric)},"differences":{_dumps(_finite(differences))}}}')


def preload() -> None:
    """What the first comparison after a restart would otherwise pay for, done beside the running server
    (app/main.py starts this in a background thread): the statistics library's import, and each of the
    comparison's statements compiled once (SQLAlchemy caches a statement's compiled form on its first
    run; a comparison runs a dozen kinds). The statements look up run 0, which no database holds."""
    stats.preload()
    try:
        with session_scope() as session:
            with suppress(RunsNotFound):
                visible_runs(session, run_ids=[0], visible=None)
            series_db.cursor(session, 0)
            series_db.first_time(session, 0)
            rollups.totals(session, 0, list(DEFAULT_NAMES))
            rollups.series_names(session, 0)
            rollups.extremes(session, 0, list(DEFAULT_NAMES[:3]), rollups.LEVELS[0], 0, 0)
            downsample.all_points(session, 0, DEFAULT_NAMES[0])
    except SQLAlchemyError:  # the database is not there yet: the first comparison compiles them instead
        log.info("could not preload the comparison's statements", exc_info=True)
