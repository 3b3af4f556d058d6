"""Webhooks: per project, a message when one of its runs ends, sent by the server's notifier (an outbox).

The notifier never runs in a worker, so a slow or dead receiver cannot hold up training. Each round it
(1) turns every run that ended since a webhook was made into a pending delivery row (unique per webhook and
run, so replicas never announce twice), (2) claims a due delivery with a guarded UPDATE, (3) POSTs it and
records the answer; a failure is retried later with exponential backoff, up to a limit.
"""
import logging
import time
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.auth.models import Project
from app.config import Settings
from app.db import utcnow
from app.notifications.models import Webhook, WebhookDelivery
from app.notifications.schemas import WebhookCreate, WebhookOut
from app.notifications.targets import refusal
from app.runs.models import Run

log = logging.getLogger("peftlab")
ENDINGS = {"succeeded": "run.succeeded", "failed": "run.failed", "cancelled": "run.cancelled"}


# ---- configuration --------------------------------------------------------------------------

def create(session: Session, *, project_id: int, body: WebhookCreate, user_id: int | None) -> Webhook:
    hook = Webhook(project_id=project_id, url=body.url, events=body.events, created_by=user_id)
    session.add(hook)
    session.commit()
    return hook


def get(session: Session, *, project_id: int, webhook_id: int) -> Webhook | None:
    hook = session.get(Webhook, webhook_id)
    return hook if hook is not None and hook.project_id == project_id else None


def list_for(session: Session, *, project_id: int) -> list[WebhookOut]:
    """The project's webhooks, each with how its latest delivery went."""
    hooks = list(session.scalars(select(Webhook).where(Webhook.project_id == project_id).order_by(Webhook.id)))
    out = []
    for hook in hooks:
        last = session.scalar(select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id,
                                                            WebhookDelivery.attempts > 0)
                              .order_by(WebhookDelivery.id.desc()).limit(1))
        out.append(WebhookOut(id=hook.id, project_id=hook.project_id, url=hook.url, events=hook.events,
                              created_at=hook.created_at, last_status=last.last_status if last else None,
                              last_error=last.last_error if last else None,
                              last_delivered_at=last.delivered_at if last else None))
    return out


def delete(session: Session, *, hook: Webhook) -> None:
    session.delete(hook)
    session.commit()


# ---- the message ----------------------------------------------------------------------------

def _duration(run: Run) -> str:
    if not (run.started_at and run.finished_at):
        return ""
    seconds = int((run.finished_at - run.started_at).total_seconds())
    return f"{seconds // 3600}h {seconds % 3600 // 60}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60}s"


def message(run: Run, event: str, *, project_name: str, public_url: str) -> dict:
    """{"text": one line any Slack-compatible tool shows, plus the same facts as fields for programs}."""
    url = f"{public_url.rstrip('/')}/runs/{run.id}"
    evaluation = {k: v for k, v in ((run.summary or {}).get("eval") or {}).items() if v is not None}
    facts = [f"{run.method} on {run.base_model}"]
    facts += [f"{k} {v:.4g}" for k, v in evaluation.items() if k in ("accuracy", "f1", "perplexity")][:2]
    if duration := _duration(run):
        facts.append(duration)
    text = f'Run {run.id} "{run.name}" in {project_name} {run.status}'
    text += f": {run.error}" if run.status == "failed" and run.error else f" ({', '.join(facts)})"
    return {"text": f"{text} {url}", "event": event, "project": {"id": run.project_id, "name": project_name},
            "run": {"id": run.id, "name": run.name, "status": run.status, "method": run.method,
                    "base_model": run.base_model, "task": run.task, "error": run.error, "url": url,
                    "started_at": run.started_at.isoformat() if run.started_at else None,
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "summary": run.summary or {}}}


def send_seconds(settings: Settings) -> float:
    """The longest one send may take: the name resolved twice (the delivery check, then the connection; the
    system resolver gives up within about 30 s each), then connect, write and the answer, each within
    webhook_timeout_seconds, with the answer's body read only until its own deadline."""
    return 60 + 4 * settings.webhook_timeout_seconds


def send(url: str, payload: dict, settings: Settings) -> tuple[bool, int | None, str | None]:
    """(delivered, HTTP status, error): any 2xx counts as delivered. Takes at most send_seconds()."""
    if reason := refusal(url, allow_private=settings.webhook_private_hosts, unresolvable_ok=False):
        return False, None, f"not sent: {reason}"
    body = b""
    try:
        with httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as client, \
                client.stream("POST", url, json=payload, headers={"User-Agent": "peftlab-webhook"}) as res:
            # Only the start of the answer matters (for the error text); a receiver that trickles an endless
            # body cannot keep the send going past the deadline.
            deadline = time.monotonic() + settings.webhook_timeout_seconds
            for chunk in res.iter_bytes():
                body += chunk
                if len(body) >= 1000 or time.monotonic() > deadline:
                    break
    except httpx.HTTPError as e:
        return False, None, f"{type(e).__name__}: {e}"[:500]
    if 200 <= res.status_code < 300:
        return True, res.status_code, None
    return False, res.status_code, f"HTTP {res.status_code}: {body.decode(errors='replace')[:200]}"


