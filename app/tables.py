"""Imports every domain's tables so Base.metadata is complete (Alembic, workers)."""
from app.artifacts.models import Artifact
from app.auth.models import ApiToken, BrowserSession, LoginFailure, Project, ProjectMember, User
from app.datasets.models import Dataset
from app.inference.models import InferenceRequest
from app.metrics.models import MetricPoint
from app.models.models import BaseModel
from app.runs.models import Run

__all__ = ["ApiToken", "Artifact", "BrowserSession", "LoginFailure", "Project", "ProjectMember", "User", "BaseModel", "Dataset", "InferenceRequest", "MetricPoint", "Run"]
