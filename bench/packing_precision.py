"""Packing and precision on a small random Llama (CPU or GPU), through the worker's training loop.

    PYTHONPATH=$PWD .venv/bin/python bench/packing_precision.py [--steps 20] [--hidden 256] [--layers 4]

Rows of 4–120 words (like chat data: mostly short, some long), batch 16, max_length 128. For each
setting: the share of padding in what the model computed, training tokens/s and the peak memory the
loop reports (on a GPU per setting; on the CPU it is the process's peak RSS so far, so only the first
setting's figure means anything). Prints one JSON line.
"""
import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from app.runs.schemas import Columns, LoraMethod, Training  # noqa: E402
from tests.tiny_models import NEUTRAL, make_tiny_llama  # noqa: E402
from workers.methods import get_method  # noqa: E402
from workers.model_loading import load_base_model, load_tokenizer  # noqa: E402
from workers.training.data import collate, prepare_data  # noqa: E402
from workers.training.loop import pick_device, seed_everything, train  # noqa: E402
from workers.training.packing import collate_packed  # noqa: E402
from workers.training.precision import resolve_precision, upcast_trainable  # noqa: E402
from workers.training.reporting import MemoryReporter  # noqa: E402


def rows(n: int) -> list[dict]:
    rng = random.Random(0)
    return [{"text": " ".join(rng.choices(NEUTRAL, k=min(120, int(rng.expovariate(1 / 30)) + 4)))} for _ in range(n)]


def padding_share(examples, batch: int, packed: bool) -> float:
    computed = real = 0
    for start in range(0, len(examples), batch):
        part = examples[start:start + batch]
        b = collate_packed(part, 0, 128) if packed else collate(part, 0)
        computed += b.inputs["input_ids"].numel()
        real += b.num_tokens
    return 1 - real / computed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    device = pick_device()
    source = str(make_tiny_llama(Path(tempfile.mkdtemp()) / "llama", hidden=args.hidden, layers=args.layers, heads=8))
    tokenizer = load_tokenizer(source)
    data = prepare_data(rows(16 * args.steps), None, task="causal_lm", columns=Columns(text="text"), tokenizer=tokenizer,
                        max_length=128, eval_fraction=0.0, seed=0)
    result = {"device": str(device), "hidden": args.hidden, "layers": args.layers, "steps": args.steps,
              "padding_share": {"padded": round(padding_share(data.train, 16, False), 3),
                                "packed": round(padding_share(data.train, 16, True), 3)}}
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    for precision_name in precisions:
        for packing in (False, True):
            for checkpointing in (False, True):
                precision = resolve_precision(precision_name, device)
                seed_everything(0)
                base = load_base_model(source, "causal_lm", tokenizer=tokenizer, dtype=precision.dtype)
                model = get_method("lora").build(base, LoraMethod(type="lora", r=16, dropout=0.0), "causal_lm")
                upcast_trainable(model)
                if checkpointing:
                    from workers.training.grad_checkpointing import enable_gradient_checkpointing
                    enable_gradient_checkpointing(base)
                start = time.perf_counter()
                out = train(model, data, task="causal_lm", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(),
                            device=device, training=Training(max_steps=args.steps, batch_size=16, max_length=128,
                                                             precision=precision_name, packing=packing,
                                                             checkpoint_every=0, eval_every=10**6))
                key = f"{precision_name}{'+packing' if packing else ''}{'+checkpointing' if checkpointing else ''}"
                result[key] = {"tokens_per_s": round(out.train_tokens_per_s), "seconds": round(time.perf_counter() - start, 2),
                               "peak_memory_bytes": out.peak_memory_bytes}
                del model, base
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
