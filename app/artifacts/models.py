from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow

KINDS = ("adapter", "predictions", "merged", "adapter_last", "checkpoints")
# merged: LoRA weights folded into the base model. adapter: the weights the run ships (the best
# checkpoint's when training.metric_for_best is set); adapter_last: the last weights when they differ;
# checkpoints: the resumable training checkpoints (the last and the best).


class Artifact(Base):
    """A file or directory a run produced, stored under the artifact dir by a relative path we chose."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(500))  # relative to the artifact dir; never user-supplied
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
