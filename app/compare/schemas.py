"""The compare API's response, for /openapi.json: the route itself returns compact JSON directly,
because validating tens of thousands of points costs more than computing them."""
from typing import Literal

from pydantic import BaseModel, Field

XAxis = Literal["step", "epoch", "time"]
EvalMetric = Literal["eval/accuracy", "eval/f1", "eval/loss", "eval/perplexity"]


class ComparedRun(BaseModel):
    id: int
    name: str
    method: str
    status: str
    task: str
    base_model: str
    color_index: int
    config: dict
    summary: dict
    tags: list[str]
    created_at: str
    started_at: str | None
    finished_at: str | None


class DiffRow(BaseModel):
    key: str
    values: dict[str, object]


class Interval(BaseModel):
    mean: float | None
    ci_low: float | None = Field(description="95% confidence interval (Student's t over seeds); null for one seed.")
    ci_high: float | None
    n: int = Field(description="Seeds that have the number.")
    std: float | None = Field(description="Sample standard deviation over seeds; null for one seed.")
    min: float | None
    max: float | None


class RunGroup(BaseModel):
    run_ids: list[int]
    label: str
    seeds: list[int | None] = Field(description="training.seed of each run, in the order of run_ids.")
    trainable_params: int | None
    metrics: dict[str, Interval] = Field(description='Final evaluation (the runs\' summaries): {"eval/accuracy": {...}, ...}.')
    best_metrics: dict[str, Interval] = Field(description="The best of every evaluation of each run (highest accuracy/F1, lowest loss/perplexity).")


class GroupDifference(BaseModel):
    metric: EvalMetric
    a: int = Field(description="Index in groups of the better group (by mean).")
    b: int = Field(description="Index in groups of the other one.")
    a_label: str
    b_label: str
    difference: float = Field(description="How much better a is than b in the metric's units (lower, for loss and perplexity); ≥ 0.")
    ci_low: float = Field(description="95% interval of the difference.")
    ci_high: float
    p_value: float = Field(description="Two-sided p-value of 'no difference'.")
    test: Literal["welch", "paired"] = Field(description="paired: both groups ran the same seeds on the same eval rows.")
    df: float
    n_a: int
    n_b: int
    distinguishable: bool = Field(description="p < 0.05.")
    text: str = Field(description="The finding in words.")


class CompareOut(BaseModel):
    x: XAxis
    runs: list[ComparedRun]
    series: dict[str, dict[str, list[tuple[float, float | None]]]]
    config_diff: list[DiffRow]
    groups: list[RunGroup] = Field(description="Runs that differ only by seed (training.seed, eval_split_seed), each run in one group.")
    metric: EvalMetric | None = Field(description="The metric of `differences`.")
    differences: list[GroupDifference] = Field(description="Every two groups with at least two seeds each that have the metric.")
