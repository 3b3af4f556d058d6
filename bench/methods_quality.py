"""Every method on the bundled MiniLM over a text-classification set, same budget for all.

    .venv/bin/python bench/methods_quality.py [--dataset agnews|sentiment] [--epochs 3 | --max-steps 120]
        [--only lora,full] [--lr lora=5e-4,2e-3 --lr prompt=3e-2,0.3]

Runs through a real `peftlab up` (server + one worker), one run after another, and prints one JSON
line per (method, learning rate): test accuracy, macro-F1, trainable parameters and % of the model,
adapter bytes, wall time. Same budget for all: epochs or steps, batch size, max length, seed. Without
--lr a run is posted with no learning rate, so it trains at its method's preset (the registry's):
the check that presets hold. With --lr each listed rate is tried (a sweep that finds the presets).

Datasets: `agnews` — the AG News subset in ../shared/datasets (581 train rows, 46 test rows, 4
classes); `sentiment` — bench/sentiment_data.py's synthetic reviews with negation and contrast (600
train, 200 test rows, fixed seeds, 2 classes).
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agnews_lora import agnews_csv  # noqa: E402
from sentiment_data import sentiment_csv  # noqa: E402
from stack import SHARED_DATASETS, peftlab, run_to_end  # noqa: E402

# name → method config (its other settings: the spec's defaults)
METHODS = {
    "lora": {"type": "lora"},
    "adapter_houlsby": {"type": "adapter", "variant": "houlsby"},
    "adapter_pfeiffer": {"type": "adapter", "variant": "pfeiffer"},
    "adapter_fusion": {"type": "adapter_fusion"},  # over two Houlsby adapters trained first
    "prefix": {"type": "prefix"},
    "ptuning": {"type": "ptuning"},
    "prompt": {"type": "prompt"},
    "full": {"type": "full"},
}


def datasets(name: str, shared: Path) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    if name == "agnews":
        return (("ag_news_train.csv", agnews_csv(shared / "ag_news_train.csv")),
                ("ag_news_test.csv", agnews_csv(shared / "ag_news_test.csv")))
    return ("sentiment_train.csv", sentiment_csv(600, seed=1)), ("sentiment_test.csv", sentiment_csv(200, seed=2))


def run_one(api: httpx.Client, name: str, method: dict, lr: float | None, args, train_id: int, test_id: int) -> dict:
    training = {"batch_size": args.batch_size, "max_length": args.max_length, "eval_every": 100_000, "seed": 0,
                "warmup_ratio": 0.06}
    training |= {"max_steps": args.max_steps} if args.max_steps else {"epochs": args.epochs}
    if lr is not None:
        training["learning_rate"] = lr
    body = {"name": f"bench {name}", "dataset_id": train_id, "eval_dataset_id": test_id, "base_model": "minilm-l6",
            "task": "classification", "columns": {"text": "text", "label": "label"}, "method": method,
            "training": training}
    run, wall = run_to_end(api, body)
    s = run["summary"]
    trainable, total = s.get("trainable_params"), s.get("total_params")
    return {"bench": "methods_quality", "method": name, "run_id": run["id"], "status": run["status"],
            "error": run["error"], "accuracy": s.get("eval", {}).get("accuracy"),
            "macro_f1": s.get("eval", {}).get("f1"), "trainable_params": trainable,
            "percent_of_model": round(100 * trainable / total, 3) if trainable and total else None,
            "adapter_bytes": s.get("adapter_bytes"), "train_samples_per_s": s.get("train_samples_per_s"),
            "wall_seconds": round(wall, 1), "learning_rate": run["config"]["training"]["learning_rate"],
            "preset": lr is None, "dataset": args.dataset, "steps": s.get("steps")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=("agnews", "sentiment"), default="agnews")
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS, help="the folder holding ag_news_*.csv")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--max-steps", type=int, default=None, help="a step budget instead of epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--lr", action="append", default=[], metavar="METHOD=LR,LR",
                        help="learning rates to try for a method (default: none given, the preset)")
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else list(METHODS)
    sweeps = {name: [float(v) for v in rates.split(",")] for name, rates in (x.split("=") for x in args.lr)}
    (train_name, train_csv), (test_name, test_csv) = datasets(args.dataset, args.shared)
    with tempfile.TemporaryDirectory() as tmp, peftlab(Path(tmp) / "data") as (url, _, headers):
        api = httpx.Client(base_url=url, headers=headers, timeout=60)
        train = api.post("/api/datasets", files={"file": (train_name, train_csv)}).json()
        test = api.post("/api/datasets", files={"file": (test_name, test_csv)}).json()
        houlsby_runs: list[int] = []
        for name in wanted:
            method = METHODS.get(name, {"type": name})
            if name == "adapter_fusion":
                while len(houlsby_runs) < 2:  # fusion needs two trained adapters of one variant
                    extra = run_one(api, f"adapter_houlsby_seed{len(houlsby_runs)}",
                                    {"type": "adapter", "variant": "houlsby", "reduction_factor": 16 * (len(houlsby_runs) + 1)},
                                    None, args, train["id"], test["id"])
                    houlsby_runs.append(extra["run_id"])
                method = {**method, "adapter_run_ids": houlsby_runs[:2]}
            for lr in sweeps.get(name, [None]):
                result = run_one(api, name, method, lr, args, train["id"], test["id"])
                if name == "adapter_houlsby" and result["status"] == "succeeded":
                    houlsby_runs.append(result["run_id"])
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
