"""Metric series and the live event stream of a run (Server-Sent Events with replay)."""
import json
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from app.config import get_settings
from app.db import release
from app.auth.deps import credential_digest
from app.logs.views import END, log_event
from app.metrics import downsample, live
from app.metrics.live import KEEP_ALIVE_SECONDS
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
    data = downsample.run_series(session, run.id, sorted(set(wanted)) if wanted else None, max_points)
    return SeriesOut(series={name: [(step, value) for step, value, _ in points] for name, points in data.items()})


def _metric(p: live.Point, event_id: str) -> str:
    return f"id: {event_id}\nevent: metric\ndata: {p.data}\n\n"


def _sse(event: str, event_id: str, data: dict) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _parse_ids(raw: str | None, logs: bool) -> tuple[int, int, int]:
    """(metric cursor, state version, log seq) from a Last-Event-ID. With logs, ids read "EVENT.SEQ": the
    metric stream's own id and the last log line's seq (an id without ".SEQ" resumes the log from its start)."""
    seq = 0
    if logs and raw and "." in raw:
        raw, _, tail = raw.partition(".")
        tail = tail.strip()
        seq = int(tail) if tail.isascii() and tail.isdigit() and len(tail) <= 9 else 0
    cursor, version = _parse_event_id(raw)
    return cursor, version, seq


@router.get("/{run_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "metric and status events"}})
async def run_events(run: RunDep, request: Request, session: DB,
                     logs: Annotated[bool, Query(description="Also the worker's log lines (`event: log`), then `event: end`.")] = False):
    """Live `metric` and `status` events; reconnecting with Last-Event-ID replays what was missed.
    The stream ends when the run has ended, or when the token or browser session that opened it
    is revoked or signed out. `?logs=true` adds the run's worker log lines on the same connection (as
    GET /api/runs/{id}/logs/events sends them): ids then read "EVENT.SEQ", and the stream ends with
    `event: end` once the run's last lines are out."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    cursor, seen_version, seq = _parse_ids(raw, logs)
    run_id, poll_every = run.id, get_settings().sse_poll_seconds
    kind, digest = credential_digest(request) or ("none", "")
    credential = live.Credential(kind, digest)
    # The sign-in check and the run lookup are done: give their connection back before streaming.
    await release(session)

    def eid(point_id: int, version: int) -> str:
        return f"{_event_id(point_id, version)}.{seq}" if logs else str(_event_id(point_id, version))

    async def stream():
        # What one wake-up has to say goes out as one chunk: one write per stream per poll.
        # A client that goes away ends the generator (Starlette cancels it on http.disconnect).
        nonlocal cursor, seen_version, seq
        feed = live.join(run_id, credential, poll_every, logs=logs)
        try:
            yield "retry: 2000\n\n"
            last_sent = time.monotonic()
            while True:
                if credential in feed.revoked:
                    return  # signed out or token revoked: this stream was opened with it
                out: list[str] = []
                if feed.points.ready and not feed.points.covers(cursor):
                    # Behind the feed's buffer (a replay): read the backlog in short sessions.
                    try:
                        backlog = await live.read_backlog(run_id, cursor, feed.points.base)
                    except SQLAlchemyError:  # the database is busy or down: stay open, try at the next tick
                        await feed.next_tick(KEEP_ALIVE_SECONDS)
                        continue
                    for p in backlog:
                        cursor = p.id
                        out.append(_metric(p, eid(p.id, max(seen_version, 0))))
                    if not backlog:
                        cursor = feed.points.base  # nothing stored between: caught up with the buffer
                    if out:
                        last_sent = time.monotonic()
                        yield "".join(out)
                    continue
                if feed.points.ready and feed.state is None:
                    return  # the run was deleted
                if logs:
                    feed = live.with_log(feed, credential)
                done = False
                if feed.points.ready:
                    for p in feed.points.after(cursor):
                        cursor = p.id
                        out.append(_metric(p, eid(p.id, max(seen_version, 0))))
                    status, progress, version = feed.state
                    if version != seen_version:
                        seen_version = version
                        out.append(_sse("status", eid(cursor, version), {"status": status, "progress": progress}))
                    done = feed.final and cursor >= feed.points.cursor
                if logs:
                    try:
                        lines, _ = await feed.lines_after(seq)
                    except SQLAlchemyError:
                        lines = []  # the next tick tries again
                    for line in lines:
                        seq = line.id
                        out.append(log_event(line, eid(cursor, max(seen_version, 0))))
                    behind = feed.lines.ready and seq < feed.lines.base
                    done = done and feed.logs_done(seq)
                    if done:
                        out.append(END)
                if not out and time.monotonic() - last_sent >= KEEP_ALIVE_SECONDS:
                    out.append(": keep-alive\n\n")
                if out:
                    last_sent = time.monotonic()
                    yield "".join(out)
                if done:
                    return  # everything is sent; the client closes or reconnects to nothing new
                if logs and behind:
                    continue  # the next page of the log's backlog
                await feed.next_tick(KEEP_ALIVE_SECONDS)
        finally:
            live.leave(feed, credential, logs=logs)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
