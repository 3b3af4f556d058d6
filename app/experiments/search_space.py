"""A search space checked against its base run config at submit, and turned into trial configs.

The space is refused (422) when a key is not a setting of the run config, or when either end of a
range (or any choice) would make a run POST /api/runs refuses: what can be refused at submit is.
No Optuna here: the values come in as a plain {key: value} dict.
"""
import copy
import json

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.datasets.models import Dataset
from app.experiments.plans import PlanError, run_name, set_path
from app.experiments.search_schemas import SearchExperiment
from app.runs import service as runs_service
from app.runs.schemas import RunCreate

FieldErrors = runs_service.FieldErrors
# The eval metrics each task reports (workers/training/evaluation.py).
TASK_METRICS = {"classification": ("eval/accuracy", "eval/f1", "eval/loss"),
                "causal_lm": ("eval/loss", "eval/perplexity")}


def corners(body: SearchExperiment) -> list[dict]:
    """Value sets that together touch every bound and every choice: all lows, all highs, then each choice."""
    low = {k: (d.choices[0] if d.type == "choice" else d.low) for k, d in body.space.items()}
    high = {k: (d.choices[-1] if d.type == "choice" else d.high) for k, d in body.space.items()}
    sets = [low, high]
    for key, dist in body.space.items():
        if dist.type == "choice":
            sets += [{**low, key: choice} for choice in dist.choices[1:-1]]
    return sets


def trial_config(body: SearchExperiment, params: dict, label: str) -> dict:
    """The run config of one trial: a copy of the base with the space's keys set to `params`."""
    config = copy.deepcopy(body.base)
    for key, value in params.items():
        try:
            set_path(config, key, value)
        except PlanError as e:
            raise PlanError(("space", key), e.msg) from None
    config["name"] = run_name(body.name, label)
    return config


def label(number: int, params: dict) -> str:
    """"trial 3: learning_rate=0.00123, r=8" (the last part of each key)."""
    parts = [f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in params.items()]
    return f"trial {number}: " + ", ".join(parts)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return value if isinstance(value, str) else json.dumps(value)


def check(session: Session, body: SearchExperiment, visible: set[int] | None) -> tuple[RunCreate, Dataset]:
    """Every corner of the space makes a valid run. Returns the first (all lows) with its dataset.
    Raises FieldErrors naming the space key or base field at fault, each problem once."""
    errors: list[dict] = []
    validated: list[tuple[RunCreate, Dataset]] = []
    for values in corners(body):
        try:
            raw = trial_config(body, values, label(0, values))
        except PlanError as e:
            errors.append({"loc": ["body", *e.loc], "msg": e.msg, "type": "value_error"})
            continue
        try:
            config = RunCreate.model_validate(raw)
            dataset, _ = runs_service.validate_references(session, config, visible)
        except ValidationError as e:
            errors += [_explain(body, values, tuple(err["loc"]), err["type"], err["msg"])
                       for err in e.errors(include_url=False, include_context=False, include_input=False)]
            continue
        except FieldErrors as e:
            errors += [_explain(body, values, tuple(err["loc"][1:]), err["type"], err["msg"]) for err in e.errors]
            continue
        validated.append((config, dataset))
    unique = list({json.dumps(e, sort_keys=True): e for e in errors}.values())
    if unique:
        raise FieldErrors(unique[:50])
    config, dataset = validated[0]
    if config.eval_dataset_id is None and config.eval_fraction == 0:
        raise FieldErrors([{"loc": ["body", "base", "eval_fraction"], "type": "value_error",
                            "msg": "A search compares trials by their eval metric: give the base config an "
                                   "eval_fraction above 0 or an eval_dataset_id."}])
    metric, _ = body.resolved_objective()
    if metric not in TASK_METRICS[config.task]:
        allowed = ", ".join(TASK_METRICS[config.task])
        raise FieldErrors([{"loc": ["body", "objective", "metric"], "type": "value_error",
                            "msg": f"{config.task} runs do not report {metric}; choose one of {allowed}."}])
    return config, dataset


def _explain(body: SearchExperiment, values: dict, loc: tuple, kind: str, msg: str) -> dict:
    """One 422 item: at the space key when one sets the field (with the value that broke it), else the base."""
    plain = [loc[0], *loc[2:]] if loc[:1] == ("method",) and len(loc) > 2 else list(loc)  # drop method's type tag
    dotted = ".".join(map(str, plain))
    for key in body.space:
        if dotted == key or dotted.startswith(key + "."):
            if kind == "extra_forbidden":
                msg = f"{key} is not a setting of this run config (see POST /api/runs)"
            else:
                msg = f"{key} = {_short(values[key])} makes a run that is refused: {msg}"
            return {"loc": ["body", "space", key], "type": kind, "msg": msg}
    return {"loc": ["body", "base", *loc], "type": kind, "msg": f"base.{'.'.join(map(str, loc))}: {msg}"}
