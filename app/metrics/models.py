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
