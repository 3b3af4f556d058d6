"""Fan-out of one live run to many streams: how long from a worker's commit to every client's receipt,
and what it costs the server.

    nice -n 5 .venv/bin/python bench/live_fanout.py                      # SQLite + embedded announcements
    nice -n 5 .venv/bin/python bench/live_fanout.py \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test --broker-url redis://127.0.0.1:6379/0

Starts a throwaway `peftlab serve` (default safety poll: what arrives within it was announced), makes one
running run and opens --clients /api/runs/{id}/events streams on it from --client-procs child processes
(plain asyncio sockets: an HTTP client library would spend more CPU than the server on a 2-core box and
its queueing would be measured as latency). Then it plays the worker: --writes points, one every
--write-every seconds, each through app.metrics.service.record_points, whose commit announces the run
(app/metrics/notify.py). Each point's commit time is taken right after the database commit, before the
announcement; each client notes when each step first arrives. Prints one JSON line: p50/p95/p99/max
from commit to receipt over every (client, point), points a client never got, the server's CPU use
(its process and children, in percent of one core) while the points flow, and the machine's load.
Goals: p95 <= 100 ms, server CPU < 100 % of one core.

--log-tail: each client also holds the run's log stream (/api/runs/{id}/logs/events), as a run page with
its log tail open does, and the writer stores one log line with each point, in the same transaction, as a
worker's flush does; the log lines' latencies are reported apart (log_latency_*).
"""
import asyncio
import multiprocessing
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from streams import bench_live_run, live_run_parser  # noqa: E402

STEP = re.compile(rb'"step":(\d+)')
SEQ = re.compile(rb'"seq":(\d+)')


async def _stream(url: str, token: str, run_id: int, arrivals: dict, opened: asyncio.Event, count: list,
                  refusals: list, logs: bool = False) -> None:
    """One SSE connection on a bare socket: note when each new step first arrives. A refusal (e.g. 503: no
    database connection free in PEFTLAB_DB_POOL_TIMEOUT while hundreds open at once) is retried after the
    stream's `retry:` delay, as EventSource-like clients do, and counted."""
    parts = urlsplit(url)
    while True:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        path = f"/api/runs/{run_id}/logs/events" if logs else f"/api/runs/{run_id}/events"
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
        await writer.drain()
        status = (await reader.readline()).split(b" ")[1:2]
        if status == [b"200"]:
            break
        refusals.append(status[0].decode() if status else "closed")
        writer.close()
        await asyncio.sleep(2.0)
    tail, last = b"", 0
    try:
        while data := await reader.read(65536):
            now = time.time()
            buffer = tail + data
            # Open: the feed's first read reached it (a log stream has nothing to say before the first line:
            # its `retry:` line says it was taken).
            if not arrivals.get("_open") and (b"retry:" if logs else b"event: status") in buffer:
                arrivals["_open"] = True
                count[0] += 1
                if count[0] == count[1]:
                    opened.set()
            for match in (SEQ if logs else STEP).finditer(buffer):
                step = int(match.group(1))
                if step > last:  # a match in the kept tail is seen twice: only new steps count
                    last = step
                    arrivals[step] = now
            tail = buffer[-64:]
    finally:
        writer.close()


def hold_streams(url: str, token: str, run_id: int, count: int, pipe, log_tail: bool = False) -> None:
    """Child process: open `count` streams (and as many log streams with log_tail), say when all had their
    first event, read until told to stop, send arrivals (the log streams' after the metric streams')."""
    async def go():
        kinds = [False, True] if log_tail else [False]
        opened, counter, refusals = asyncio.Event(), [0, count * len(kinds)], []
        per_stream = [({}, logs) for logs in kinds for _ in range(count)]
        tasks = []
        for arrivals, logs in per_stream:
            tasks.append(asyncio.create_task(_stream(url, token, run_id, arrivals, opened, counter, refusals, logs)))
            await asyncio.sleep(0.002)  # not 500 SYNs at once into a listen backlog
        try:
            await asyncio.wait_for(opened.wait(), 180)
        except TimeoutError:
            pass
        pipe.send((counter[0], refusals))
        await asyncio.to_thread(pipe.recv)  # stop
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = sorted({type(r).__name__ for r in results if isinstance(r, BaseException)
                         and not isinstance(r, asyncio.CancelledError)})
        pipe.send(([({k: v for k, v in a.items() if k != "_open"}, logs) for a, logs in per_stream], errors))
    asyncio.run(go())


class Writer(threading.Thread):
    """Plays the worker: one point per write through record_points (its commit announces the run)."""

    def __init__(self, run_id: int, writes: int, every: float, log_tail: bool = False):
        super().__init__(daemon=True)
        self.run_id, self.writes, self.every, self.log_tail = run_id, writes, every, log_tail
        self.committed: dict[int, float] = {}

    def run(self):
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        from app.db import session_scope
        from app.logs.service import append
        from app.metrics.service import record_points

        stamp: dict[str, float] = {}
        # First in line after the commit, before notify's announcement: the moment the rows are visible.
        event.listen(Session, "after_commit", lambda _s: stamp.__setitem__("at", time.time()), insert=True)
        for step in range(1, self.writes + 1):
            with session_scope() as s:
                if self.log_tail:  # a log line rides on the flush's transaction, as a worker's does
                    append(s, self.run_id, [(step, time.time(), "INFO", f"step {step}: loss {1.0 / step:.4f}")], commit=False)
                record_points(s, self.run_id, [("train/loss", step, 1.0 / step)])
            self.committed[step] = stamp["at"]
            time.sleep(self.every)


