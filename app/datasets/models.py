from datetime import datetime

from sqlalchemy import JSON, ForeignKey, BigInteger, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Who may see it: the project's members (and admins). Nullable only for rows made before auth.
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True, index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(16))
    has_header: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    num_rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list] = mapped_column(JSON)  # [{"name": ..., "dtype": ...}]
    # First rows, as shown on the page; loaded only for the detail view (listings carry none).
    preview: Mapped[list] = mapped_column(JSON, deferred=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    storage_name: Mapped[str] = mapped_column(String(64), unique=True)  # file name inside the upload dir
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Names the user gave the file's columns, {name in the file: name shown}, applied to every row read
    # (PATCH /api/datasets/{id}); `columns` and `preview` already carry the shown names. None: as in the file.
    column_names: Mapped[dict | None] = mapped_column(JSON, nullable=True)
