"""Webhooks per project (API; the Settings page drives it). Members see them; owners (and admins) change them."""
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.deps import Viewer
from app.auth.models import Project
from app.config import Settings, get_settings
from app.db import get_db
from app.ids import Id
from app.notifications import service
from app.notifications.targets import refusal
from app.notifications.schemas import WebhookCreate, WebhookOut, WebhookTestOut

router = APIRouter(prefix="/api/projects/{project_id}/webhooks", tags=["notifications"])
DB = Annotated[Session, Depends(get_db)]


def _role(session: Session, user, project_id: int) -> str:
    role = auth_service.role_in(session, user=user, project_id=project_id)
    if role is None and not user.is_admin:
        raise HTTPException(404, f"Project {project_id} not found.")
    if role is None and session.get(Project, project_id) is None:
        raise HTTPException(404, f"Project {project_id} not found.")
    return role or "admin"


def _may_change(session: Session, user, project_id: int) -> None:
    if _role(session, user, project_id) not in ("owner", "admin"):
        raise HTTPException(403, "Only the project's owner can change its webhooks.")


def _hook_or_404(session: Session, project_id: int, webhook_id: int):
    hook = service.get(session, project_id=project_id, webhook_id=webhook_id)
    if hook is None:
        raise HTTPException(404, f"Webhook {webhook_id} not found.")
    return hook


@router.get("", response_model=list[WebhookOut])
def list_webhooks(project_id: Id, user: Viewer, session: DB):
    _role(session, user, project_id)
    return service.list_for(session, project_id=project_id)


@router.post("", status_code=201, response_model=WebhookOut)
def create_webhook(project_id: Id, body: WebhookCreate, user: Viewer, session: DB,
                   settings: Annotated[Settings, Depends(get_settings)]):
    """Announce the project's runs that end from now on (finished / failed / cancelled) to this URL."""
    _may_change(session, user, project_id)
    if reason := refusal(body.url, allow_private=settings.webhook_private_hosts, unresolvable_ok=True):
        raise HTTPException(422, f"url: {reason}")
    hook = service.create(session, project_id=project_id, body=body, user_id=user.id)
    return WebhookOut.model_validate(hook)


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(project_id: Id, webhook_id: Id, user: Viewer, session: DB):
    _may_change(session, user, project_id)
    service.delete(session, hook=_hook_or_404(session, project_id, webhook_id))


@router.post("/{webhook_id}/test", response_model=WebhookTestOut)
async def test_webhook(project_id: Id, webhook_id: Id, user: Viewer, session: DB,
                       settings: Annotated[Settings, Depends(get_settings)]):
    """Send a test message now; the answer says whether the receiver took it."""
    _may_change(session, user, project_id)
    hook = _hook_or_404(session, project_id, webhook_id)
    project = session.get(Project, project_id)
    ok, status, error = await run_in_threadpool(service.send_test, hook, project_name=project.name, settings=settings)
    return WebhookTestOut(ok=ok, status=status, error=error)
