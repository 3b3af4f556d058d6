"""Imports every domain's tables so Base.metadata is complete (Alembic, workers)."""
from app.artifacts.models import Artifact
from app.auth.models import ApiToken, BrowserSession, LoginFailure, Project, ProjectMember, User
from app.datasets.models import Dataset
from app.experiments.models import Experiment
from app.inference.models import InferenceRequest
from app.logs.models import RunLogLine
from app.metrics.models import MetricPoint
from app.models.models import BaseModel
from app.notifications.models import Webhook, WebhookDelivery
from app.runs.models import Run, RunTag
from app.worker_status.models import Worker

__all__ = ["ApiToken", "Artifact", "BrowserSession", "LoginFailure", "Project", "ProjectMember", "User", "BaseModel", "Dataset", "Experiment", "InferenceRequest", "MetricPoint", "Run", "RunLogLine", "RunTag",
           "Webhook", "WebhookDelivery", "Worker"]
from app.experiments.search_models import SearchStudy, SearchTrial  # noqa: E402 — search experiments

__all__ += ["SearchStudy", "SearchTrial"]
from app.leases.models import JobLease  # noqa: E402 — which replica runs each periodic job

__all__ += ["JobLease"]