def send_test(hook: Webhook, *, project_name: str, settings: Settings) -> tuple[bool, int | None, str | None]:
    payload = {"text": f"peftlab: test message for {project_name}; runs that end will be announced here.",
               "event": "test", "project": {"id": hook.project_id, "name": project_name}}
    return send(hook.url, payload, settings)


# ---- the notifier ---------------------------------------------------------------------------

def _insert_ignore(session: Session):
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(WebhookDelivery)


def enqueue_endings(session: Session, *, limit: int = 500) -> int:
    """Pending deliveries for runs that ended after their project's webhooks were made. Returns how many."""
    rows = session.execute(
        select(Webhook.id, Webhook.events, Run.id, Run.status)
        .join(Run, and_(Run.project_id == Webhook.project_id, Run.status.in_(list(ENDINGS)),
                        Run.finished_at >= Webhook.created_at))
        .where(~exists().where(WebhookDelivery.webhook_id == Webhook.id, WebhookDelivery.run_id == Run.id))
        .limit(limit)).all()
    # Endings the webhook does not want are recorded as skipped, so they are not looked at again.
    values = [{"webhook_id": hook_id, "run_id": run_id, "event": ENDINGS[status], "attempts": 0,
               "state": "pending" if ENDINGS[status] in events else "skipped", "next_attempt_at": utcnow(),
               "created_at": utcnow()} for hook_id, events, run_id, status in rows]
    if values:
        stmt = _insert_ignore(session).values(values).on_conflict_do_nothing(index_elements=["webhook_id", "run_id"])
        session.execute(stmt)
        session.commit()
    return sum(1 for v in values if v["state"] == "pending")


def _claim_next(session: Session, now: datetime, until: datetime) -> int | None:
    """Claim one due delivery until `until` with a guarded UPDATE (a concurrent claimer's UPDATE matches
    nothing once this one committed); its id, or None when none is due."""
    while True:
        delivery_id = session.scalar(select(WebhookDelivery.id).where(WebhookDelivery.state == "pending",
                                                                       WebhookDelivery.next_attempt_at <= now)
                                     .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(1))
        session.rollback()  # end the read before writing (SQLite)
        if delivery_id is None:
            return None
        res = session.execute(update(WebhookDelivery)
                              .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
                                     WebhookDelivery.next_attempt_at <= now)
                              .values(next_attempt_at=until))
        session.commit()
        if res.rowcount == 1:
            return delivery_id


def deliver_due(session: Session, settings: Settings, *, limit: int = 50) -> int:
    """Send due deliveries, each at most once per claim; returns how many were delivered.

    Replicas never send one delivery twice: each is claimed just before its send, for twice the longest a
    send can take (send_seconds), and a replica that finds its claim nearer its end than that (it stalled)
    leaves the delivery to the next claim instead of sending. What a send ended with is written only while
    the claim is still this replica's. A replica that dies between a send and that write leaves the delivery
    to be sent again after the claim (at least once, never twice while both live)."""
    delivered = 0
    bound = timedelta(seconds=send_seconds(settings))
    for _ in range(limit):
        claimed_until = utcnow() + 2 * bound
        delivery_id = _claim_next(session, utcnow(), claimed_until)
        if delivery_id is None:
            break
        delivery = session.get(WebhookDelivery, delivery_id)
        hook = session.get(Webhook, delivery.webhook_id) if delivery else None
        run = session.get(Run, delivery.run_id) if delivery else None
        if hook is None or run is None:  # deleted meanwhile (the cascade takes the row too)
            continue
        project = session.get(Project, hook.project_id)
        payload = message(run, delivery.event, project_name=project.name if project else f"project {hook.project_id}",
                          public_url=settings.resolved_public_url)
        attempts = delivery.attempts + 1
        session.commit()  # no transaction (nor SQLite lock) held while waiting for the receiver
        if utcnow() + bound > claimed_until:
            log.warning("webhook delivery %s: claim too close to its end to send (this replica stalled); "
                        "left to the next claim", delivery_id)
            continue
        ok, status, error = send(hook.url, payload, settings)
        values = {"attempts": attempts, "last_status": status, "last_error": error}
        if ok:
            values |= {"state": "delivered", "delivered_at": utcnow()}
            delivered += 1
        elif attempts >= settings.webhook_max_attempts:
            values |= {"state": "gave_up"}
        else:
            backoff = settings.webhook_retry_seconds * 2 ** (attempts - 1)
            values |= {"next_attempt_at": utcnow() + timedelta(seconds=backoff)}
        res = session.execute(update(WebhookDelivery)
                              .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
                                     WebhookDelivery.next_attempt_at == claimed_until)
                              .values(**values))
        session.commit()
        if res.rowcount != 1:
            log.warning("webhook delivery %s: its claim ran out during the send; the outcome is not recorded",
                        delivery_id)
    return delivered


def notify_round(session: Session, settings: Settings) -> int:
    enqueue_endings(session)
    return deliver_due(session, settings)


def deliveries_of(session: Session, *, webhook_id: int) -> list[WebhookDelivery]:
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
                                .order_by(WebhookDelivery.id)))

