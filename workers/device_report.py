"""A worker reports its device (kind, name, total memory) to the `workers` table when it starts,
then every REPORT_SECONDS from a daemon thread (its heartbeat, idle or busy), and the run it takes
on and finishes. GET /api/workers and the Workers page read those rows.

It also reports the task messages it refused as not signed with its secret key (workers/celery_app.py):
how many and the last when, nothing from the messages themselves (they are unauthenticated). The refusal
only counts in memory and wakes the heartbeat thread, which writes the row within about a second.

A failed report (database down) is logged and retried on the next beat: it never stops training.
"""
import logging
import os
import platform
import threading
import time
from datetime import datetime, timezone

import psutil
import torch

from app.config import get_settings
from app.db import session_scope
from app.worker_status import service
from app.worker_status.service import UNCHANGED
from workers.training.quantization import supported_kinds

log = logging.getLogger(__name__)

REPORT_SECONDS = 30.0
REFUSAL_REPORT_GAP = 1.0  # after a report a refusal woke: a flood of forged messages costs one write a second
_started: set[int] = set()  # pids whose heartbeat thread runs (a forked child starts its own)


class _Refusals:
    """This process's refused task messages: (count, last at). A lock and two fields: the refusal path does
    no I/O, so it stays cheap and no database error can reach it."""

    def __init__(self) -> None:
        self.lock, self.count, self.last = threading.Lock(), 0, None
        self.wake = threading.Event()  # the heartbeat thread reports at once

    def note(self) -> None:
        with self.lock:
            self.count, self.last = self.count + 1, datetime.now(timezone.utc)
        self.wake.set()

    def totals(self) -> tuple[int, datetime | None]:
        with self.lock:
            return self.count, self.last


_refusals = _Refusals()


def _forget_refusals() -> None:
    global _refusals
    _refusals = _Refusals()  # a forked child is another worker (host:pid), with no refusals of its own yet


os.register_at_fork(after_in_child=_forget_refusals)


def note_refusal() -> None:
    """Count a task message this process refused (see workers/celery_app.py); reported within about a second."""
    _refusals.note()


def device_info() -> tuple[dict, int]:
    """({kind, name, quantization, processes}, total memory in bytes) of the device this process trains on
    (one GPU's memory); quantization: the training.quantization kinds bitsandbytes can run on it (probed
    once); processes: the most training.gpus it takes (its GPUs: `--gpus 0,1`; on a CPU worker
    PEFTLAB_CPU_PROCESSES, gloo processes for tests)."""
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return ({"kind": "cuda", "name": props.name, "quantization": list(supported_kinds("cuda")),
                 "processes": torch.cuda.device_count()}, int(props.total_memory))
    name = platform.processor() or platform.machine() or "CPU"
    return ({"kind": "cpu", "name": f"{name} ({psutil.cpu_count(logical=True)} threads)",
             "quantization": list(supported_kinds("cpu")), "processes": get_settings().cpu_processes},
            psutil.virtual_memory().total)


def report(name: str, run_id=UNCHANGED) -> bool:
    """One report now: device, memory, last seen; `run_id` the run taken on (None: finished). False on failure."""
    try:
        device, memory = device_info()
        with session_scope() as session:
            service.record(session, name, device=device, memory_bytes=memory, run_id=run_id,
                           refused=_refusals.totals())
        return True
    except Exception:  # noqa: BLE001 — a report is best effort; the next beat tries again
        log.warning("worker %s: reporting the device failed", name, exc_info=True)
        return False


def start_heartbeat(name_of) -> None:
    """Report now and every REPORT_SECONDS from a daemon thread (once per process). `name_of()`
    gives the worker's name (host:pid) in the process that reports."""
    if os.getpid() in _started:
        return
    _started.add(os.getpid())
    report(name_of())

    def beat() -> None:
        while True:
            woken = _refusals.wake.wait(REPORT_SECONDS)
            _refusals.wake.clear()  # refusals noted from here on wake the next wait
            report(name_of())
            if woken:
                time.sleep(REFUSAL_REPORT_GAP)

    threading.Thread(target=beat, name="device-report", daemon=True).start()
