"""Imports every domain's tables so Base.metadata is complete (Alembic, workers)."""
from app.artifacts.models import Artifact
from app.datasets.models import Dataset
from app.metrics.models import MetricPoint
from app.models.models import BaseModel
from app.runs.models import Run

__all__ = ["Artifact", "BaseModel", "Dataset", "MetricPoint", "Run"]
