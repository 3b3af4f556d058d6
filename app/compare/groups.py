"""Runs that differ only by seed form a group: each group's final and best eval metrics as a mean with a
95% interval over its seeds, and, between two groups, whether the difference is more than noise.

The seed is `training.seed` (and `eval_split_seed`, which repeats keep fixed so every seed of a group is
evaluated on the same rows). Two groups whose runs pair up seed by seed on the same eval rows get a
paired t-test; otherwise Welch's.
"""
import itertools
import json
import math
import re

from sqlalchemy.orm import Session

from app.compare import series as series_db
from app.compare import stats
from app.metrics import rollups
from app.runs.models import Run
from app.runs.schemas import LOWER_IS_BETTER
from app.samples.service import eval_set

EVAL_METRICS = ("eval/accuracy", "eval/f1", "eval/loss", "eval/perplexity")
HEADLINE_ORDER = ("eval/accuracy", "eval/perplexity", "eval/f1", "eval/loss")
SEED_KEYS = ("training.seed", "eval_split_seed")
# Shares (0..1) read as percentage points; losses and perplexities in their own units.
POINTS = {"eval/accuracy", "eval/f1"}
SIGNIFICANCE = 0.05
_SEED_SUFFIX = re.compile(r"\s*·\s*seed \d+\s*$")


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def group_key(run: Run) -> str:
    """What a run's group is: its config without the name and the seeds."""
    flat = {k: v for k, v in _flat(run.config or {}).items() if k != "name" and k not in SEED_KEYS}
    return json.dumps(flat, sort_keys=True, default=str)


def seed_of(run: Run) -> int | None:
    return ((run.config or {}).get("training") or {}).get("seed")


def _label(runs: list[Run]) -> str:
    names = {_SEED_SUFFIX.sub("", r.name) for r in runs}
    return names.pop() if len(names) == 1 else f"{_SEED_SUFFIX.sub('', runs[0].name)} (+{len(runs) - 1})"


# Per run: its eval series' extremes, kept until the run records a new point (like its encoded curves in
# service.curves_json): a page polling a finished comparison does not scan eval series again.
_extremes_cache = series_db.JsonCache()


def best_values(session: Session, runs: list[Run], cursors: dict[int, int]) -> dict[tuple[int, str], tuple[float, float]]:
    """(run id, eval metric) → (min, max) over the run's evaluations. cursors: each run's newest metric id."""
    out = {}
    for run in runs:
        key, now = (run.id, run.created_at, "extremes"), cursors[run.id]
        extremes = _extremes_cache.get(key, now)
        if extremes is None:
            # The series' top-level rollups hold its minimum and maximum: no scan of the points.
            extremes = {name: (t[1], t[4]) for name, t in rollups.totals(session, run.id, list(EVAL_METRICS)).items()}
            _extremes_cache.put(key, now, extremes)
        out.update({(run.id, name): value for name, value in extremes.items()})
    return out


def _final(run: Run, metric: str) -> float | None:
    value = ((run.summary or {}).get("eval") or {}).get(metric.removeprefix("eval/"))
    # A diverged seed (NaN loss) has no number to average: it does not count, rather than poison the mean.
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _best(bests: dict, run: Run, metric: str) -> float | None:
    extremes = bests.get((run.id, metric))
    if extremes is None:
        return None
    value = extremes[0] if LOWER_IS_BETTER[metric] else extremes[1]
    return value if value is not None and math.isfinite(value) else None


def make_groups(session: Session, runs: list[Run], cursors: dict[int, int] | None = None) -> list[dict]:
    """Every compared run in exactly one group, in the order their first runs were asked for:
    [{run_ids, label, seeds, metrics: {metric: {mean, ci_low, ci_high, n, std, min, max}}, best_metrics}]
    where metrics are the final evaluation's (the run summary's) and best_metrics the best of every
    evaluation. Only runs that have the number count (a queued seed does not lower n)."""
    members: dict[str, list[Run]] = {}
    for run in runs:
        members.setdefault(group_key(run), []).append(run)
    bests = best_values(session, runs, cursors if cursors is not None else series_db.cursors(session, [r.id for r in runs]))
    groups = []
    for group in members.values():
        finals = {m: [v for r in group if (v := _final(r, m)) is not None] for m in EVAL_METRICS}
        best = {m: [v for r in group if (v := _best(bests, r, m)) is not None] for m in EVAL_METRICS}
        groups.append({
            "run_ids": [r.id for r in group], "label": _label(group), "seeds": [seed_of(r) for r in group],
            "trainable_params": next((p for r in group if (p := (r.summary or {}).get("trainable_params"))), None),
            "metrics": {m: stats.mean_interval(v) for m, v in finals.items() if v},
            "best_metrics": {m: stats.mean_interval(v) for m, v in best.items() if v},
        })
    _distinct_labels(groups)
    return groups


