"""The live log tail of a run: what its worker logged while training it."""
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.logs import service
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
