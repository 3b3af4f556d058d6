"""GET /api/workers and the /workers page: which workers exist, on what device, doing what."""
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.runs.views import DB
from app.templating import render
from app.worker_status import service

router = APIRouter(prefix="/api/workers", tags=["workers"])
pages = APIRouter(include_in_schema=False)


class WorkerOut(BaseModel):
    name: str = Field(description="host:pid of the worker process (runs name their worker the same way).")
    device: dict = Field(description="{kind: cpu|cuda, name, quantization}: the device it trains on; quantization lists "
                        "the training.quantization kinds (4bit, 8bit) bitsandbytes can run on it.")
    memory_bytes: int | None = Field(description="The device's total memory (GPU memory, or the host's RAM).")
    last_seen: datetime = Field(description="Its last report: at start, then about every 30 seconds.")
    run_id: int | None = Field(description="The run it is training; null when idle.")


@router.get("", response_model=list[WorkerOut])
def list_workers(session: DB):
    """Every worker that has reported, the most recently seen first. A worker not seen for a few
    minutes has stopped (its row stays, so a host that went away is still visible)."""
    return [WorkerOut(name=w.name, device=w.device, memory_bytes=w.memory_bytes, last_seen=w.last_seen,
                      run_id=w.run_id) for w in service.listed(session)]


@pages.get("/workers")
def workers_page(request: Request):
    return render(request, "workers.html", "Workers")
