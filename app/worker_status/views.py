"""GET /api/workers and the /workers page: which workers exist, on what device, doing what, and whether
one refuses the server's task messages (another PEFTLAB_SECRET_KEY)."""
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from app.config import Settings, get_settings
from app.runs.views import DB
from app.templating import render
from app.worker_status import service

router = APIRouter(prefix="/api/workers", tags=["workers"])
pages = APIRouter(include_in_schema=False)
Conf = Annotated[Settings, Depends(get_settings)]


class WorkerOut(BaseModel):
    name: str = Field(description="host:pid of the worker process (runs name their worker the same way).")
    device: dict = Field(description="{kind: cpu|cuda, name, quantization}: the device it trains on; quantization lists "
                        "the training.quantization kinds (4bit, 8bit) bitsandbytes can run on it.")
    memory_bytes: int | None = Field(description="The device's total memory (GPU memory, or the host's RAM).")
    last_seen: datetime = Field(description="Its last report: at start, then about every 30 seconds.")
    run_id: int | None = Field(description="The run it is training; null when idle.")
    refused_messages: int = Field(0, description="Task messages this worker process refused because they were not "
                                  "signed with its PEFTLAB_SECRET_KEY (the server that sent them has another key).")
    last_refused_at: datetime | None = Field(None, description="When it refused the last one; null when none.")
    warning: str | None = Field(None, description="What is wrong with this worker now, with the fix (a live worker "
                                "that refused messages recently); null when nothing is.")


@router.get("", response_model=list[WorkerOut])
def list_workers(session: DB, settings: Conf):
    """Every worker that has reported, the most recently seen first. A worker not seen for a few
    minutes has stopped (its row stays, so a host that went away is still visible)."""
    window = service.refusal_window(settings.requeue_after_seconds)
    return [WorkerOut(name=w.name, device=w.device, memory_bytes=w.memory_bytes, last_seen=w.last_seen,
                      run_id=w.run_id, refused_messages=w.refused_messages or 0, last_refused_at=w.last_refused_at,
                      warning=service.refusal_warning(w, window=window)) for w in service.listed(session)]


@pages.get("/workers")
def workers_page(request: Request, session: DB, settings: Conf):
    # Rendered with the page too, so the warning is there before (and without) the script's first load.
    refusals = service.key_refusals(session, requeue_after_seconds=settings.requeue_after_seconds)
    return render(request, "workers.html", "Workers", refusals=refusals)
