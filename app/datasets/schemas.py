from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.datasets.scan import clean_text, cut, safe_preview


class ColumnOut(BaseModel):
    name: str
    dtype: str

    @field_validator("name")
    @classmethod
    def _encodable(cls, name: str) -> str:  # a row stored by an older version may hold anything
        return cut(clean_text(name), 256)


class DatasetOut(BaseModel):
    """A dataset in listings: its facts, no rows (the detail view has the preview)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    format: str
    has_header: bool | None
    num_rows: int
    columns: list[ColumnOut]
    sha256: str
    size_bytes: int
    created_at: datetime
    column_names: dict[str, str] | None = Field(
        None, description="Columns the user renamed: {name in the file: name used}; null when none was.")

    @field_validator("name")
    @classmethod
    def _encodable(cls, name: str) -> str:
        return clean_text(name)


class DatasetDetailOut(DatasetOut):
    """One dataset with its first rows, cut to the preview's bounds."""

    preview: list[dict]

    @field_validator("preview", mode="before")
    @classmethod
    def _safe(cls, preview: object) -> list[dict]:
        return safe_preview(preview)


class RowsOut(BaseModel):
    offset: int
    limit: int
    total: int
    rows: list[dict]

    @field_validator("rows", mode="before")
    @classmethod
    def _safe(cls, rows: object) -> list[dict]:
        return rows if isinstance(rows, list) else []


class DatasetUpdate(BaseModel):
    """PATCH /api/datasets/{id}: name the columns (e.g. a headerless CSV's column_1, column_2, …)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    columns: dict[str, Annotated[str, Field(max_length=1000)]] | list[Annotated[str, Field(max_length=1000)]] = Field(
        description="{current name: new name}, or every column's new name in order. Names are unique, not "
                    "empty, at most 200 characters.", max_length=1000)


class ValueCount(BaseModel):
    value: str
    count: int


class DistributionOut(BaseModel):
    column: str
    total_rows: int
    rows_counted: int = Field(description="Rows read; fewer than total_rows when the pass hit its time limit.")
    complete: bool = Field(description="Every row was counted.")
    missing: int = Field(description="Rows without a value in the column (absent, null or empty).")
    distinct: int = Field(description="Distinct values counted (tracking stops at 100,000; `untracked` has the rest).")
    values: list[ValueCount] = Field(description="The most common values, most common first (at most 50), as text.")
    other: int = Field(description="Rows with a value outside `values`.")
    untracked: int = Field(description="Rows whose value came after 100,000 distinct others (included in `other`).")
