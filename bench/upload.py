"""Stream a generated JSONL file through POST /api/datasets; print MB/s and the server's RSS growth.

    .venv/bin/python bench/upload.py            # 1 GB (the goal: RSS growth under 100 MB)
    .venv/bin/python bench/upload.py --mb 100   # quicker
    .venv/bin/python bench/upload.py --small 50 # per-upload cost of the scan sandbox on small files

Starts its own `peftlab serve` on a temporary data dir, so it measures only that process. --small
uploads N small files one after another to a server per scanner start method (forkserver, spawn)
and prints their latency; beside it, the scan alone (no HTTP) in-process, in a forkserver child and
in a spawned child: the child's own cost per upload is the difference.
"""
import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import peftlab  # noqa: E402

WORDS = "the a movie film story plot was very good bad great awful boring fine and it this really".split()


def make_jsonl(path: Path, target_bytes: int) -> int:
    rng = random.Random(0)
    rows, written = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target_bytes:
            line = json.dumps({"id": rows, "text": " ".join(rng.choices(WORDS, k=40)), "label": rng.choice(["pos", "neg"])}) + "\n"
            f.write(line)
            written += len(line)
            rows += 1
    return rows


def _stats(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1),
            "mean_ms": round(statistics.fmean(ms), 1), "min_ms": round(ms[0], 1)}


# The scan alone, timed in a fresh `python -c` process: a script's own imports would otherwise be re-run
# by multiprocessing in every child (the server runs as `-m app.cli`, which is cheap to re-run).
SCAN_ONLY = """
import json, statistics, sys, time
from pathlib import Path
from app.config import Settings
from app.datasets.sandbox import scan_file
from app.datasets.scan import scan
path, count = Path(sys.argv[1]), int(sys.argv[2])
out = {}
for how in ("in_process", "forkserver", "spawn"):
    seconds = []
    for _ in range(count + 1):
        start = time.perf_counter()
        if how == "in_process":
            scan(path, path.name, None, None)
        else:
            scan_file(path, path.name, None, None, Settings(scan_start_method=how))
        seconds.append(time.perf_counter() - start)
    out[how] = seconds[1:]  # the first starts the fork server
print(json.dumps(out))
"""


def small_files(count: int) -> None:
    """Per-upload latency of small files with the sandboxed scan, per start method; and the scan alone."""
    import subprocess

    body = "".join(json.dumps({"text": f"row {i} of a small file", "label": i % 2}) + "\n" for i in range(100)).encode()
    out: dict = {"bench": "upload_small", "file_bytes": len(body), "uploads": count}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "small.jsonl"
        path.write_bytes(body)
        root = Path(__file__).resolve().parent.parent
        timed = subprocess.run([sys.executable, "-c", SCAN_ONLY, str(path), str(count)], cwd=root, check=True,
                               capture_output=True, env={**__import__("os").environ, "PYTHONPATH": str(root)})
        out["scan_only"] = {how: _stats(seconds) for how, seconds in json.loads(timed.stdout).items()}
        for method in ("forkserver", "spawn"):
            with peftlab(tmp / f"data-{method}", "serve", {"PEFTLAB_SCAN_START_METHOD": method}) as (url, _, headers):
                with httpx.Client(base_url=url, headers=headers, timeout=120) as api:
                    seconds = []
                    for i in range(count + 1):
                        start = time.perf_counter()
                        res = api.post("/api/datasets", files={"file": (f"small-{i}.jsonl", body)})
                        seconds.append(time.perf_counter() - start)
                        res.raise_for_status()
                    refused = time.perf_counter()
                    res = api.post("/api/datasets", files={"file": ("deep.json", b"[" * 100_000 + b"]" * 100_000)})
                    out[f"deep_json_refused_{method}_ms"] = round((time.perf_counter() - refused) * 1000, 1)
                    assert res.status_code == 422, res.text
            out[f"upload_{method}"] = _stats(seconds[1:])  # the first starts the fork server
            out[f"first_upload_{method}_ms"] = round(seconds[0] * 1000, 1)
    base = out["scan_only"]["in_process"]["p50_ms"]
    out["child_cost_p50_ms"] = {how: round(out["scan_only"][how]["p50_ms"] - base, 1) for how in ("forkserver", "spawn")}
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--small", type=int, default=0, metavar="N",
                        help="instead: N small uploads per scanner start method, latency per upload")
    args = parser.parse_args()
    if args.small:
        small_files(args.small)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "big.jsonl"
        rows = make_jsonl(data, args.mb * 1024 * 1024)
        with peftlab(tmp / "data", "serve") as (url, server, headers):
            proc = psutil.Process(server.pid)
            baseline = proc.memory_info().rss
            peak = baseline
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, proc.memory_info().rss)
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            start = time.perf_counter()
            with open(data, "rb") as f:  # httpx streams a file object in chunks
                res = httpx.post(f"{url}/api/datasets", files={"file": ("big.jsonl", f)}, headers=headers, timeout=3600)
            seconds = time.perf_counter() - start
            done.set()
            sampler.join()
            res.raise_for_status()
            size = data.stat().st_size
            print(json.dumps({
                "bench": "upload", "size_bytes": size, "rows": rows, "server_rows": res.json()["num_rows"],
                "seconds": round(seconds, 2), "mb_per_s": round(size / 1e6 / seconds, 1),
                "server_rss_baseline_mb": round(baseline / 2**20, 1), "server_rss_peak_mb": round(peak / 2**20, 1),
                "rss_growth_mb": round((peak - baseline) / 2**20, 1), "goal_rss_growth_mb": 100,
            }))


if __name__ == "__main__":
    main()
