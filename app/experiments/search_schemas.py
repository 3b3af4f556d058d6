"""The request of a "search" experiment: a base run config, a space over its keys, trials, sampler, pruner.

Checks that need the base config (does the key exist, do both bounds make a valid run) are in
app/experiments/search_space.py; here only what one field says on its own.
"""
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.experiments.plans import MAX_RUNS

SpaceKey = Annotated[str, StringConstraints(pattern=r"^[a-z_]+(\.[a-z_]+){0,3}$", max_length=100)]  # as grid keys

MAX_PARALLELISM = 16
OBJECTIVE_METRICS = ("eval/accuracy", "eval/f1", "eval/loss", "eval/perplexity")
MINIMISED = ("eval/loss", "eval/perplexity")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Range(_Strict):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self


class Uniform(_Range):
    """Any real number between low and high, equally likely."""

    type: Literal["uniform"]


class LogUniform(_Range):
    """A positive real number whose logarithm is uniform: learning rates, weight decays."""

    type: Literal["log_uniform"]

    @model_validator(mode="after")
    def _positive(self):
        if self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0 (got {self.low:g}); use uniform for ranges from 0")
        return self


class Integer(_Strict):
    """A whole number from low to high inclusive, in steps of `step` (or log-spaced when `log`)."""

    type: Literal["integer"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError(f"a log-spaced integer range needs low ≥ 1 (got {self.low})")
        if self.log and self.step != 1:
            raise ValueError("a log-spaced integer range takes no step")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low ({self.high - self.low}) must be a multiple of step ({self.step})")
        return self


Scalar = bool | int | float | str | None


class Choice(_Strict):
    """One of the listed values."""

    type: Literal["choice"]
    choices: list[Scalar] = Field(min_length=2, max_length=32)

    @model_validator(mode="after")
    def _distinct(self):
        seen = [repr((type(c).__name__, c)) for c in self.choices]
        if len(set(seen)) != len(seen):
            raise ValueError("choices must not repeat a value")
        return self


Distribution = Annotated[Uniform | LogUniform | Integer | Choice, Field(discriminator="type")]


class Objective(_Strict):
    metric: Literal[OBJECTIVE_METRICS] = Field(description="An eval metric every trial reports at each evaluation.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: minimize for loss and perplexity, maximize for accuracy and F1.")


class Pruner(_Strict):
    """Stops trials whose intermediate eval metric is worse than the others' at the same step."""

    type: Literal["median", "successive_halving", "none"] = "median"
    startup_trials: int = Field(3, ge=0, le=MAX_RUNS, description="median: trials that finish before any is pruned.")
    warmup_steps: int = Field(0, ge=0, description="median: no pruning before this training step.")
    min_resource: int | None = Field(None, ge=1, description="successive_halving: the training step of the first rung "
                                                             "(null: Optuna's estimate).")
    reduction_factor: int = Field(3, ge=2, le=10, description="successive_halving: 1 in this many trials go up each rung.")


class SearchExperiment(_Strict):
    """Trials of `base` with the space's keys set by Optuna, which picks each trial's values from the
    results so far (TPE) or at random, and prunes trials that fall behind."""

    kind: Literal["search"]
    name: str = Field(min_length=1, max_length=160)
    base: dict[str, Any] = Field(description="A full run config, as POST /api/runs takes.")
    space: dict[SpaceKey, Distribution] = Field(
        min_length=1, max_length=12,
        description='Dotted config keys → distributions, e.g. {"training.learning_rate": {"type": "log_uniform", '
                    '"low": 1e-5, "high": 1e-2}, "method.r": {"type": "integer", "low": 2, "high": 16}}.')
    trials: int = Field(20, ge=1, le=MAX_RUNS, description="How many runs the search makes in all.")
    parallelism: int = Field(2, ge=1, le=MAX_PARALLELISM, description="At most this many trials queued or running at once.")
    objective: Objective | None = Field(None, description="Default: eval/accuracy (maximised) for classification, "
                                                          "eval/loss (minimised) for causal_lm.")
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="The sampler's seed: the same results give the same next trial.")
    startup_trials: int | None = Field(None, ge=1, le=MAX_RUNS, description="tpe: random trials before TPE models "
                                                                          "the results (default: half the trials, at most 10).")
    pruner: Pruner = Field(default_factory=Pruner)

    @model_validator(mode="after")
    def _fits(self):
        if self.parallelism > self.trials:
            raise ValueError(f"parallelism ({self.parallelism}) cannot exceed trials ({self.trials})")
        for key in self.space:
            if key == "name" or key.startswith("name."):
                raise ValueError("the run names come from the experiment; search over something else")
        return self

    def resolved_objective(self) -> tuple[str, str]:
        """(metric, direction): the task's main eval metric when none is given."""
        task = self.base.get("task", "classification")
        metric = self.objective.metric if self.objective else ("eval/loss" if task == "causal_lm" else "eval/accuracy")
        direction = self.objective.direction if self.objective and self.objective.direction else (
            "minimize" if metric in MINIMISED else "maximize")
        return metric, direction

    def resolved_startup_trials(self) -> int:
        return self.startup_trials or max(1, min(10, (self.trials + 1) // 2))


class TrialOut(BaseModel):
    number: int = Field(description="Optuna's trial number, 0 first.")
    run_id: int | None
    state: Literal["queued", "running", "pruned", "done", "failed", "cancelled"] = Field(
        description="done = finished with a value Optuna was told; pruned = stopped early by the pruner "
                    "(its run is cancelled with that reason); cancelled = stopped by a person.")
    params: dict[str, Any]
    value: float | None = Field(description="The objective: the run's final eval metric (done), or its last "
                                            "reported value (pruned).")
    step: int | None = Field(description="The last training step whose eval metric Optuna was told.")
    reason: str | None = None


class SearchOut(BaseModel):
    """GET /api/experiments/{id} → `search` for kind "search"."""

    metric: str
    direction: str
    sampler: str
    pruner: str
    n_trials: int = Field(description="How many trials the search makes in all.")
    parallelism: int
    space: dict[str, dict]
    finished: bool = Field(description="Every trial has ended and no more will be made.")
    best: TrialOut | None = Field(description="The best finished trial so far.")
    trials: list[TrialOut]
    counts: dict[str, int] = Field(description="Trials per state.")
