"""The per-sample view: every eval row of a few classification runs with each run's prediction."""
from pydantic import BaseModel, Field


class SampleRun(BaseModel):
    id: int
    name: str
    method: str
    accuracy: float | None = Field(None, description="Share of the eval rows this run predicted right.")


class SamplePrediction(BaseModel):
    prediction: str
    correct: bool
    confidence: float | None = Field(None, description="The probability the run gave its prediction.")


class SampleRow(BaseModel):
    row: int = Field(description="Index of the row in its dataset file (the eval dataset, or the split dataset).")
    text: str | None
    text_pair: str | None = None
    label: str
    predictions: list[SamplePrediction | None] = Field(description="One per run, in the order of `runs`; null when that run has no prediction for the row.")


class SamplesOut(BaseModel):
    runs: list[SampleRun]
    eval_set: str = Field(description="Which rows these are, in words.")
    groups: dict[str, list[int]] | None = Field(
        None, description="The two groups of runs (a, b) the a_right_b_wrong / b_right_a_wrong filters compare; null without them.")
    counts: dict[str, int] = Field(description="Rows per filter: all, disagree, all_wrong (and a_right_b_wrong, b_right_a_wrong with groups).")
    total: int = Field(description="Rows that pass the chosen filter.")
    offset: int
    limit: int
    rows: list[SampleRow]


class ClassScores(BaseModel):
    label: str
    precision: float | None = Field(description="Right among the rows predicted as this class; null when none were.")
    recall: float | None = Field(description="Found among the rows of this class; null when the eval set has none.")
    f1: float | None = Field(description="Harmonic mean of precision and recall (0 when the class was never right).")
    support: int = Field(description="Eval rows whose true label is this class.")


class ConfusionOut(BaseModel):
    labels: list[str] = Field(description="Class labels, in the order of the matrix's rows and columns.")
    matrix: list[list[int]] = Field(description="matrix[i][j]: eval rows of true class labels[i] predicted as labels[j].")
    per_class: list[ClassScores]
    total: int = Field(description="Eval rows counted.")
    accuracy: float | None
