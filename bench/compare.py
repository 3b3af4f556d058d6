"""Compare 20 big runs: the API's latency and payload, cold (the first request after a server restart)
and warm, and the page's time until every chart is drawn.

    .venv/bin/python bench/compare.py                            # 20 runs × 3 metrics × 100,000 points, SQLite
    .venv/bin/python bench/compare.py --database postgresql      # the same on PostgreSQL (a throwaway database)
    .venv/bin/python bench/compare.py --points 10000 --page-loads 0   # quicker, API only

Seeds the runs straight into the database of a throwaway `peftlab serve` (bulk insert: executemany on
SQLite, COPY on PostgreSQL) and builds their metric rollups as the migration does (timed apart). Then
the server is started again, so the first GET /api/compare for all of them is the cold path: nothing in
the process's caches (the OS page cache and PostgreSQL's buffers stay warm; the machine's are not
ours to drop). Then p50/p95 over --requests more (warm), and /compare in headless Chromium.
Prints one JSON line. Goals: API cold < 300 ms, p95 < 300 ms, payload < 1 MB, page drawn < 1.5 s.
"""
import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stack import peftlab  # noqa: E402

METRICS = ("train/loss", "eval/loss", "eval/accuracy")
METHODS = ("lora", "adapter", "prefix", "ptuning", "prompt", "full")
CHROMIUM = os.environ.get("PEFTLAB_CHROMIUM", "/usr/bin/chromium")


def curve(name: str, step: int, n: int, rng: random.Random) -> float:
    progress = step / n
    if name == "eval/accuracy":
        return min(1.0, 0.5 + 0.4 * (1 - math.exp(-5 * progress)) + rng.gauss(0, 0.01))
    base = 2.0 * math.exp(-4 * progress) + 0.3 + rng.gauss(0, 0.03)
    return base * (6 if step % 25_013 == 0 and step else 1)  # a spike now and then, as real runs have


