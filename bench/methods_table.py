"""docs/METHODS.md's measured table from the JSON lines of bench/methods_quality.py.

    .venv/bin/python bench/methods_table.py results/agnews*.jsonl results/sentiment*.jsonl

Reads every per-run line (`"bench": "methods_quality"`), keeps the preset runs (no --lr) that succeeded,
groups them by (method, dataset) over seeds — lines from several passes (--first-seed) merge — and
prints one Markdown row per method: trainable parameters, preset learning rate, and per dataset the
accuracy in % (mean ± half-width of the 95 % Student-t interval, and n seeds when more than one).
Sweeps (--lr) print below as their own small table.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from methods_quality import t_interval  # noqa: E402

from app.methods.registry import measured_variants  # noqa: E402


def cell(accuracies: list[float]) -> str:
    if not accuracies:
        return "not measured"
    mean, half = t_interval([100 * a for a in accuracies])
    if len(accuracies) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {half:.1f} (n {len(accuracies)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    runs = [json.loads(line) for f in args.files for line in f.read_text().splitlines()
            if line.startswith("{") and '"bench": "methods_quality"' in line]
    datasets = sorted({r["dataset"] for r in runs})
    preset, swept, info = defaultdict(list), defaultdict(list), {}
    for r in runs:
        if r["status"] != "succeeded" or r["accuracy"] is None:
            continue
        info.setdefault(r["method"], r)
        target = preset if r["preset"] else swept
        target[(r["method"], r["dataset"]) if r["preset"] else (r["method"], r["dataset"], r["learning_rate"])].append(
            r["accuracy"])
    print("| method | trainable on MiniLM | preset lr | " + " | ".join(f"{d} accuracy %" for d in datasets) + " |")
    print("|---|---|---|" + "---|" * len(datasets))
    for name in measured_variants():
        r = info.get(name)
        trainable = f"{r['trainable_params']:,}" if r and r["trainable_params"] else "—"
        lr = f"{r['learning_rate']:g}" if r and r["preset"] else "—"
        print(f"| `{name}` | {trainable} | {lr} | " + " | ".join(cell(preset[(name, d)]) for d in datasets) + " |")
    if swept:
        print("\n| method | dataset | learning rate | accuracy % |\n|---|---|---|---|")
        for (name, dataset, lr), accuracies in sorted(swept.items()):
            print(f"| `{name}` | {dataset} | {lr:g} | {cell(accuracies)} |")


if __name__ == "__main__":
    main()
