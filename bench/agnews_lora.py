"""LoRA on the bundled MiniLM over the AG News subset, through a real `peftlab up` (server + worker).

    .venv/bin/python bench/agnews_lora.py [--epochs 3] [--lr 0.002]

Text is title + description; the 45-row test file is the eval dataset. Prints one JSON line.
"""
import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import SHARED_DATASETS, peftlab, run_to_end  # noqa: E402

CLASSES = ["World", "Sports", "Business", "Sci/Tech"]


def agnews_csv(path: Path) -> bytes:
    """label name + one text column (title. description) as a CSV with a header."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    with open(path, newline="", encoding="utf-8") as f:
        for label, title, description in csv.reader(f):
            writer.writerow([f"{title}. {description.replace(chr(92), ' ')}", CLASSES[int(label) - 1]])
    return out.getvalue().encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--method", default="lora")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, peftlab(Path(tmp) / "data") as (url, _, headers):
        api = httpx.Client(base_url=url, headers=headers, timeout=60)
        train = api.post("/api/datasets", files={"file": ("ag_news_train.csv", agnews_csv(SHARED_DATASETS / "ag_news_train.csv"))}).json()
        test = api.post("/api/datasets", files={"file": ("ag_news_test.csv", agnews_csv(SHARED_DATASETS / "ag_news_test.csv"))}).json()
        method = {"type": "lora", "r": args.r, "alpha": 2 * args.r, "dropout": 0.1} if args.method == "lora" else {"type": args.method}
        body = {"name": "agnews bench", "dataset_id": train["id"], "eval_dataset_id": test["id"], "base_model": "minilm-l6",
                "task": "classification", "columns": {"text": "text", "label": "label"}, "method": method,
                "training": {"learning_rate": args.lr, "epochs": args.epochs, "batch_size": args.batch_size,
                             "max_length": 128, "eval_every": 1000, "seed": 0}}
        run, wall = run_to_end(api, body)
        s = run["summary"]
        print(json.dumps({
            "bench": "agnews", "method": args.method, "status": run["status"], "error": run["error"],
            "train_rows": train["num_rows"], "test_rows": test["num_rows"], "epochs": args.epochs, "lr": args.lr,
            "accuracy": s.get("eval", {}).get("accuracy"), "macro_f1": s.get("eval", {}).get("f1"),
            "trainable_params": s.get("trainable_params"), "total_params": s.get("total_params"),
            "adapter_bytes": s.get("adapter_bytes"), "train_samples_per_s": s.get("train_samples_per_s"),
            "wall_seconds_submit_to_done": round(wall, 1),
        }))


if __name__ == "__main__":
    main()
