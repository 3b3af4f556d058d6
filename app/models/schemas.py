from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


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
