from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow

# pending → running → succeeded | failed; a request nobody answered in time is deleted (the server
# stops waiting; a late worker finds no row, or a row no longer 'running', and writes nothing).
STATUSES = ("pending", "running", "succeeded", "failed")


class InferenceRequest(Base):
    """One "Try it" call: the server writes the inputs, a predict worker fills in the outputs."""

    __tablename__ = "inference_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    inputs: Mapped[list] = mapped_column(JSON)
    # compare_base, max_new_tokens, temperature
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    outputs: Mapped[list | None] = mapped_column(JSON, nullable=True)
    base_outputs: Mapped[list | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
