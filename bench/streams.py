"""Many live streams on one run beside API readers: does every stream open and keep receiving, and
does the API stay quick?

    .venv/bin/python bench/streams.py                                      # embedded default (SQLite)
    .venv/bin/python bench/streams.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Starts a throwaway `peftlab serve` (on PostgreSQL: in a fresh database it creates and drops on that
server), makes one running run and writes its points straight to the database as a worker would
(--metrics points every --write-every seconds, a progress update every second). Opens --streams
/api/runs/{id}/events streams and runs --readers API readers, each asking GET /api/runs every
--reader-interval seconds. The streams are held by a child process (their client-side work must not
delay the readers). Once every stream is open, the steady state is measured for --seconds. Prints
one JSON line: how many streams opened and were still receiving at the end, GET /api/runs p50/p95/max
in the steady state (and p95 without streams and while they open, for comparison on a busy
machine), the server's CPU use and RSS growth from before the streams to the end.
Goals: every stream opens and keeps receiving, p95 < 300 ms, RSS growth < 100 MB.
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stack import peftlab  # noqa: E402


def fresh_postgres(url: str) -> tuple[str, callable]:
    import sqlalchemy as sa

    name = f"peftlab_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False), drop


def make_live_run() -> int:
    """A running run of the bench admin's (the dataset row has no file: nothing reads it)."""
    import app.tables  # noqa: F401 — every table, so foreign keys resolve
    from app.auth import service as auth
    from app.datasets.models import Dataset
    from app.db import reset_caches, session_scope
    from app.runs.models import Run

    reset_caches()
    with session_scope() as s:
        user = auth.get_user_by_name(s, username="bench")
        project = auth.default_project_id(s, user=user)
        ds = Dataset(name="bench", format="csv", has_header=True, num_rows=1, columns=[{"name": "text", "dtype": "str"}],
                     preview=[], sha256="0" * 64, size_bytes=1, storage_name=f"bench-{uuid.uuid4().hex}",
                     project_id=project, owner_id=user.id)
        s.add(ds)
        s.flush()
        run = Run(name="live bench run", status="running", config={}, summary={}, dataset_id=ds.id, base_model="minilm-l6",
                  method="lora", task="classification", project_id=project, owner_id=user.id, state_version=1)
        s.add(run)
        s.flush()
        return run.id