def _cpu(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _pct(values: list[float], q: float) -> float | None:
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1) if values else None


def measure(url: str, headers: dict, run_id: int, args, server: psutil.Process) -> dict:
    token = headers["Authorization"].split(" ", 1)[1]
    spawn = multiprocessing.get_context("spawn")
    per_proc = [args.clients // args.client_procs + (i < args.clients % args.client_procs) for i in range(args.client_procs)]
    pipes, holders = [], []
    for n in per_proc:
        here, there = spawn.Pipe()
        holder = spawn.Process(target=hold_streams, args=(url, token, run_id, n, there, args.log_tail), daemon=True)
        holder.start()
        pipes.append(here)
        holders.append(holder)
    started = time.monotonic()
    opened, refusals = 0, []
    for p in pipes:
        n, refused = p.recv()
        opened, refusals = opened + n, refusals + refused
    open_seconds = time.monotonic() - started
    # Settled: every stream has had its first events, and the server has answered the requests of refused
    # attempts that still waited for a database slot (their clients had gone and tried again).
    time.sleep(args.settle)

    load_before = os.getloadavg()[0]
    psutil.cpu_percent()  # starts the machine-wide window
    cpu_before, wall_before = _cpu(server), time.monotonic()
    writer = Writer(run_id, args.writes, args.write_every, args.log_tail)
    writer.start()
    writer.join()
    time.sleep(1.0)  # the last point's way to the clients
    server_cpu = 100 * (_cpu(server) - cpu_before) / (time.monotonic() - wall_before)
    machine_cpu = psutil.cpu_percent()
    load_during = os.getloadavg()[0]

    for p in pipes:
        p.send("stop")
    arrivals, errors = [], set()
    for p in pipes:
        streams, errs = p.recv()
        arrivals += streams
        errors |= set(errs)
    for h in holders:
        h.join(30)

    latencies, missing, per_write, log_latencies, log_missing = [], 0, {}, [], 0
    for stream, logs in arrivals:
        for step, at in writer.committed.items():  # a log line's seq is its step
            if step not in stream:
                if logs:
                    log_missing += 1
                else:
                    missing += 1
            elif logs:
                log_latencies.append(stream[step] - at)
            else:
                latencies.append(stream[step] - at)
                per_write.setdefault(step, []).append(stream[step] - at)
    latencies.sort()
    log_latencies.sort()
    logs_out = {"log_streams": sum(1 for _, logs in arrivals if logs), "log_deliveries": len(log_latencies),
                "log_missing": log_missing, "log_latency_p50_ms": _pct(log_latencies, 0.5),
                "log_latency_p95_ms": _pct(log_latencies, 0.95), "log_latency_p99_ms": _pct(log_latencies, 0.99)} if args.log_tail else {}
    # The writes whose last client got them latest: is a slow tail one late read (every client late) or
    # a few slow clients (a busy machine scheduling the client processes late)?
    slowest = sorted(per_write.items(), key=lambda kv: -max(kv[1]))[:3]
    return {
        "clients": args.clients, "clients_opened": opened, "all_open_after_s": round(open_seconds, 1),
        "open_refusals": {code: refusals.count(code) for code in sorted(set(refusals))},
        "writes": args.writes, "write_every_s": args.write_every, "deliveries": len(latencies), "missing": missing,
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_p95_ms": _pct(latencies, 0.95), "latency_p99_ms": _pct(latencies, 0.99),
        "latency_max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "server_cpu_percent_of_one_core": round(server_cpu, 1),
        "machine_cpu_percent": machine_cpu, "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(load_during, 2), "cpus": os.cpu_count(),
        "client_errors": sorted(errors)[:5],
        "slowest_writes_step_first_last_ms": [[step, round(min(v) * 1000), round(max(v) * 1000)] for step, v in slowest],
        **logs_out,
    }


def report(args, result: dict) -> dict:
    from app.config import get_settings

    result = {"announcements": "redis" if args.broker_url else "unix sockets",
              "safety_poll_s": get_settings().sse_poll_seconds, **result}
    result["goals_met"] = (result["missing"] == 0 and (result["latency_p95_ms"] or 1e9) <= 100
                           and result["server_cpu_percent_of_one_core"] < 100
                           and (not args.log_tail or (result["log_missing"] == 0 and (result["log_latency_p95_ms"] or 1e9) <= 100)))
    return result


def main() -> None:
    parser = live_run_parser(__doc__)
    parser.add_argument("--broker-url", default=None, help="redis://… (announcements over Redis pub/sub); default the embedded broker")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--client-procs", type=int, default=2, help="processes the clients are spread over")
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--write-every", type=float, default=0.5, help="seconds between the writer's commits")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds between the last stream opening and the first write")
    parser.add_argument("--log-tail", action="store_true", help="each client also holds the run's log stream")
    args = parser.parse_args()
    bench_live_run(args, {"PEFTLAB_BROKER_URL": args.broker_url} if args.broker_url else {}, measure, report)


if __name__ == "__main__":
    main()
