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
    counts: dict[str, int] = Field(description="Rows per filter: all, disagree, all_wrong.")
    total: int = Field(description="Rows that pass the chosen filter.")
    offset: int
    limit: int
    rows: list[SampleRow]
