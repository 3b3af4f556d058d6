"""Predictions: the server writes a request row, a predict worker answers in the same row.

The server never loads a model; it enqueues `peftlab.predict` on the predict queue and polls
the row (without blocking the event loop) until the worker fills in outputs or an error.
"""
import asyncio
import logging
import time

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.inference.models import InferenceRequest
from app.inference.records import answer, claim  # noqa: F401 — the worker's side, kept free of FastAPI
from app.inference.schemas import PredictRequest
from app.queue import send_predict

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 60.0
# First polls come fast (a warm worker answers in well under a second), later ones slower.
POLL_START, POLL_MAX = 0.05, 0.25


class BrokerUnavailable(RuntimeError):
    pass


def create(session: Session, *, run_id: int, body: PredictRequest) -> int:
    """Store the request and send it to the predict queue; returns its id."""
    row = InferenceRequest(run_id=run_id, status="pending", inputs=body.model_dump()["inputs"],
                           params=body.model_dump(exclude={"inputs"}))
    session.add(row)
    session.commit()
    try:
        send_predict(row.id)
    except Exception as e:  # noqa: BLE001 — whatever the broker says, the caller gets one clear error
        log.exception("could not enqueue prediction %s", row.id)
        session.execute(delete(InferenceRequest).where(InferenceRequest.id == row.id))
        session.commit()
        raise BrokerUnavailable(f"The task queue is not reachable: {e}") from e
    return row.id


def get(session: Session, *, request_id: int) -> InferenceRequest | None:
    return session.get(InferenceRequest, request_id)


def expire(session: Session, request_id: int) -> bool:
    """Give up on a request nobody answered in time: a late worker skips it (its answer is guarded on
    status 'running'), and the user's inputs are not kept (the row is deleted)."""
    result = session.execute(delete(InferenceRequest).where(InferenceRequest.id == request_id))
    session.commit()
    return result.rowcount == 1


def _read_final(request_id: int) -> dict | None:
    """The answer once there is one (then the row is deleted: inputs are the user's text)."""
    with get_sessionmaker()() as session:
        row = session.get(InferenceRequest, request_id)
        if row is None or row.status not in ("succeeded", "failed"):
            return None
        final = {"status": row.status, "outputs": row.outputs, "base_outputs": row.base_outputs, "error": row.error}
        session.delete(row)
        session.commit()
        return final


def _expire(request_id: int) -> None:
    with get_sessionmaker()() as session:
        expire(session, request_id)


async def wait_for_answer(request_id: int, timeout: float = TIMEOUT_SECONDS) -> dict | None:
    """Poll until the worker answers; None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = POLL_START
    while True:
        final = await run_in_threadpool(_read_final, request_id)
        if final is not None:
            return final
        if time.monotonic() >= deadline:
            await run_in_threadpool(_expire, request_id)
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, POLL_MAX)
