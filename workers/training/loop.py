"""The training loop: AdamW over the trainable parameters, linear warmup then linear decay,
gradient accumulation, clipping at 1.0, periodic evaluation, cooperative stop.

One function, read top to bottom. It knows nothing about SQL or Celery: metrics go to a
`Reporter`, and `reporter.should_stop()` is checked before every optimizer step.
"""
import logging
import math
import random
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import torch
from torch import nn

from app.runs.schemas import Training
from workers.training.data import Batch, Example, PreparedData, collate
from workers.training.evaluation import EvalResult, autocast, batch_loss, evaluate
from workers.training.gpu_metrics import GpuSampler
from workers.training.reporting import Reporter
from workers.training.schedule import lr_schedule

log = logging.getLogger(__name__)

GRAD_CLIP = 1.0
LOG_SECONDS = 1.0  # how often queued step losses are synced off the device and reported


@dataclass
class TrainResult:
    steps: int  # optimizer steps taken
    stopped: bool  # ended early by reporter.should_stop()
    eval: EvalResult | None  # the last evaluation (None without eval data or when stopped)
    train_samples_per_s: float
    train_tokens_per_s: float
    peak_memory_bytes: int


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def train(model: nn.Module, data: PreparedData, *, task: str, training: Training, pad_id: int,
          reporter: Reporter, device: torch.device | None = None) -> TrainResult:
    if not data.train:
        raise ValueError("there are no training examples")
    device = device or pick_device()
    seed_everything(training.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device)
    model.train()

    # Optimizer: decay matrices only (not biases / norms), over what the method left trainable.
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the method left no trainable parameters")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": training.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=training.learning_rate, fused=device.type == "cuda")

    # Schedule length: max_steps wins over epochs.
    accum = training.gradient_accumulation
    batches_per_epoch = math.ceil(len(data.train) / training.batch_size)
    total_steps = training.max_steps or max(1, math.ceil(training.epochs * batches_per_epoch / accum))
    warmup_steps = round(training.warmup_ratio * total_steps)
    lr_at = lr_schedule(training, total_steps, warmup_steps)  # step (from 0) → rate, after warmup as training.lr_scheduler says

    def run_eval(step: int) -> EvalResult | None:
        result = evaluate(model, data.eval, task=task, pad_id=pad_id, batch_size=training.batch_size, device=device)
        if result is not None:
            for name, value in result.metrics.items():
                reporter.report(f"eval/{name}", step, value)
            log.info("step %d/%d: eval %s", step, total_steps,
                     ", ".join(f"{name} {value:.4g}" for name, value in result.metrics.items()))
        return result

    gpu = GpuSampler(device)
    log.info("training %d steps of %d examples on %s", total_steps, training.batch_size * accum, device)
    stream = micro_batches(data.train, training.batch_size, training.seed, pad_id)
    pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []  # step metrics still on the device
    window = {"start": time.perf_counter(), "tokens": 0, "samples": 0}
    totals = {"seconds": 0.0, "tokens": 0, "samples": 0}

    def report_window(step: int) -> None:
        """Report the queued steps with one device sync, and the window's throughput."""
        values = torch.stack([torch.stack((loss, norm.float())) for _, loss, norm, _ in pending]).tolist()
        elapsed = max(time.perf_counter() - window["start"], 1e-9)
        for (s, _, _, lr_s), (loss_v, norm_v) in zip(pending, values):
            if not math.isfinite(loss_v):
                raise FloatingPointError(f"training diverged: the loss is {loss_v} at step {s}; "
                                         "try a lower learning rate")
            reporter.report("train/loss", s, loss_v)
            reporter.report("train/grad_norm", s, norm_v)
            reporter.report("train/lr", s, lr_s)
        reporter.report("train/tokens_per_s", step, window["tokens"] / elapsed)
        reporter.report("train/samples_per_s", step, window["samples"] / elapsed)
        reporter.report("system/memory_bytes", step, memory_bytes(device))
        for name, value in gpu.sample():
            reporter.report(name, step, value)
        totals["seconds"] += elapsed
        totals["tokens"] += window["tokens"]
        totals["samples"] += window["samples"]
        pending.clear()
        window.update(start=time.perf_counter(), tokens=0, samples=0)

    last_eval: EvalResult | None = None
    step = micro_done = 0
    stopped = False
    while step < total_steps:
        if reporter.should_stop():
            stopped = True
            break
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr

        # Forward/backward over `accum` micro-batches; the loss is the mean over every target of
        # the step, so uneven batches (padding, masked prompts, a short last batch) weigh right.
        micro = [next(stream) for _ in range(accum)]
        step_targets = max(1, sum(b.num_targets for b in micro))
        step_loss = torch.zeros((), device=device)
        for batch in micro:
            batch = batch.to(device)
            with autocast(device):
                loss_sum, _ = batch_loss(model, batch, task)
            (loss_sum / step_targets).backward()
            step_loss += loss_sum.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        micro_done += accum
        window["tokens"] += sum(b.num_tokens for b in micro)
        window["samples"] += sum(len(b.rows) for b in micro)
        pending.append((step, step_loss / step_targets, grad_norm, lr))
        reporter.report("train/epoch", step, micro_done / batches_per_epoch)

        eval_due = step % training.eval_every == 0 or step == total_steps
        if eval_due or time.perf_counter() - window["start"] >= LOG_SECONDS:
            report_window(step)
        if eval_due and data.eval:
            last_eval = run_eval(step)
            window["start"] = time.perf_counter()  # evaluation time is not training throughput
        reporter.progress(step / total_steps)
    if pending:
        report_window(step)

    seconds = totals["seconds"]
    return TrainResult(steps=step, stopped=stopped, eval=None if stopped else last_eval,
                       train_samples_per_s=totals["samples"] / seconds if seconds else 0.0,
                       train_tokens_per_s=totals["tokens"] / seconds if seconds else 0.0,
                       peak_memory_bytes=peak_memory_bytes(device))


def micro_batches(examples: list[Example], batch_size: int, seed: int, pad_id: int) -> Iterator[Batch]:
    """Endless shuffled batches, a fresh seeded permutation each epoch (same seed, same order)."""
    epoch = 0
    while True:
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for start in range(0, len(order), batch_size):
            yield collate([examples[i] for i in order[start:start + batch_size]], pad_id)
        epoch += 1


def memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return psutil.Process().memory_info().rss


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
