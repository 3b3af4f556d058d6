"""Experiment requests and responses; the runs they make are validated as POST /api/runs bodies."""
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.experiments.plans import MAX_REPEATS, MAX_RUNS, METHOD_PRESETS
from app.experiments.search_schemas import SearchExperiment, SearchOut
from app.ids import Id
from app.runs.schemas import Columns, RunOut

PresetMethod = Literal[tuple(METHOD_PRESETS)]  # the registry's methods that run on defaults alone
GridKey = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[a-z_]+){0,3}$", max_length=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)  # as run configs (app/runs/schemas.py)


def _repeats():
    return Field(1, ge=1, le=MAX_REPEATS,
                 description="Run every configuration with this many seeds (training.seed, +1, +2, …), the held-out "
                             "rows kept the same (eval_split_seed): runs that differ only by seed form a group that "
                             "GET /api/compare reports as a mean with a 95% interval.")


class Budget(_Strict):
    """The same budget for every method: methods differ in cost per step, so equal steps are not equal work."""

    kind: Literal["steps", "tokens", "seconds"] = Field(
        description="steps: training.max_steps; tokens: training.max_tokens (training tokens, padding not counted); "
                    "seconds: training.max_seconds (seconds of training, evaluations not counted).")
    amount: int = Field(ge=1, le=10_000_000_000)


class MethodsExperiment(_Strict):
    """Every chosen method on one dataset, each with its own default settings and learning rate."""

    kind: Literal["methods"]
    name: str = Field(min_length=1, max_length=160)
    dataset_id: Id
    eval_dataset_id: Id | None = None
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    base_model: str = Field("minilm-l6", min_length=1, max_length=64)
    task: Literal["classification", "causal_lm"] = "classification"
    columns: Columns
    methods: list[PresetMethod] = Field(min_length=1, max_length=len(METHOD_PRESETS), description="Methods to run, one run each.")
    training: dict[str, Any] = Field(
        default_factory=dict, max_length=20,
        description="Training settings for every run (the `training` of POST /api/runs). A learning_rate "
                    "here replaces the per-method defaults.")
    budget: Budget | None = Field(
        None, description="Give every method the same budget in optimizer steps, training tokens or seconds; a run "
                          "stops cleanly when its budget is spent (summary.stopped_by). Without epochs or max_steps in "
                          "`training`, a tokens or seconds budget is what ends the runs.")
    repeats: int = _repeats()

    @model_validator(mode="after")
    def _distinct(self) -> "MethodsExperiment":
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods must not repeat a method")
        if self.budget is not None:
            given = sorted(k for k in ("max_steps", "max_tokens", "max_seconds") if self.training.get(k) is not None)
            if given:
                raise ValueError(f"budget sets the runs' limit; leave training.{given[0]} out (say the budget once)")
        if len(self.methods) * self.repeats > MAX_RUNS:
            raise ValueError(f"{len(self.methods)} methods × {self.repeats} seeds = {len(self.methods) * self.repeats} "
                             f"runs; at most {MAX_RUNS} per experiment")
        return self


class GridExperiment(_Strict):
    """One run per combination of the grid's values, each a copy of `base` with those values set."""

    kind: Literal["grid"]
    name: str = Field(min_length=1, max_length=160)
    base: dict[str, Any] = Field(description="A full run config, as POST /api/runs takes.")
    grid: dict[GridKey, Annotated[list[Any], Field(min_length=1, max_length=MAX_RUNS)]] = Field(
        max_length=8,
        description='Dotted config keys → values, e.g. {"training.learning_rate": [1e-4, 5e-4], "method.r": [4, 8]}. '
                    'Empty ({}) with repeats ≥ 2: the base config once per seed (the New run form\'s "repeat with k seeds").')
    repeats: int = _repeats()

    @model_validator(mode="after")
    def _something_to_vary(self) -> "GridExperiment":
        if not self.grid and self.repeats < 2:
            raise ValueError("an empty grid makes one run: give grid keys, or repeats of 2 or more (or use POST /api/runs)")
        if self.repeats > 1 and "training.seed" in self.grid:
            raise ValueError("grid over training.seed or set repeats, not both")
        return self


ExperimentCreate = MethodsExperiment | GridExperiment | SearchExperiment


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: str
    spec: dict
    owner_id: int | None
    created_at: datetime
    run_count: int = 0
    statuses: dict[str, int] = Field(default_factory=dict, description="How many of its runs are in each status.")


class ExperimentRunOut(RunOut):
    queue_position: int | None = Field(None, description="1 = the next run a free worker starts; null when not queued.")


class ExperimentDetail(ExperimentOut):
    runs: list[ExperimentRunOut]
    search: SearchOut | None = Field(None, description='kind "search": the trials, their states and the best so far.')


class MoveRequest(_Strict):
    position: Literal["top", "bottom", "up", "down"]


class MoveOut(BaseModel):
    id: int
    queue_position: int
    queue_length: int