def _distinct_labels(groups: list[dict]) -> None:
    """Two groups named alike (runs given one name) get their first run's id added."""
    seen: dict[str, int] = {}
    for g in groups:
        seen[g["label"]] = seen.get(g["label"], 0) + 1
    for g in groups:
        if seen[g["label"]] > 1:
            g["label"] = f"{g['label']} (#{g['run_ids'][0]})"


def headline(groups: list[dict]) -> str | None:
    """The metric differences are about by default: accuracy, else perplexity, F1, loss."""
    return next((m for m in HEADLINE_ORDER if any(m in g["metrics"] for g in groups)), None)


def _pairs(a: list[Run], b: list[Run], metric: str) -> tuple[list[float], list[float]] | None:
    """Seed-matched finals when both groups ran the same seeds once each, on the same eval rows per seed."""
    by_seed_a, by_seed_b = {seed_of(r): r for r in a}, {seed_of(r): r for r in b}
    if len(by_seed_a) != len(a) or len(by_seed_b) != len(b) or set(by_seed_a) != set(by_seed_b) or None in by_seed_a:
        return None
    xs, ys = [], []
    for seed in sorted(by_seed_a):
        ra, rb = by_seed_a[seed], by_seed_b[seed]
        if eval_set(ra) != eval_set(rb):
            return None
        va, vb = _final(ra, metric), _final(rb, metric)
        if va is None or vb is None:
            return None
        xs.append(va)
        ys.append(vb)
    return xs, ys


def differences(groups: list[dict], runs: list[Run], metric: str) -> list[dict]:
    """For each two groups with at least two finished seeds each: how much better the better one is in
    `metric` (final evaluation), its 95% interval, the p-value, and a sentence that says it."""
    by_id = {r.id: r for r in runs}
    out = []
    for i, j in itertools.combinations(range(len(groups)), 2):
        ga, gb = groups[i], groups[j]
        if ga["metrics"].get(metric, {}).get("n", 0) < 2 or gb["metrics"].get(metric, {}).get("n", 0) < 2:
            continue
        runs_a, runs_b = [by_id[k] for k in ga["run_ids"]], [by_id[k] for k in gb["run_ids"]]
        paired = _pairs(runs_a, runs_b, metric)
        if paired is not None and len(paired[0]) >= 2:
            d = stats.paired(*paired)
        else:
            d = stats.welch([v for r in runs_a if (v := _final(r, metric)) is not None],
                            [v for r in runs_b if (v := _final(r, metric)) is not None])
        sign = -1.0 if LOWER_IS_BETTER[metric] else 1.0  # "better" is a positive number either way
        better, worse = (i, j) if sign * d.diff >= 0 else (j, i)
        flip = sign if better == i else -sign
        lo, hi = sorted((flip * d.ci_low, flip * d.ci_high))
        entry = {"metric": metric, "a": better, "b": worse, "a_label": groups[better]["label"],
                 "b_label": groups[worse]["label"], "difference": flip * d.diff, "ci_low": lo, "ci_high": hi,
                 "p_value": d.p_value, "test": d.test, "df": d.df,
                 "n_a": d.n_a if better == i else d.n_b, "n_b": d.n_b if better == i else d.n_a,
                 "distinguishable": d.p_value < SIGNIFICANCE}
        entry["text"] = sentence(entry)
        out.append(entry)
    return out


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def sentence(d: dict) -> str:
    """"LoRA r=8 is 2.1 ± 1.4 points better than prompt-tuning in eval accuracy (p = 0.01, paired t-test,
    5 seeds each)" — or that the two cannot be told apart."""
    metric = d["metric"]
    scale, unit = (100.0, " points") if metric in POINTS else (1.0, "")
    diff = d["difference"] * scale
    half = (d["ci_high"] - d["ci_low"]) / 2 * scale
    digits = 1 if metric in POINTS else 3
    amount = f"{diff:.{digits}f} ± {half:.{digits}f}{unit}"
    direction = "lower" if LOWER_IS_BETTER[metric] else "better"
    name = metric.removeprefix("eval/").replace("accuracy", "eval accuracy").replace("f1", "eval F1")
    name = {"loss": "eval loss", "perplexity": "eval perplexity"}.get(name, name)
    seeds = f"{d['n_a']} seeds each" if d["n_a"] == d["n_b"] else f"{d['n_a']} and {d['n_b']} seeds"
    test = "paired t-test" if d["test"] == "paired" else "Welch's t-test"
    detail = f"({_fmt_p(d['p_value'])}, {test}, {seeds})"
    if d["distinguishable"]:
        return f"{d['a_label']} is {amount} {direction} than {d['b_label']} in {name} {detail}."
    return (f"{d['a_label']} and {d['b_label']} cannot be told apart in {name}: {d['a_label']} is {amount} "
            f"{direction}, within noise {detail}.")