@contextmanager
def database(kind: str, admin_url: str):
    """The settings that point peftlab at the database to bench: SQLite in the data dir, or a throwaway
    PostgreSQL database on the server of admin_url (dropped afterwards)."""
    if kind == "sqlite":
        yield {}
        return
    name = f"peftlab_bench_compare_{os.getpid()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield {"PEFTLAB_DATABASE_URL": sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)}
    finally:
        from app.db import get_engine, reset_caches

        get_engine().dispose()
        reset_caches()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _bulk_insert(raw, rows: list[tuple]) -> None:
    cur = raw.cursor()
    if hasattr(cur, "copy"):  # psycopg: COPY is PostgreSQL's bulk load
        with cur.copy("COPY metrics (run_id, name, step, value, time) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        cur.executemany("INSERT INTO metrics (run_id, name, step, value, time) VALUES (?, ?, ?, ?, ?)", rows)


def seed(data_dir: Path, env: dict, dataset_id: int, runs: int, points: int) -> tuple[list[int], float]:
    """Runs with summaries and `points` points per metric, bulk-loaded on the raw connection, and their
    rollups built from them; (run ids, seconds the rollups took)."""
    os.environ["PEFTLAB_DATA_DIR"] = str(data_dir)
    os.environ.update(env)
    import app.tables  # noqa: F401 — every table, so the runs' foreign keys resolve
    from app.datasets.models import Dataset
    from app.db import get_engine, reset_caches, session_scope
    from app.runs.models import Run

    reset_caches()
    rng = random.Random(0)
    ids = []
    with session_scope() as s:
        project = s.get(Dataset, dataset_id).project_id
        for i in range(runs):
            method = METHODS[i % len(METHODS)]
            run = Run(name=f"bench {method} #{i}", status="succeeded", dataset_id=dataset_id, base_model="minilm-l6",
                      method=method, task="classification", project_id=project, progress=1.0,
                      config={"method": {"type": method, "r": 2 ** (i % 6)}, "training": {"learning_rate": 10 ** -(2 + i % 3)}},
                      summary={"trainable_params": int(10 ** (3 + 4 * i / runs)), "total_params": 22_700_000,
                               "eval": {"accuracy": 0.7 + 0.01 * i, "loss": 0.5}})
            s.add(run)
            s.flush()
            ids.append(run.id)
    engine = get_engine()
    raw = engine.raw_connection()
    try:
        t0 = 1_700_000_000.0
        for run_id in ids:
            for name in METRICS:
                _bulk_insert(raw, [(run_id, name, step, curve(name, step, points, rng), t0 + step * 0.05)
                                   for step in range(points)])
            raw.commit()
    finally:
        raw.close()
    start = time.perf_counter()
    try:
        from app.metrics import rollups
    except ImportError:  # the code before rollups (a baseline measurement): nothing to build
        rollups = None
    if rollups is not None:
        with engine.begin() as conn:
            rollups.backfill(conn, ids)
    rollup_s = time.perf_counter() - start
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":  # what autovacuum does after a bulk load
            conn.execute(sa.text("VACUUM ANALYZE"))
        else:
            # Fold the bulk insert's write-ahead log into the database file, as SQLite's automatic
            # checkpoints do over time, so reads measure the steady state rather than a 500 MB WAL.
            conn.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
    return ids, rollup_s


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process so far, from /proc: on a busy machine the server's CPU time
    for a request says more about a quiet one than the wall-clock time does."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_preload(pid: int, timeout: float = 60.0) -> None:
    """Until the server has loaded scipy.special, which it imports in the background once it is up, and has
    gone idle (a server restarted a moment ago, still importing, is not what a user meets after a restart).
    Code from before that preload never loads it ahead: then the timeout passes and the cold request pays
    for the import."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and "scipy/special" not in Path(f"/proc/{pid}/maps").read_text():
        time.sleep(0.2)
    idle_since, last = time.monotonic(), cpu_seconds(pid)
    while time.monotonic() < deadline and time.monotonic() - idle_since < 1.0:
        time.sleep(0.1)
        if (now := cpu_seconds(pid)) > last + 0.02:  # still busy: wait for a quiet second
            idle_since, last = time.monotonic(), now


def measure_api(url: str, headers: dict, ids: list[int], requests: int, server_pid: int) -> dict:
    query = f"{url}/api/compare?runs={','.join(map(str, ids))}"
    with httpx.Client(headers=headers, timeout=120) as client:
        client.get(f"{url}/api/models").raise_for_status()  # the server is up and signs requests in
        _wait_for_preload(server_pid)
        cpu = cpu_seconds(server_pid)
        start = time.perf_counter()
        first = client.get(query)
        cold_ms = (time.perf_counter() - start) * 1000
        cold_cpu_ms = (cpu_seconds(server_pid) - cpu) * 1000
        first.raise_for_status()
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            res = client.get(query)
            times.append((time.perf_counter() - start) * 1000)
            res.raise_for_status()
        full = client.get(f"{query}&max_points=2000")
        body = first.json()
        per_series = max(len(pts) for run in body["series"].values() for pts in run.values())
    times.sort()
    return {"api_cold_ms": round(cold_ms), "api_cold_server_cpu_ms": round(cold_cpu_ms), "api_p50_ms": round(statistics.median(times), 1),
            "api_p95_ms": round(times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)], 1),
            "api_bytes": len(first.content), "api_bytes_max_points_2000": len(full.content),
            "points_per_series": per_series}


def measure_page(url: str, ids: list[int], loads: int) -> dict:
    """Time from navigation to #comparison[data-charts-ready], signed in through a session cookie."""
    from playwright.sync_api import sync_playwright

    from app.auth import service
    from app.auth.deps import SESSION_COOKIE
    from app.db import session_scope

    with session_scope() as s:
        cookie, _ = service.start_session(s, user=service.get_user_by_name(s, username="bench"))
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": SESSION_COOKIE, "value": cookie, "url": url}])
        page = context.new_page()
        for _ in range(loads):
            start = time.perf_counter()
            page.goto(f"{url}/compare?runs={','.join(map(str, ids))}", wait_until="commit")
            page.wait_for_selector("#comparison[data-charts-ready='1']", timeout=60_000)
            times.append((time.perf_counter() - start) * 1000)
            charts = page.locator(".compare-chart").count()
        browser.close()
    return {"page_first_ms": round(times[0]), "page_median_ms": round(statistics.median(times)),
            "page_max_ms": round(max(times)), "charts": charts + 1}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--page-loads", type=int, default=5, help="0: the API only")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="a server where the bench may create and drop a database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database(args.database, args.postgres_url) as env:
        data_dir = Path(tmp) / "data"
        with peftlab(data_dir, "serve", env) as (url, _server, headers):
            ds = httpx.post(f"{url}/api/datasets", headers=headers, timeout=30,
                            files={"file": ("b.csv", b"text,label\n" + b"good,pos\nbad,neg\n" * 5)}).json()
            start = time.perf_counter()
            ids, rollup_s = seed(data_dir, env, ds["id"], args.runs, args.points)
            seed_s = time.perf_counter() - start
        figures = {"database": args.database, "runs": args.runs, "metrics": len(METRICS), "points_per_metric": args.points,
                   "seed_s": round(seed_s, 1), "rollups_s": round(rollup_s, 1), "load_avg_1m": os.getloadavg()[0]}
        token = headers["Authorization"].removeprefix("Bearer ")
        with peftlab(data_dir, "serve", env, token=token) as (url, server, headers):  # a restart: cold caches
            figures.update(measure_api(url, headers, ids, args.requests, server.pid))
            if args.page_loads:
                figures.update(measure_page(url, ids, args.page_loads))
    figures["goals_met"] = (figures["api_cold_ms"] < 300 and figures["api_p95_ms"] < 300 and figures["api_bytes"] < 1_000_000
                            and figures.get("page_max_ms", 0) < 1500)
    print(json.dumps(figures))

if __name__ == "__main__":
    main()
