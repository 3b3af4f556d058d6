"""One row per periodic server job (the reaper, the webhook notifier, the search driver): who runs it now."""
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class JobLease(Base):
    """The replica named `holder` runs job `name` until `expires_at`; it renews the row while it lives, and
    any replica may take an expired one, so a replica that dies hands its jobs over within a lease."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
