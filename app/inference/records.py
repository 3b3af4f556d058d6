"""The predict worker's side of a prediction request row: claim it, then answer it.

Kept apart from app/inference/service.py (which waits on the row inside FastAPI's thread pool)
so the worker imports no web layer.
"""
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.inference.models import InferenceRequest


def claim(session: Session, request_id: int) -> bool:
    """Worker: pending → running, once. False when expired, taken or gone."""
    result = session.execute(update(InferenceRequest)
                             .where(InferenceRequest.id == request_id, InferenceRequest.status == "pending")
                             .values(status="running"))
    session.commit()
    return result.rowcount == 1


def answer(session: Session, request_id: int, *, outputs: list[dict] | None = None,
           base_outputs: list[dict] | None = None, error: str | None = None) -> None:
    """Worker: the outputs, or the reason there are none."""
    session.execute(update(InferenceRequest)
                    .where(InferenceRequest.id == request_id, InferenceRequest.status == "running")
                    .values(status="failed" if error else "succeeded", outputs=outputs,
                            base_outputs=base_outputs, error=error, finished_at=utcnow()))
    session.commit()
