from datetime import datetime

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Who may see it: the project's members (and admins). Nullable only for rows made before auth.
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), nullable=True, index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    config: Mapped[dict] = mapped_column(JSON)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    eval_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"), nullable=True)
    base_model: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32), index=True)
    task: Mapped[str] = mapped_column(String(32))
    # Worker lease: who holds the run and until when; renewed by heartbeats.
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Bumped by every status/progress change; live streams use it to know what they have sent.
    state_version: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Queue order: queued runs start by (COALESCE(priority, id), id), so NULL means "in id order";
    # moving a run renumbers the queue 1..N (app/runs/queue_order.py).
    priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The experiment (group of runs launched together) this run belongs to, if any.
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id", ondelete="SET NULL"),
                                                      nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Free text the user keeps with the run (what was tried, why it matters).
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    # A table of its own, not a JSON column, so "runs tagged X" is an indexed query on every database.
    tag_rows: Mapped[list["RunTag"]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True, lazy="selectin", order_by="RunTag.tag")

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]


class RunTag(Base):
    """One short label on a run (e.g. "baseline", "sweep-lr")."""

    __tablename__ = "run_tags"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)
    run: Mapped[Run] = relationship(back_populates="tag_rows")