def live_run_parser(doc: str) -> argparse.ArgumentParser:
    """The live-run benches' command line: their docstring as help, and --database-url."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None, help="PostgreSQL server URL (a fresh database is made on it); default SQLite")
    return parser


def bench_live_run(args, extra: dict, measure, report) -> None:
    """Start a throwaway `peftlab serve` with the settings `extra` (on args.database_url's PostgreSQL
    server: in a fresh database made there and dropped at the end; else SQLite in a temporary data dir),
    make one running run, measure(url, headers, run_id, args, server process) while the server is up, and
    print one JSON line once it has stopped: the database, then report(args, that result)."""
    drop = None
    extra = dict(extra)
    if args.database_url:
        extra["PEFTLAB_DATABASE_URL"], drop = fresh_postgres(args.database_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            with peftlab(data_dir, "serve", extra_env=extra) as (url, proc, headers):
                os.environ.update({"PEFTLAB_DATA_DIR": str(data_dir), **extra})
                result = measure(url, headers, make_live_run(), args, psutil.Process(proc.pid))
        print(json.dumps({"database": "postgresql" if args.database_url else "sqlite", **report(args, result)}))
    finally:
        if drop:
            from app.db import get_engine

            get_engine().dispose()
            drop()


class Writer(threading.Thread):
    """Plays the worker: points every `every` seconds, a progress update (state_version bump) every second."""

    def __init__(self, run_id: int, metrics: int, every: float):
        super().__init__(daemon=True)
        self.run_id, self.metrics, self.every = run_id, metrics, every
        self.step = 0
        self.written_at: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self):
        from sqlalchemy import update

        from app.db import session_scope
        from app.metrics.service import record_points
        from app.runs.models import Run

        last_progress = 0.0
        while not self.stop.is_set():
            self.step += 1
            with session_scope() as s:
                record_points(s, self.run_id, [(f"train/m{i}", self.step, 1.0 / self.step) for i in range(self.metrics)])
                if time.monotonic() - last_progress >= 1:
                    last_progress = time.monotonic()
                    s.execute(update(Run).where(Run.id == self.run_id).values(
                        progress=min(self.step / 100000, 0.99), state_version=Run.state_version + 1))
            self.written_at[self.step] = time.monotonic()
            self.stop.wait(self.every)


class Stream:
    def __init__(self):
        self.status = None
        self.opened_after: float | None = None
        self.events = 0
        self.last_step = 0
        self.error: str | None = None

    async def read(self, client: httpx.AsyncClient, run_id: int, started: float):
        try:
            async with client.stream("GET", f"/api/runs/{run_id}/events") as res:
                self.status = res.status_code
                async for line in res.aiter_lines():
                    if line.startswith("event:") and self.opened_after is None:
                        self.opened_after = time.monotonic() - started
                    elif line.startswith("data:") and '"step"' in line:
                        self.events += 1
                        self.last_step = max(self.last_step, json.loads(line[5:])["step"])
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 — counted and reported, not fatal to the bench
            self.error = f"{type(e).__name__}: {e}"


def read_runs(url: str, headers: dict, interval: float, stop: threading.Event, timings: list, errors: list) -> None:
    """One API reader: GET /api/runs every `interval` seconds on its own connection, until `stop`.
    Readers are threads with blocking clients: httpx's async client, shared by 20 concurrent
    requests, adds its own queueing (measured here: p50 750 ms against 40-110 ms with threads)."""
    with httpx.Client(base_url=url, headers=headers, timeout=120.0) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                res = client.get("/api/runs")
                timings.append(time.monotonic() - start) if res.status_code == 200 else errors.append(res.status_code)
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
            stop.wait(max(0.0, interval - (time.monotonic() - start)))


class Readers:
    """`count` reader threads, started on entry and stopped on exit."""

    def __init__(self, url: str, headers: dict, count: int, interval: float):
        self.stop, self.timings, self.errors = threading.Event(), [], []
        self.threads = [threading.Thread(target=read_runs, args=(url, headers, interval, self.stop, self.timings, self.errors))
                        for _ in range(count)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def hold_streams(url: str, headers: dict, run_id: int, count: int, pipe) -> None:
    """Child process: open `count` streams, say when all are open, read until told to stop, report.
    Streams live in their own process so that their client-side work does not delay the readers."""
    async def go():
        limits = httpx.Limits(max_connections=count + 5, max_keepalive_connections=count + 5)
        async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=httpx.Timeout(120.0, connect=60.0)) as client:
            started = time.monotonic()
            streams = [Stream() for _ in range(count)]
            tasks = [asyncio.create_task(s.read(client, run_id, started)) for s in streams]
            while time.monotonic() < started + 120 and not all(
                    s.opened_after is not None or s.error or s.status not in (None, 200) for s in streams):
                await asyncio.sleep(0.1)
            pipe.send(time.monotonic() - started)
            await asyncio.to_thread(pipe.recv)  # stop
            report = [(s.status, s.opened_after, s.events, s.last_step, s.error) for s in streams]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            pipe.send(report)
    asyncio.run(go())


def p95(values: list[float]) -> float | None:
    return round(sorted(values)[int(0.95 * (len(values) - 1))] * 1000, 1) if values else None


def measure(url: str, headers: dict, run_id: int, args, server: psutil.Process) -> dict:
    """Readers and streams on the run while a Writer plays its worker."""
    writer = Writer(run_id, args.metrics, args.write_every)
    writer.start()
    try:
        return measure_steady_state(url, headers, run_id, args, server, writer)
    finally:
        writer.stop.set()
        writer.join()


def measure_steady_state(url: str, headers: dict, run_id: int, args, server: psutil.Process, writer: Writer) -> dict:
    rss_before = server.memory_info().rss
    rss_peak = rss_before
    # Baseline on this machine as it is now: the same readers without any stream.
    with Readers(url, headers, args.readers, args.reader_interval) as quiet:
        time.sleep(5)

    # Open every stream (readers keep reading meanwhile), then measure the steady state.
    spawn = multiprocessing.get_context("spawn")
    here, there = spawn.Pipe()
    holder = spawn.Process(target=hold_streams, args=(url, headers, run_id, args.streams, there), daemon=True)
    holder.start()
    with Readers(url, headers, args.readers, args.reader_interval) as opening:
        open_seconds = here.recv()

    cpu_before = server.cpu_times()
    steady = time.monotonic()
    with Readers(url, headers, args.readers, args.reader_interval) as readers:
        while time.monotonic() < steady + args.seconds:
            time.sleep(0.5)
            rss_peak = max(rss_peak, server.memory_info().rss)
    cpu, elapsed = server.cpu_times(), time.monotonic() - steady
    # "Keeps receiving": every stream has the step written 3 s before the end (six poll intervals).
    cutoff = max((step for step, at in writer.written_at.items() if at <= time.monotonic() - 3), default=0)
    here.send("stop")
    report = here.recv()
    holder.join(30)
    ms = sorted(t * 1000 for t in readers.timings)
    return {
        "streams": args.streams, "streams_opened": sum(1 for st, opened, *_ in report if st == 200 and opened is not None),
        "streams_receiving_at_end": sum(1 for *_, last, _err in report if last >= cutoff > 0),
        "stream_http_errors": sorted({st for st, *_ in report if st not in (200, None)}),
        "stream_errors": sorted({err for *_, err in report if err})[:5],
        "all_streams_open_after_s": round(open_seconds, 1),
        "metric_events_received": sum(r[2] for r in report), "steps_written": writer.step,
        "readers": args.readers, "runs_requests": len(ms), "runs_errors": len(readers.errors),
        "runs_p50_ms": round(statistics.median(ms), 1) if ms else None,
        "runs_p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1) if ms else None,
        "runs_max_ms": round(ms[-1], 1) if ms else None,
        "runs_p95_ms_without_streams": p95(quiet.timings), "runs_p95_ms_while_opening": p95(opening.timings),
        "server_cpu_percent": round(100 * (cpu.user + cpu.system - cpu_before.user - cpu_before.system) / elapsed, 1),
        "load_average_1min": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(),
        "server_rss_before_mb": round(rss_before / 2**20, 1), "server_rss_growth_mb": round((rss_peak - rss_before) / 2**20, 1),
    }


def report(args, result: dict) -> dict:
    result = {"seconds": args.seconds, "reader_interval_s": args.reader_interval, "poll_s": 0.5, **result}
    result["goals_met"] = (result["streams_opened"] == args.streams == result["streams_receiving_at_end"]
                           and result["runs_errors"] == 0 and (result["runs_p95_ms"] or 1e9) < 300
                           and result["server_rss_growth_mb"] < 100)
    return result


def main() -> None:
    parser = live_run_parser(__doc__)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--reader-interval", type=float, default=0.5, help="seconds between one reader's requests")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long streams and readers run")
    parser.add_argument("--metrics", type=int, default=4, help="points per write (one per metric)")
    parser.add_argument("--write-every", type=float, default=0.5)
    bench_live_run(parser.parse_args(), {"PEFTLAB_SSE_POLL_SECONDS": "0.5"}, measure, report)


if __name__ == "__main__":
    main()
