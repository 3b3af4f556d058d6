"""A ~1B Llama on one GPU: LoRA r=16 on every linear layer through the worker's code path
(workers.tasks.fine_tune), in bf16, with gradient checkpointing and with a 4-bit base, on fixed
1024-token rows and on packed chat rows of 32–1024 tokens.

    PYTHONPATH=$PWD .venv/bin/python bench/decoder_gpu.py [--steps 20] [--batch-size 8]
    PYTHONPATH=$PWD .venv/bin/python bench/decoder_gpu.py --tiny      # a small config on the CPU: checks it works

The model is built from its config with random weights (hidden 2048, 16 layers, 16 heads, 8 kv heads,
intermediate 5632, vocab 32000, untied head: 0.89B parameters; no download). Prints one JSON line per
setting: tokens/s (the loop's train_tokens_per_s), the peak memory (torch.cuda.max_memory_allocated
over the run, weights included; on a CPU the process's peak RSS so far, which only the first setting
reads cleanly) and the estimate (app.models.param_count.memory, POST /api/models/{id}/estimate's
memory_bytes) with its error. A setting that cannot run here (no bitsandbytes, no
training.quantization in this build, out of memory) prints a line that says why, and the rest go on.
"""
import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic_models import build_llama, chat_rows, dump, facts, text_rows  # noqa: E402

FULL = dict(hidden=2048, layers=16, heads=16, kv_heads=8, intermediate=5632, vocab=32000)
TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512)
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# setting name → extra training settings
VARIANTS = {
    "bf16": {"precision": "bf16"},
    "bf16+checkpointing": {"precision": "bf16", "gradient_checkpointing": True},
    "4bit": {"precision": "bf16", "quantization": "4bit"},
}


def skip_reason(training: dict) -> str | None:
    """Why a variant cannot run in this build / on this host, or None."""
    if training.get("quantization"):
        from app.runs.schemas import Training

        if "quantization" not in Training.model_fields:
            return "this build has no training.quantization"
        if importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed"
        try:
            import bitsandbytes  # noqa: F401
        except Exception as e:  # noqa: BLE001 — a broken install (no CUDA library for its build, …)
            return f"bitsandbytes does not import: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    return None


def run_setting(name: str, source: str, rows: list[dict], columns: dict, training: dict, shape: dict) -> dict:
    import torch

    from app.models.param_count import memory
    from app.runs.schemas import RunCreate
    from workers.tasks import fine_tune
    from workers.training.reporting import MemoryReporter

    cuda = torch.cuda.is_available()
    line = {"setting": name, "device": torch.cuda.get_device_name(0) if cuda else "cpu", **{
        k: training.get(k) for k in ("precision", "quantization", "gradient_checkpointing", "packing", "batch_size",
                                     "max_length", "max_steps")}}
    if (why := skip_reason(training)) is not None:
        return {**line, "skipped": why}
    config = RunCreate.model_validate({"dataset_id": 1, "task": "causal_lm", "columns": columns, "eval_fraction": 0.0,
                                       "method": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.05,
                                                  "target_modules": ALL_LINEAR},
                                       "training": training}, strict=False)
    line.update({k: getattr(config.training, k, line.get(k)) for k in ("gradient_checkpointing", "packing")})
    estimate = memory(shape, "causal_lm", 2, config.method.model_dump(), config.training.model_dump(),
                      device="cuda" if cuda else "cpu")
    line["estimate_bytes"] = estimate.total
    line["estimate_parts"] = estimate.parts
    out = Path(tempfile.mkdtemp())
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        summary, _ = fine_tune(config, rows, None, source, MemoryReporter(), artifact_dir=lambda kind: out / kind)
    except Exception as e:  # noqa: BLE001 — one failing setting must not cost the others
        return {**line, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500],
                "traceback_tail": traceback.format_exc()[-1500:]}
    peak = torch.cuda.max_memory_allocated() if cuda else summary.get("peak_memory_bytes")
    line.update(seconds=round(time.perf_counter() - start, 1), steps=summary.get("steps"),
                tokens_per_s=round(summary.get("train_tokens_per_s") or 0), peak_memory_bytes=peak,
                peak_memory_kind="torch.cuda.max_memory_allocated" if cuda else "process peak RSS (ru_maxrss)",
                estimate_error=round(estimate.total / peak - 1, 3) if peak else None,
                trainable_params=summary.get("trainable_params"), precision_used=summary.get("precision"),
                attention=summary.get("attention"))
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a small config and few steps (CPU check)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per setting (20; --tiny: 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per batch (8; --tiny: 2)")
    parser.add_argument("--only", action="append", help="run only settings whose name contains this (repeatable)")
    args = parser.parse_args()
    shape_args = TINY if args.tiny else FULL
    steps = args.steps or (2 if args.tiny else 20)
    batch = args.batch_size or (2 if args.tiny else 8)
    length = 128 if args.tiny else 1024
    shortest = 8 if args.tiny else 32

    import torch

    root = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    source = str(build_llama(root / "llama", max_positions=max(4096, length), save_dtype="float32" if args.tiny
                             else "bfloat16", **shape_args))
    shape = facts(Path(source))
    dump({"model": "llama", **shape_args, "parameters": shape["num_parameters"], "built_in_s":
          round(time.perf_counter() - started, 1), "cuda": torch.cuda.is_available(), "torch": torch.__version__})
    vocab = shape_args["vocab"]
    data = {
        # rows longer than max_length: every row is cut to exactly `length` tokens
        f"fixed{length}": (text_rows(batch * steps, length + 8, vocab), {"text": "text"}, {}),
        # mostly 2 conversations to a packed row; enough for every step
        f"chat{shortest}-{length}+packing": (chat_rows(batch * steps * 3, shortest, length, vocab, seed=1),
                                             {"messages": "messages"}, {"packing": True}),
    }
    for data_name, (rows, columns, extra) in data.items():
        for variant, settings in VARIANTS.items():
            name = f"{variant}/{data_name}"
            if args.only and not any(part in name for part in args.only):
                continue
            training = {"batch_size": batch, "max_length": length, "max_steps": steps, "learning_rate": 1e-4,
                        "checkpoint_every": 0, "eval_every": 10**6, **settings, **extra}
            dump(run_setting(name, source, rows, columns, training, shape))


if __name__ == "__main__":
    main()
