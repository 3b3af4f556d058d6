from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ColumnOut(BaseModel):
    name: str
    dtype: str


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    format: str
    has_header: bool | None
    num_rows: int
    columns: list[ColumnOut]
    preview: list[dict]
    sha256: str
    size_bytes: int
    created_at: datetime


class RowsOut(BaseModel):
    offset: int
    limit: int
    total: int
    rows: list[dict]
