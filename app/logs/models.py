from sqlalchemy import Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class RunLogLine(Base):
    """One log line a worker captured while training a run. `seq` counts from 1 per run and is the
    tail's cursor (GET /api/runs/{id}/logs?after=SEQ); (run_id, seq) is the key, so a retried
    write adds nothing twice."""

    __tablename__ = "run_logs"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float)  # unix seconds
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
