from datetime import datetime

from pydantic import BaseModel, ConfigDict, field_validator

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
