"""What groups of seeds cost the server (app/compare/stats.py), in fresh processes.

    .venv/bin/python bench/group_stats.py [--repeat 5]

- import_app_stats_s: importing app.compare.stats (scipy is not loaded yet: every compare without a group of
  two or more seeds stays at this).
- first_interval_s: the first 95% interval in a process, which loads scipy.special (once per server process).
- differences_ms: every pair of 25 groups of 2 seeds (300 Welch tests) plus 100 intervals, scipy warm.
Medians over --repeat fresh processes. Prints one JSON line.
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, random, time
t0 = time.perf_counter()
from app.compare import stats
t1 = time.perf_counter()
stats.mean_interval([0.8, 0.82, 0.85])
t2 = time.perf_counter()
rng = random.Random(0)
groups = [[rng.gauss(0.8, 0.02) for _ in range(2)] for _ in range(25)]
t3 = time.perf_counter()
for g in groups * 4:
    stats.mean_interval(g)
for i in range(25):
    for j in range(i + 1, 25):
        stats.welch(groups[i], groups[j])
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first": t2 - t1, "diffs": t4 - t3}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    samples = []
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, check=True)
        samples.append(json.loads(out.stdout))
    print(json.dumps({
        "import_app_stats_s": round(statistics.median(s["import"] for s in samples), 4),
        "first_interval_s": round(statistics.median(s["first"] for s in samples), 3),
        "differences_ms": round(1000 * statistics.median(s["diffs"] for s in samples), 2),
        "repeat": args.repeat,
    }))


if __name__ == "__main__":
    main()
