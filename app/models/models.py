from datetime import datetime

from sqlalchemy import JSON, BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class BaseModel(Base):
    """A base model users can fine-tune: a local directory or a hub id."""

    __tablename__ = "base_models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(1000))
    architecture: Mapped[str | None] = mapped_column(String(100), nullable=True)
    num_parameters: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Facts from config.json the UI needs without loading weights (model_type, hidden_size, layers).
    facts: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
