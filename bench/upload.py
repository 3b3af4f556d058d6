"""Stream a generated JSONL file through POST /api/datasets; print MB/s and the server's RSS growth.

    .venv/bin/python bench/upload.py            # 1 GB (the goal: RSS growth under 100 MB)
    .venv/bin/python bench/upload.py --mb 100   # quicker

Starts its own `peftlab serve` on a temporary data dir, so it measures only that process.
"""
import argparse
import json
import random
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024)
    args = parser.parse_args()
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
