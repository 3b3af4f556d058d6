"""The live log tail of a run: what its worker logged while training it, as pages (GET …/logs) or as a
stream (GET …/logs/events) that rides on the run's live feed, so watching it costs no database reads per
viewer."""
import json
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from app.auth.deps import credential_digest
from app.config import get_settings
from app.db import release
from app.logs import service
from app.metrics import live
from app.metrics.live import KEEP_ALIVE_SECONDS
from app.runs.views import DB, RunDep

router = APIRouter(prefix="/api/runs", tags=["logs"])


class LogLineOut(BaseModel):
    seq: int = Field(description="1, 2, … per run: pass the last one seen as `after` to get only newer lines.")
    time: float = Field(description="Unix seconds.")
    level: str = Field(description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    message: str


class LogsOut(BaseModel):
    lines: list[LogLineOut]
    last_seq: int = Field(description="The `after` to ask with next (the newest line's seq, or `after` when none came).")
    max_lines: int = Field(service.MAX_LINES, description="Lines kept per run; later ones are dropped.")


@router.get("/{run_id}/logs", response_model=LogsOut)
def run_logs(run: RunDep, session: DB, after: Annotated[int, Query(ge=0, le=service.MAX_LINES, description="Return lines with a larger seq.")] = 0,
             limit: Annotated[int, Query(ge=1, le=service.MAX_LINES)] = 1000):
    """The run's worker log lines (Python logging records of the training task, INFO and up), oldest
    first. Poll with `after` = the last seq seen for a live tail. The worker writes them about once a
    second, and its last lines just after the run ends."""
    lines = service.lines_after(session, run.id, after, limit)
    return LogsOut(lines=[LogLineOut(seq=l.seq, time=l.time, level=l.level, message=l.message) for l in lines],
                   last_seq=lines[-1].seq if lines else after)


def _start(request: Request, after: int) -> int:
    """Where a stream starts: after the Last-Event-ID it reconnects with (a seq), else after `after`."""
    raw = (request.headers.get("last-event-id") or "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= 9:
        return min(int(raw), service.MAX_LINES)
    return after


END = "event: end\ndata: {}\n\n"


def log_event(p: live.Point, event_id: str | int | None = None) -> str:
    """A log line as an SSE event; its id is its seq unless the stream says otherwise (see metrics.views)."""
    return f"id: {p.id if event_id is None else event_id}\nevent: log\ndata: {p.data}\n\n"



@router.get("/{run_id}/logs/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "log events, then end"}})
async def run_log_events(run: RunDep, request: Request, session: DB,
                         after: Annotated[int, Query(ge=0, le=service.MAX_LINES, description="Send lines with a larger seq.")] = 0):
    """The run's worker log lines as they are written: `event: log` with data {seq, time, level, message}
    and id = seq (reconnecting with Last-Event-ID resumes after it), then `event: end` once the run has
    ended and its last lines are sent. Ends early when the token or browser session that opened it is
    revoked or signed out."""
    seq = _start(request, after)
    run_id, poll_every = run.id, get_settings().sse_poll_seconds
    kind, digest = credential_digest(request) or ("none", "")
    credential = live.Credential(kind, digest)
    await release(session)  # no connection held while the stream waits

    async def stream():
        nonlocal seq
        feed = live.join(run_id, credential, poll_every, logs=True)
        try:
            yield "retry: 2000\n\n"
            last_sent = time.monotonic()
            while True:
                if credential in feed.revoked:
                    return
                if feed.points.ready and feed.state is None:
                    return  # the run was deleted
                feed = live.with_log(feed, credential)
                try:
                    lines, seq = await feed.lines_after(seq)
                except SQLAlchemyError:  # busy or down: stay open, try at the next tick
                    await feed.next_tick(KEEP_ALIVE_SECONDS)
                    continue
                out = [log_event(p) for p in lines]
                if feed.logs_done(seq):
                    yield "".join(out) + END
                    return
                if not out and time.monotonic() - last_sent >= KEEP_ALIVE_SECONDS:
                    out.append(": keep-alive\n\n")
                if out:
                    last_sent = time.monotonic()
                    yield "".join(out)
                if feed.lines.ready and seq < feed.lines.base:
                    continue  # behind the buffer: the next page of the backlog
                await feed.next_tick(KEEP_ALIVE_SECONDS)
        finally:
            live.leave(feed, credential, logs=True)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
