from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.runs.schemas import Method


class BaseModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=1000, description="A local model directory or a hub id (org/name).")


class BaseModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    source: str
    architecture: str | None
    num_parameters: int | None
    facts: dict
    created_at: datetime


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["classification", "causal_lm"] = "classification"
    num_labels: int = Field(2, ge=1, le=100_000, description="Classes of the classification head.")
    method: Method


class EstimateOut(BaseModel):
    trainable_params: int
    total_params: int
    percent: float = Field(description="trainable_params / total_params · 100")
    exact: bool = Field(description="False where the count is an estimate (e.g. an architecture the server does not know).")
    note: str
