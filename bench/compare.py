"""Compare 20 big runs: the API's latency and payload, and the page's time until every chart is drawn.

    .venv/bin/python bench/compare.py                   # 20 runs × 3 metrics × 100,000 points
    .venv/bin/python bench/compare.py --points 10000    # quicker

Seeds the runs straight into the SQLite database of a throwaway `peftlab serve` (bulk insert), then
asks GET /api/compare for all of them (the first, cold request on its own, then p50/p95 over
--requests more) and loads /compare in headless Chromium. Prints one JSON line.
Goals: API p95 < 300 ms, payload < 1 MB, page drawn < 1.5 s.
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
from pathlib import Path

import httpx

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


def seed(data_dir: Path, dataset_id: int, runs: int, points: int) -> list[int]:
    """Runs with summaries and `points` points per metric, written with executemany on the raw connection."""
    os.environ["PEFTLAB_DATA_DIR"] = str(data_dir)
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
    raw = get_engine().raw_connection()
    try:
        cur = raw.cursor()
        t0 = 1_700_000_000.0
        for run_id in ids:
            for name in METRICS:
                rows = [(run_id, name, step, curve(name, step, points, rng), t0 + step * 0.05) for step in range(points)]
                cur.executemany("INSERT INTO metrics (run_id, name, step, value, time) VALUES (?, ?, ?, ?, ?)", rows)
            raw.commit()
        # Fold the bulk insert's write-ahead log into the database file, as SQLite's automatic
        # checkpoints do over time, so reads measure the steady state rather than a 500 MB WAL.
        cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.close()
    return ids


def measure_api(url: str, headers: dict, ids: list[int], requests: int) -> dict:
    query = f"{url}/api/compare?runs={','.join(map(str, ids))}"
    with httpx.Client(headers=headers, timeout=120) as client:
        start = time.perf_counter()
        first = client.get(query)
        cold_ms = (time.perf_counter() - start) * 1000
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
    return {"api_cold_ms": round(cold_ms), "api_p50_ms": round(statistics.median(times), 1),
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
    parser.add_argument("--page-loads", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        with peftlab(data_dir, "serve") as (url, _server, headers):
            ds = httpx.post(f"{url}/api/datasets", headers=headers, timeout=30,
                            files={"file": ("b.csv", b"text,label\n" + b"good,pos\nbad,neg\n" * 5)}).json()
            start = time.perf_counter()
            ids = seed(data_dir, ds["id"], args.runs, args.points)
            seed_s = time.perf_counter() - start
            figures = {"runs": args.runs, "metrics": len(METRICS), "points_per_metric": args.points, "seed_s": round(seed_s, 1)}
            figures.update(measure_api(url, headers, ids, args.requests))
            figures.update(measure_page(url, ids, args.page_loads))
    figures["goals_met"] = figures["api_p95_ms"] < 300 and figures["api_bytes"] < 1_000_000 and figures["page_max_ms"] < 1500
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
