from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class Worker(Base):
    """A training worker process as it last reported itself: its device, total memory, when it was
    last seen (at start, then every heartbeat), the run it is training (null when idle) and the task
    messages it refused as not signed with its secret key (how many, the last when)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # host:pid, as runs.worker holds it
    device: Mapped[dict] = mapped_column(JSON)  # {kind: cpu|cuda, name}
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the device's total memory
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True)
    # Counted by the worker process, nothing else: a refused message is unauthenticated, so none of its
    # content (such as a run id) is kept.
    refused_messages: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_refused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
