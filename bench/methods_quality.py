"""Every method on the bundled MiniLM over a text-classification set, same budget for all.

    .venv/bin/python bench/methods_quality.py [--dataset agnews|sentiment] [--max-steps 100 | --epochs 3]
        [--repeats 5 [--first-seed 0]] [--only lora,lora_dora,full] [--lr lora=5e-4,2e-3 --lr prompt=3e-2,0.3]

Runs through a real `peftlab up` (server + one worker), one run after another, and prints one JSON
line per run: test accuracy, macro-F1, trainable parameters and % of the model, adapter bytes, wall
time. Same budget for all, and by default the New run form's: 100 optimizer steps at the form's batch
size, max length, warmup and schedule (`Training`'s defaults). Without --lr a run is posted with no
learning rate, so it trains at its method's preset (the registry's): the check that presets hold. With
--lr each listed rate is tried (a sweep that finds the presets). With --repeats k each (method, rate)
runs with seeds 0…k-1, and a last line per (method, rate) gives the mean accuracy with its 95 %
Student-t interval.

The method list comes from the registry (app/methods/): one entry per method, one per `variant` choice
(adapter_houlsby, adapter_pfeiffer), and the LoRA options (lora_dora, lora_rslora, lora_pissa).
AdapterFusion fuses two Houlsby adapters trained first on the same data (reduction factors 16 and 32,
seed 0), so its budget is the fusion's steps on top of theirs.

Datasets: `agnews` — the AG News subset in ../shared/datasets (581 train rows, 46 test rows, 4
classes); `sentiment` — bench/sentiment_data.py's synthetic reviews with negation and contrast (600
train, 200 test rows, fixed seeds, 2 classes).
"""
import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agnews_lora import agnews_csv  # noqa: E402
from sentiment_data import sentiment_csv  # noqa: E402
from stack import SHARED_DATASETS, peftlab, run_to_end  # noqa: E402

from app.methods import get_spec  # noqa: E402
from app.methods.registry import measured_variants  # noqa: E402
from app.runs.schemas import Training  # noqa: E402

def t_interval(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95 % Student-t interval); half-width 0 for a single value."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    from scipy.stats import t

    return mean, float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


def datasets(name: str, shared: Path) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    if name == "agnews":
        return (("ag_news_train.csv", agnews_csv(shared / "ag_news_train.csv")),
                ("ag_news_test.csv", agnews_csv(shared / "ag_news_test.csv")))
    return ("sentiment_train.csv", sentiment_csv(600, seed=1)), ("sentiment_test.csv", sentiment_csv(200, seed=2))


def run_one(api: httpx.Client, name: str, method: dict, lr: float | None, seed: int, args, train_id: int,
            test_id: int) -> dict:
    training = {"batch_size": args.batch_size, "max_length": args.max_length, "eval_every": 100_000, "seed": seed,
                "warmup_ratio": args.warmup_ratio}
    training |= {"max_steps": args.max_steps} if args.max_steps else {"epochs": args.epochs}
    if lr is not None:
        training["learning_rate"] = lr
    body = {"name": f"bench {name}", "dataset_id": train_id, "eval_dataset_id": test_id, "base_model": "minilm-l6",
            "task": "classification", "columns": {"text": "text", "label": "label"}, "method": method,
            "training": training}
    run, wall = run_to_end(api, body)
    s = run["summary"] or {}
    trainable, total = s.get("trainable_params"), s.get("total_params")
    return {"bench": "methods_quality", "method": name, "run_id": run["id"], "status": run["status"],
            "error": run["error"], "accuracy": s.get("eval", {}).get("accuracy"),
            "macro_f1": s.get("eval", {}).get("f1"), "trainable_params": trainable,
            "percent_of_model": round(100 * trainable / total, 3) if trainable and total else None,
            "adapter_bytes": s.get("adapter_bytes"), "train_samples_per_s": s.get("train_samples_per_s"),
            "wall_seconds": round(wall, 1), "learning_rate": run["config"]["training"]["learning_rate"],
            "preset": lr is None, "seed": seed, "dataset": args.dataset, "steps": s.get("steps")}


def summary(name: str, lr: float | None, results: list[dict], dataset: str) -> dict:
    accuracies = [r["accuracy"] for r in results if r["accuracy"] is not None]
    line = {"bench": "methods_quality_summary", "method": name, "dataset": dataset, "preset": lr is None,
            "learning_rate": results[0]["learning_rate"], "seeds": [r["seed"] for r in results],
            "succeeded": len(accuracies), "accuracies": accuracies}
    if accuracies:
        mean, half = t_interval(accuracies)
        line |= {"accuracy_mean": round(mean, 4), "accuracy_ci95": round(half, 4)}
    return line


def main() -> None:
    methods = measured_variants()
    form = Training()  # the New run form's defaults
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=("agnews", "sentiment"), default="agnews")
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS, help="the folder holding ag_news_*.csv")
    parser.add_argument("--max-steps", type=int, default=100, help="optimizer steps per run (0: use --epochs)")
    parser.add_argument("--epochs", type=float, default=3, help="with --max-steps 0")
    parser.add_argument("--batch-size", type=int, default=form.batch_size)
    parser.add_argument("--max-length", type=int, default=form.max_length)
    parser.add_argument("--warmup-ratio", type=float, default=form.warmup_ratio)
    parser.add_argument("--repeats", type=int, default=1, help="seeds 0…k-1 per (method, rate); mean ± 95 %% t-interval")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first…first+k-1 (to add seeds to an earlier pass)")
    parser.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(methods))
    parser.add_argument("--lr", action="append", default=[], metavar="METHOD=LR,LR",
                        help="learning rates to try for a method (default: none given, the preset)")
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else list(methods)
    unknown = [name for name in wanted if name not in methods]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(methods)}")
    sweeps = {name: [float(v) for v in rates.split(",")] for name, rates in (x.split("=") for x in args.lr)}
    (train_name, train_csv), (test_name, test_csv) = datasets(args.dataset, args.shared)
    with tempfile.TemporaryDirectory() as tmp, peftlab(Path(tmp) / "data") as (url, _, headers):
        api = httpx.Client(base_url=url, headers=headers, timeout=60)
        train = api.post("/api/datasets", files={"file": (train_name, train_csv)}).json()
        test = api.post("/api/datasets", files={"file": (test_name, test_csv)}).json()
        fused: list[int] = []  # the two Houlsby adapters AdapterFusion fuses
        for name in wanted:
            method = methods[name]
            if get_spec(method["type"]).name == "adapter_fusion":
                for factor in (16, 32)[len(fused):]:
                    extra = run_one(api, f"adapter_houlsby_rf{factor}",
                                    {"type": "adapter", "variant": "houlsby", "reduction_factor": factor},
                                    None, 0, args, train["id"], test["id"])
                    print(json.dumps(extra), flush=True)
                    if extra["status"] != "succeeded":
                        raise SystemExit(f"the adapter AdapterFusion needs failed: {extra['error']}")
                    fused.append(extra["run_id"])
                method = {**method, "adapter_run_ids": fused}
            for lr in sweeps.get(name, [None]):
                results = []
                for seed in range(args.first_seed, args.first_seed + args.repeats):
                    results.append(run_one(api, name, method, lr, seed, args, train["id"], test["id"]))
                    print(json.dumps(results[-1]), flush=True)
                print(json.dumps(summary(name, lr, results, args.dataset)), flush=True)


if __name__ == "__main__":
    main()
