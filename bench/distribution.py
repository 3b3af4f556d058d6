"""GET /api/datasets/{id}/distribution's pass over a file, without HTTP: rows per second and the memory it
holds, for a label column (few values) and a text column (every value distinct, so the distinct-value cap
is what bounds memory). Prints JSON.

    .venv/bin/python bench/distribution.py              # 1,000,000 rows
    .venv/bin/python bench/distribution.py --rows 200000
"""
import argparse
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.config import get_settings  # noqa: E402
from app.datasets.distribution import distribution  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    settings = get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings.model_copy(update={"data_dir": Path(tmp)})
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
        path = settings.upload_dir / "big.csv"
        rng = random.Random(0)
        with open(path, "w") as f:
            for i in range(args.rows):
                f.write(f"{rng.randint(1, 4)},headline number {i},some description text for row {i}\n")
        dataset = SimpleNamespace(storage_name=path.name, format="csv", has_header=False, num_rows=args.rows,
                                  column_names={"column_1": "label", "column_2": "title"})
        figures = {"rows": args.rows, "file_bytes": path.stat().st_size}
        for column in ("label", "title"):
            started = time.perf_counter()
            result = distribution(settings, dataset, column, max_seconds=600)
            seconds = time.perf_counter() - started
            tracemalloc.start()  # a second pass: tracing slows the first one down several times
            distribution(settings, dataset, column, max_seconds=600)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures[column] = {"seconds": round(seconds, 2), "rows_per_s": round(result.rows_counted / seconds),
                               "peak_traced_bytes": peak, "distinct": len(result.counts),
                               "untracked": result.untracked, "complete": result.complete}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
