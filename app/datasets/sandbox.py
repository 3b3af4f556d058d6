"""Scanning an upload in a child process that cannot hurt the server.

Parsing an untrusted file can take any amount of memory or time (deep nesting, a gzip bomb, one
huge line, a pathological CSV). So the scan runs in a child process with an address-space cap
(RLIMIT_AS) and a CPU cap (RLIMIT_CPU) set by the child itself, and the parent kills it past a
wall-clock timeout. Whatever happens in there, the server gets back either the scan's result or a
message saying what was wrong — too deep, too large, too slow to read, invalid text.

The child comes from multiprocessing's fork server by default: one small process, started on the
first upload with only this module (and the readers) imported, forks a fresh child per upload —
no interpreter start, no re-import of the app. The result travels back over a pipe as JSON.
"""
import json
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

from app.datasets.reader import DatasetError
from app.datasets.scan import ScanLimits, ScanResult, scan

log = logging.getLogger("peftlab.datasets")

# A reply carries at most the preview (bounded by its limits), columns and a message.
MAX_REPLY_BYTES = 64 * 1024 * 1024
SLOT_WAIT_SECONDS = 60
_lock = threading.Lock()
_semaphores: dict[int, threading.BoundedSemaphore] = {}


class ScannerBusy(Exception):
    """Every scan slot stayed taken while we waited: the server is busy, not the file bad (a 503)."""


class _OutOfTime(Exception):
    pass


def _on_sigxcpu(signum, frame):
    raise _OutOfTime


def _limit_self(memory_bytes: int, cpu_seconds: float) -> None:
    """In the child, before it touches the file: caps it cannot lift, and no files written."""
    # Libraries loaded later (pyarrow, numpy's BLAS) size thread pools and arenas by the host's cores,
    # reserving address space the cap counts; one thread and the plain allocator read the same files.
    os.environ.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", ARROW_DEFAULT_MEMORY_POOL="system",
                      ARROW_IO_THREADS="1", OMP_THREAD_LIMIT="1")
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    cpu = max(1, int(cpu_seconds))
    # SIGXCPU at the soft cap lets the child report "too slow"; SIGKILL a few seconds later if it can't.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.nice(10)  # a long scan yields the CPU to the server's requests


def _messages(limits: dict, memory_bytes: int, cpu_seconds: float) -> dict[str, str]:
    return {
        "memory": f"The file is too large to read within the scanner's memory limit of {memory_bytes / 2**20:,.0f} MB "
                  "(very long lines or cells, or deeply nested values?).",
        "time": f"The file is too slow to read: checking it took longer than {cpu_seconds:g} seconds.",
        "depth": f"The file is nested too deeply (more than {limits['max_depth']} levels of objects/arrays).",
    }


def _child(conn, path: str, filename: str | None, declared: str | None, has_header: bool | None,
           limits: dict, memory_bytes: int, cpu_seconds: float) -> None:
    messages = _messages(limits, memory_bytes, cpu_seconds)
    try:
        _limit_self(memory_bytes, cpu_seconds)
        result = scan(Path(path), filename, declared, has_header, ScanLimits(**limits))
        reply = {"ok": asdict(result)}
    except DatasetError as e:
        reply = {"error": str(e)}
    except MemoryError:
        reply = {"error": messages["memory"]}
    except _OutOfTime:
        reply = {"error": messages["time"]}
    except RecursionError:
        reply = {"error": messages["depth"]}
    except Exception as e:  # noqa: BLE001 — any other failure of a parser is still this file's fault
        reply = {"error": f"The file could not be read: {type(e).__name__}: {str(e)[:300]}"}
    try:
        data = json.dumps(reply, ensure_ascii=True, allow_nan=False).encode()
    except (ValueError, MemoryError, RecursionError) as e:
        data = json.dumps({"error": f"The file's preview could not be stored: {type(e).__name__}."}).encode()
    conn.send_bytes(data)
    conn.close()


def _context(method: str):
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # Children fork from a server that has imported only this module, and the main script once
        # (else multiprocessing runs a script's imports again in every child): no per-upload import cost.
        ctx.set_forkserver_preload(["__main__", "app.datasets.sandbox"])
    return ctx


def _slot(concurrency: int) -> threading.BoundedSemaphore:
    with _lock:
        if concurrency not in _semaphores:
            _semaphores[concurrency] = threading.BoundedSemaphore(concurrency)
        return _semaphores[concurrency]


def _run_child(method: str, args: tuple, filename: str | None, memory: int, seconds: float,
               messages: dict[str, str]) -> bytes:
    """Start the child, wait for its reply up to the wall-clock deadline; kill it in any case."""
    ctx = _context(method)
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, name="peftlab-scan", daemon=True, args=(send, *args))
    child.start()
    send.close()  # the child holds the only write end: EOF means it is gone
    try:
        # Wall clock: CPU time plus slack for a child that waits instead of computing.
        deadline = time.monotonic() + seconds * 1.5 + 5
        while time.monotonic() < deadline:
            if receive.poll(min(1.0, max(0.0, deadline - time.monotonic()))):
                try:
                    return receive.recv_bytes(MAX_REPLY_BYTES)
                except (EOFError, OSError):
                    break  # died without a word
            elif not child.is_alive() and not receive.poll(0):
                break
        timed_out = time.monotonic() >= deadline
        if not timed_out:
            child.join(5)  # it closed the pipe: let it finish dying to read its exit code
        child.kill()
        child.join(5)
        code = child.exitcode
        log.warning("dataset scanner gave no answer on %r (exit code %s, timed out: %s)", filename, code, timed_out)
        if timed_out or code == -signal.SIGXCPU:
            raise DatasetError(messages["time"])
        if code == -signal.SIGKILL:  # the CPU cap's hard limit, or the kernel's OOM killer
            raise DatasetError(f"{messages['time'][:-1]}, or it needed more memory than the scanner's "
                               f"limit of {memory / 2**20:,.0f} MB.")
        raise DatasetError(f"The file is too large or damaged to read: the scanner stopped (exit code {code}) "
                           f"within its memory limit of {memory / 2**20:,.0f} MB.")
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
        child.close()


def scan_file(path: Path, filename: str | None, declared_format: str | None, has_header: bool | None,
              settings) -> ScanResult:
    """scan() in a capped child process; a DatasetError (the 422 message) for anything that went wrong."""
    limits = asdict(ScanLimits.from_settings(settings))
    memory, seconds = settings.scan_memory_bytes, settings.scan_timeout_seconds
    slot = _slot(settings.scan_concurrency)
    # Waiting uploads hold server threads: wait a while, then say "busy" rather than pile up.
    if not slot.acquire(timeout=SLOT_WAIT_SECONDS):
        raise ScannerBusy(f"The server is checking {settings.scan_concurrency} other uploads; try again in a minute.")
    try:
        data = _run_child(settings.scan_start_method,
                          (str(path), filename, declared_format, has_header, limits, memory, seconds),
                          filename, memory, seconds, _messages(limits, memory, seconds))
    finally:
        slot.release()
    reply = json.loads(data)
    if "error" in reply:
        raise DatasetError(reply["error"])
    return ScanResult(**reply["ok"])
