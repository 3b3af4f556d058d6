"""From an experiment request to the run configs it launches: plain dicts in POST /api/runs's shape,
validated afterwards exactly like POST /api/runs. No database here.

Per-method defaults for "every method on this dataset" come from the method registry
(app/methods): each spec's default settings and its preset learning rate, measured in
bench/methods_quality.py (docs/METHODS.md has the table and the figures behind it). A
`learning_rate` given in the request's `training` replaces them for every run.
"""
import copy
import itertools
import json
from math import prod

from app.methods import all_specs

MAX_RUNS = 64  # one experiment launches at most this many runs
MAX_REPEATS = 10  # seeds per configuration
# A budget kind → the training field that carries it (app/runs/schemas.py Training).
BUDGET_FIELDS = {"steps": "max_steps", "tokens": "max_tokens", "seconds": "max_seconds"}
EPOCHS_CAP = 1000  # Training.epochs' maximum: with a tokens or seconds budget the budget ends the run

# {method: (its default settings, its preset learning rate)} for the methods a preset can run.
METHOD_PRESETS: dict[str, tuple[dict, float]] = {
    spec.name: (spec.defaults(), spec.learning_rate) for spec in all_specs() if spec.presets}


class PlanError(ValueError):
    """The request cannot be turned into runs; loc names the field (FastAPI's 422 shape)."""

    def __init__(self, loc: tuple, msg: str):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def methods_plan(spec: dict) -> list[tuple[str, dict]]:
    """(label, run config) for each chosen method, with that method's preset settings and learning rate."""
    plan = []
    for method in spec["methods"]:
        settings, learning_rate = METHOD_PRESETS[method]
        config = {key: spec[key] for key in ("dataset_id", "eval_dataset_id", "eval_fraction", "base_model",
                                             "task", "columns")}
        config.update(name=run_name(spec["name"], method), method=copy.deepcopy(settings),
                      training={"learning_rate": learning_rate, **spec.get("training", {})})
        if spec.get("budget"):
            apply_budget(config["training"], spec["budget"])
        plan.append((method, config))
    return with_repeats(plan, spec.get("repeats", 1), spec["name"])


def apply_budget(training: dict, budget: dict) -> None:
    """Set the budget's training field; a tokens or seconds budget also lifts the epoch limit (unless the
    request set epochs), so the budget, not the end of one epoch, is what stops each run."""
    training[BUDGET_FIELDS[budget["kind"]]] = budget["amount"]
    if budget["kind"] != "steps" and "epochs" not in training:
        training["epochs"] = EPOCHS_CAP


def with_repeats(plan: list[tuple[str, dict]], repeats: int, experiment: str, where: tuple = ()) -> list[tuple[str, dict]]:
    """Each configuration `repeats` times with seeds training.seed, +1, … (default seed 0), the held-out rows
    fixed by eval_split_seed (the base seed unless the config sets one): the copies differ only by seed.
    `where` is where the configs' fields are in the request (("base",) for a grid), for error locations."""
    if repeats <= 1:
        return plan
    out = []
    for label, config in plan:
        training = config.setdefault("training", {})
        if not isinstance(training, dict):
            raise PlanError((*where, "training"), "training must be an object")
        base_seed = training.get("seed", 0)
        if not isinstance(base_seed, int) or isinstance(base_seed, bool):
            raise PlanError((*where, "training", "seed"), "training.seed must be a whole number to repeat with more seeds")
        for i in range(repeats):
            copy_ = copy.deepcopy(config)
            copy_["training"]["seed"] = base_seed + i
            if copy_.get("eval_split_seed") is None:
                copy_["eval_split_seed"] = base_seed
            seeded = f"{label} · seed {base_seed + i}" if label else f"seed {base_seed + i}"  # label "": an empty grid
            copy_["name"] = run_name(experiment, seeded)
            out.append((seeded, copy_))
    return out


def grid_plan(spec: dict) -> list[tuple[str, dict]]:
    """(label, run config) for every combination of the grid's values, applied to the base config."""
    grid: dict[str, list] = spec["grid"]
    for key, values in grid.items():
        if key == "name" or key.startswith("name."):
            raise PlanError(("grid", key), "The run names come from the experiment; grid over something else.")
        seen = [json.dumps(v, sort_keys=True) for v in values]
        if len(set(seen)) != len(seen):
            raise PlanError(("grid", key), f"The values of {key} repeat: each combination would run twice.")
    repeats = spec.get("repeats", 1)
    count = prod(len(values) for values in grid.values()) * repeats
    if count > MAX_RUNS:
        sizes = " × ".join([str(len(v)) for v in grid.values()] + ([f"{repeats} seeds"] if repeats > 1 else []))
        raise PlanError(("grid",), f"The grid makes {sizes} = {count} runs; at most {MAX_RUNS} per experiment.")
    plan = []
    for combination in itertools.product(*grid.values()):
        config = copy.deepcopy(spec["base"])
        for key, value in zip(grid, combination):
            set_path(config, key, value)
        label = ", ".join(f"{key}={_short(value)}" for key, value in zip(grid, combination))
        config["name"] = run_name(spec["name"], label)
        plan.append((label, config))
    return with_repeats(plan, repeats, spec["name"], ("base",))


def set_path(config: dict, dotted: str, value) -> None:
    """config["training"]["learning_rate"] = value for "training.learning_rate" (missing objects are made)."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parents[:i + 1])
            raise PlanError(("grid", dotted), f"{where} is not an object in the base config, so {dotted} cannot be set.")
        node = child
    node[leaf] = copy.deepcopy(value)


def run_name(experiment: str, label: str) -> str:
    return f"{experiment} · {label}"[:200]


def _short(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
