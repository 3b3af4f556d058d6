from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class MetricPoint(Base):
    """One point of a series. Unique on (run, name, step) so redelivered reports add nothing.

    The id is monotonic and doubles as the live stream's cursor.
    """

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("run_id", "name", "step"),
        Index("ix_metrics_run_id_id", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[float] = mapped_column(Float)  # unix seconds


class MetricRollup(Base):
    """One bucket of one series at one level: steps [bucket·2^level, (bucket+1)·2^level), with how many
    points it holds, its lowest and highest point (ties: the earliest step) and its first and last point,
    each with its real step, value and time.

    Maintained with the points (app/metrics/rollups.py), so a downsampled 100,000-point series is read
    as a few hundred of these instead of scanning every point. On SQLite the rows are stored in key
    order (WITHOUT ROWID): a series' buckets at one level are neighbours on disk.
    """

    __tablename__ = "metric_rollups"
    __table_args__ = {"sqlite_with_rowid": False}

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    min_value: Mapped[float] = mapped_column(Float)
    min_step: Mapped[int] = mapped_column(Integer)
    min_time: Mapped[float] = mapped_column(Float)
    max_value: Mapped[float] = mapped_column(Float)
    max_step: Mapped[int] = mapped_column(Integer)
    max_time: Mapped[float] = mapped_column(Float)
    first_value: Mapped[float] = mapped_column(Float)
    first_step: Mapped[int] = mapped_column(Integer)
    first_time: Mapped[float] = mapped_column(Float)
    last_value: Mapped[float] = mapped_column(Float)
    last_step: Mapped[int] = mapped_column(Integer)
    last_time: Mapped[float] = mapped_column(Float)
