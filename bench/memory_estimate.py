"""The memory estimate (POST /api/models/{id}/estimate's memory_bytes) against measured peaks, on the CPU.

    PYTHONPATH=$PWD .venv/bin/python bench/memory_estimate.py [--steps 3] [--only NAME]

Small random Llama / GPT-2 / BERT models built from configs train through the worker's own code
path (workers.tasks.fine_tune) for a few steps, each setting in a fresh child process. Measured: the
child's peak RSS (ru_maxrss) minus its RSS just before fine_tune, with glibc's mmap threshold fixed
at 64 KiB (MALLOC_MMAP_THRESHOLD_) so that a freed tensor goes back to the OS and the RSS follows the
live tensors rather than the allocator's cache. Estimated: app.models.param_count.memory for a CPU
worker. Prints one JSON line per setting (estimate, measured, error = estimate / measured - 1) and a
last line with the largest error.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLAMA = dict(hidden=512, layers=4, heads=8, kv_heads=4, intermediate=1376, vocab=8000)

# name → (model, task, method, training, columns)
SETTINGS = {
    "llama-lora-fp32": ("llama", "causal_lm", {"type": "lora", "r": 16}, {}, {"text": "text"}),
    "llama-lora-all-fp32": ("llama", "causal_lm", {"type": "lora", "r": 16, "target_modules": ALL_LINEAR}, {},
                            {"text": "text"}),
    "llama-lora-all-fp32-ckpt": ("llama", "causal_lm", {"type": "lora", "r": 16, "target_modules": ALL_LINEAR},
                                 {"gradient_checkpointing": True}, {"text": "text"}),
    "llama-lora-all-bf16": ("llama", "causal_lm", {"type": "lora", "r": 16, "target_modules": ALL_LINEAR},
                            {"precision": "bf16"}, {"text": "text"}),
    "llama-lora-all-bf16-ckpt": ("llama", "causal_lm", {"type": "lora", "r": 16, "target_modules": ALL_LINEAR},
                                 {"precision": "bf16", "gradient_checkpointing": True}, {"text": "text"}),
    "llama-lora-all-bf16-packed-chat": ("llama", "causal_lm", {"type": "lora", "r": 16, "target_modules": ALL_LINEAR},
                                        {"precision": "bf16", "packing": True}, {"messages": "messages"}),
    "llama-full-fp32": ("llama", "causal_lm", {"type": "full"}, {}, {"text": "text"}),
    "gpt2-lora-fp32": ("gpt2", "causal_lm", {"type": "lora", "r": 16}, {}, {"text": "text"}),
    "bert-lora-classification-fp32": ("bert", "classification", {"type": "lora", "r": 8}, {},
                                      {"text": "text", "label": "label"}),
    # BERT's own dropouts (0.1, like MiniLM): on a CPU, SDPA then keeps the attention matrices
    "bert-dropout-lora-classification-fp32": ("bert-dropout", "classification", {"type": "lora", "r": 8}, {},
                                              {"text": "text", "label": "label"}),
}
BATCH, LENGTH = 8, 256


def build(kind: str, root: Path) -> Path:
    from bench.synthetic_models import build_llama

    if kind == "llama":
        return build_llama(root / "llama", max_positions=LENGTH * 4, **LLAMA)
    from tests.tiny_models import make_tiny_bert, make_tiny_gpt2

    if kind == "gpt2":
        path = make_tiny_gpt2(root / "gpt2", hidden=384, layers=4, heads=6)
        return widen(path, "n_positions", 1024, vocab=8000)
    path = make_tiny_bert(root / kind, hidden=384, layers=4, heads=6)
    dropout = {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1} if kind == "bert-dropout" else {}
    return widen(path, "max_position_embeddings", 512, **dropout)


def widen(path: Path, positions_key: str, positions: int, vocab: int | None = None, **settings) -> Path:
    """The tiny model rebuilt with more positions (and a larger vocabulary: a real LM head's share;
    `settings`: other config values)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    setattr(config, positions_key, positions)
    if vocab:
        config.vocab_size = vocab
    for key, value in settings.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    cls = AutoModelForCausalLM if vocab else AutoModel
    cls.from_config(config).save_pretrained(path, safe_serialization=True)
    return path


def rows_for(kind: str, columns: dict, n: int) -> list[dict]:
    from bench.synthetic_models import chat_rows, text_rows
    from tests.tiny_models import VOCAB_WORDS

    if "messages" in columns:
        return chat_rows(n, 32, LENGTH, LLAMA["vocab"])
    if kind == "llama":
        return text_rows(n, LENGTH + 8, LLAMA["vocab"])
    import random

    rng = random.Random(0)
    return [{"text": " ".join(rng.choices(VOCAB_WORDS, k=LENGTH + 8)), "label": rng.choice(["pos", "neg"])}
            for _ in range(n)]


def child(name: str, source: str, steps: int) -> None:
    import psutil

    from app.models.param_count import memory
    from app.runs.schemas import RunCreate
    from bench.synthetic_models import facts
    from workers.tasks import fine_tune
    from workers.training.reporting import MemoryReporter

    kind, task, method, training, columns = SETTINGS[name]
    training = {"batch_size": BATCH, "max_length": LENGTH, "max_steps": steps, "checkpoint_every": 0,
                "eval_every": 10**6, "precision": "fp32", **training}
    config = RunCreate.model_validate({"dataset_id": 1, "task": task, "columns": columns, "method": method,
                                       "training": training, "eval_fraction": 0.0}, strict=False)
    rows = rows_for(kind, columns, BATCH * steps * (4 if training.get("packing") else 1))
    estimate = memory(facts(Path(source)), task, 2, config.method.model_dump(), config.training.model_dump(), device="cpu")
    out = Path(tempfile.mkdtemp())
    before = psutil.Process().memory_info().rss
    summary, _ = fine_tune(config, rows, None, source, MemoryReporter(), artifact_dir=lambda k: out / k)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    measured = peak - before
    print(json.dumps({"setting": name, "estimate_bytes": estimate.total, "measured_bytes": measured,
                      "error": round(estimate.total / measured - 1, 3), "parts": estimate.parts,
                      "tokens_per_s": summary.get("train_tokens_per_s"), "precision": summary.get("precision")}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", action="append", help="run only this setting (repeatable)")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.steps)
        return
    names = args.only or list(SETTINGS)
    root = Path(tempfile.mkdtemp())
    sources = {kind: str(build(kind, root)) for kind in {SETTINGS[n][0] for n in names}}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    worst = 0.0
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", name,
                               sources[SETTINGS[name][0]]], env=env, capture_output=True, text=True)
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if proc.returncode != 0 or line is None:
            print(json.dumps({"setting": name, "error": "failed", "stderr": proc.stderr[-2000:]}), flush=True)
            continue
        print(line, flush=True)
        worst = max(worst, abs(json.loads(line)["error"]))
    print(json.dumps({"worst_abs_error": round(worst, 3), "batch_size": BATCH, "max_length": LENGTH}))


if __name__ == "__main__":
    main()
