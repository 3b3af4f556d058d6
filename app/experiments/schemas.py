"""Experiment requests and responses; the runs they make are validated as POST /api/runs bodies."""
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.experiments.plans import MAX_RUNS, METHOD_PRESETS
from app.experiments.search_schemas import SearchExperiment, SearchOut
from app.ids import Id
from app.runs.schemas import Columns, RunOut

PresetMethod = Literal[tuple(METHOD_PRESETS)]  # the registry's methods that run on defaults alone
GridKey = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[a-z_]+){0,3}$", max_length=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)  # as run configs (app/runs/schemas.py)


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

    @model_validator(mode="after")
    def _distinct(self) -> "MethodsExperiment":
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods must not repeat a method")
        return self


class GridExperiment(_Strict):
    """One run per combination of the grid's values, each a copy of `base` with those values set."""

    kind: Literal["grid"]
    name: str = Field(min_length=1, max_length=160)
    base: dict[str, Any] = Field(description="A full run config, as POST /api/runs takes.")
    grid: dict[GridKey, Annotated[list[Any], Field(min_length=1, max_length=MAX_RUNS)]] = Field(
        min_length=1, max_length=8,
        description='Dotted config keys → values, e.g. {"training.learning_rate": [1e-4, 5e-4], "method.r": [4, 8]}.')


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
