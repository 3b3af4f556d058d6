"""Every seed method on the bundled MiniLM over AG News (581 train rows, 46 test rows), same budget.

    .venv/bin/python bench/methods_quality.py [--epochs 3] [--only lora,full]

Runs through a real `peftlab up` (server + one worker), one run after another, and prints one JSON
line per method: test accuracy, macro-F1, trainable parameters and % of the model, adapter bytes,
wall time. Same budget for all: epochs, batch size, max length, seed; each method gets the learning
rate its paper family uses (prompt-style methods need far larger ones than full fine-tuning).
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agnews_lora import agnews_csv  # noqa: E402
from stack import SHARED_DATASETS, peftlab, run_to_end  # noqa: E402

# name → (method config, learning rate)
METHODS = {
    "lora": ({"type": "lora", "r": 8, "alpha": 16, "dropout": 0.1}, 2e-3),
    "adapter_houlsby": ({"type": "adapter", "variant": "houlsby", "reduction_factor": 16}, 2e-3),
    "adapter_pfeiffer": ({"type": "adapter", "variant": "pfeiffer", "reduction_factor": 16}, 2e-3),
    "adapter_fusion": ({"type": "adapter_fusion"}, 2e-3),  # over the two Houlsby adapters below
    "prefix": ({"type": "prefix", "num_virtual_tokens": 20, "projection": False}, 1e-2),
    "ptuning": ({"type": "ptuning", "num_virtual_tokens": 20, "encoder": "mlp", "encoder_hidden_size": 128}, 1e-2),
    "prompt": ({"type": "prompt", "num_virtual_tokens": 20, "init": "vocab"}, 3e-2),
    "full": ({"type": "full"}, 5e-5),
}


def run_one(api: httpx.Client, name: str, method: dict, lr: float, args, train_id: int, test_id: int) -> dict:
    body = {"name": f"bench {name}", "dataset_id": train_id, "eval_dataset_id": test_id, "base_model": "minilm-l6",
            "task": "classification", "columns": {"text": "text", "label": "label"}, "method": method,
            "training": {"learning_rate": lr, "epochs": args.epochs, "batch_size": args.batch_size, "max_length": 128,
                         "eval_every": 100_000, "seed": 0, "warmup_ratio": 0.06}}
    run, wall = run_to_end(api, body)
    s = run["summary"]
    trainable, total = s.get("trainable_params"), s.get("total_params")
    return {"bench": "methods_quality", "method": name, "run_id": run["id"], "status": run["status"],
            "error": run["error"], "accuracy": s.get("eval", {}).get("accuracy"),
            "macro_f1": s.get("eval", {}).get("f1"), "trainable_params": trainable,
            "percent_of_model": round(100 * trainable / total, 3) if trainable and total else None,
            "adapter_bytes": s.get("adapter_bytes"), "train_samples_per_s": s.get("train_samples_per_s"),
            "wall_seconds": round(wall, 1), "learning_rate": lr}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--only", default=None, help="comma-separated subset of " + ",".join(METHODS))
    args = parser.parse_args()
    wanted = args.only.split(",") if args.only else list(METHODS)
    with tempfile.TemporaryDirectory() as tmp, peftlab(Path(tmp) / "data") as (url, _, headers):
        api = httpx.Client(base_url=url, headers=headers, timeout=60)
        train = api.post("/api/datasets", files={"file": ("ag_news_train.csv", agnews_csv(SHARED_DATASETS / "ag_news_train.csv"))}).json()
        test = api.post("/api/datasets", files={"file": ("ag_news_test.csv", agnews_csv(SHARED_DATASETS / "ag_news_test.csv"))}).json()
        houlsby_runs: list[int] = []
        for name in wanted:
            method, lr = METHODS[name]
            if name == "adapter_fusion":
                while len(houlsby_runs) < 2:  # fusion needs two trained adapters of one variant
                    extra = run_one(api, f"adapter_houlsby_seed{len(houlsby_runs)}",
                                    {"type": "adapter", "variant": "houlsby", "reduction_factor": 16 * (len(houlsby_runs) + 1)},
                                    2e-3, args, train["id"], test["id"])
                    houlsby_runs.append(extra["run_id"])
                method = {**method, "adapter_run_ids": houlsby_runs[:2]}
            result = run_one(api, name, method, lr, args, train["id"], test["id"])
            if name == "adapter_houlsby" and result["status"] == "succeeded":
                houlsby_runs.append(result["run_id"])
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
