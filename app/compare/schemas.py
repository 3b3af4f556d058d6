"""The compare API's response, for /openapi.json: the route itself returns compact JSON directly,
because validating tens of thousands of points costs more than computing them."""
from typing import Literal

from pydantic import BaseModel

XAxis = Literal["step", "epoch", "time"]


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


class CompareOut(BaseModel):
    x: XAxis
    runs: list[ComparedRun]
    series: dict[str, dict[str, list[tuple[float, float | None]]]]
    config_diff: list[DiffRow]
