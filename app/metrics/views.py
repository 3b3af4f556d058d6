"""Metric series and the live event stream of a run (Server-Sent Events with replay)."""
import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.config import get_settings
from app.db import get_sessionmaker
from app.metrics import service
from app.metrics.downsample import min_max_buckets
from app.runs.models import TERMINAL, Run
from app.runs.views import DB, RunDep

router = APIRouter(prefix="/api/runs", tags=["metrics"])

# An event id packs (metric cursor, run state version) into one increasing integer, so one
# Last-Event-ID tells the server both which points and which status the client has seen.
VERSION_BITS = 20


class SeriesOut(BaseModel):
    series: dict[str, list[tuple[int, float]]]


def _event_id(cursor: int, version: int) -> int:
    return (cursor << VERSION_BITS) | min(version, (1 << VERSION_BITS) - 1)


def _parse_event_id(raw: str | None) -> tuple[int, int]:
    if not raw or not raw.strip().isascii() or not raw.strip().isdigit() or len(raw.strip()) > 18:
        return 0, -1  # not an id this server sent (those fit in 63 bits): start from the beginning
    value = int(raw.strip())
    return value >> VERSION_BITS, value & ((1 << VERSION_BITS) - 1)


@router.get("/{run_id}/metrics", response_model=SeriesOut)
def get_metrics(run: RunDep, session: DB, names: str | None = Query(None, max_length=2000),
                max_points: Annotated[int, Query(ge=10, le=5000)] = 1000):
    """Series by name, each downsampled to at most max_points (min/max buckets keep spikes)."""
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else None
    data = service.series(session, run.id, wanted)
    return SeriesOut(series={name: min_max_buckets(points, max_points) for name, points in data.items()})


def _poll(run_id: int, cursor: int) -> tuple[list, tuple | None]:
    with get_sessionmaker()() as session:
        points = service.points_after(session, run_id, cursor)
        run = session.get(Run, run_id)
        state = None if run is None else (run.status, run.progress, run.state_version)
        return points, state


def _sse(event: str, event_id: int, data: dict) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/{run_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "metric and status events"}})
async def run_events(run: RunDep, request: Request):
    """Live `metric` and `status` events; reconnecting with Last-Event-ID replays what was missed."""
    cursor, seen_version = _parse_event_id(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))
    run_id, poll_every = run.id, get_settings().sse_poll_seconds

    async def stream():
        nonlocal cursor, seen_version
        yield "retry: 2000\n\n"
        idle = 0.0
        while True:
            points, state = await run_in_threadpool(_poll, run_id, cursor)
            if state is None:
                return
            status, progress, version = state
            for p in points:
                cursor = p.id
                yield _sse("metric", _event_id(cursor, max(seen_version, 0)),
                           {"name": p.name, "step": p.step, "value": p.value, "time": p.time})
            if version != seen_version:
                seen_version = version
                yield _sse("status", _event_id(cursor, version), {"status": status, "progress": progress})
            if status in TERMINAL and not points:
                return  # everything is sent; the client closes or reconnects to nothing new
            if points:
                idle = 0.0
                continue  # more may be waiting: drain before sleeping
            if await request.is_disconnected():
                return
            await asyncio.sleep(poll_every)
            idle += poll_every
            if idle >= 15:
                idle = 0.0
                yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
