"""Tables of "search" experiments: one study per search (with the lease that lets one server replica
drive it at a time) and one row per trial, linking Optuna's trial to the run that carries it out.

Optuna keeps its own tables (studies, trials, trial_params, ... from its RDB storage) in the same
database; they are created by the migration that made these and are not on Base.metadata.
"""
from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow

# What Optuna has been told about a trial: nothing yet (running), or how it ended.
TRIAL_STATES = ("running", "complete", "pruned", "failed")


class SearchStudy(Base):
    __tablename__ = "search_studies"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    study_name: Mapped[str] = mapped_column(String(120), unique=True)
    # The replica driving the search now, until when: taken and renewed by one guarded UPDATE.
    lease_holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set once every trial has ended and no more will be asked for: the loop skips the search then.
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SearchTrial(Base):
    __tablename__ = "search_trials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # Optuna's trial number (0, 1, ...)
    optuna_trial_id: Mapped[int] = mapped_column(Integer)  # its id in Optuna's storage
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), nullable=True, index=True)
    params: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="running")
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The last training step whose eval metric Optuna was told (-1: none yet).
    reported_step: Mapped[int] = mapped_column(Integer, default=-1)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
