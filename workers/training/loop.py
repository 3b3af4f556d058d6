"""The training loop: AdamW over the trainable parameters, linear warmup then linear decay,
gradient accumulation, clipping at 1.0, periodic evaluation, cooperative stop, resumable
checkpoints, the best checkpoint, early stopping and budgets (training.max_tokens / max_seconds: the run stops cleanly after
the step that spends its budget, and the learning-rate schedule runs over the share of it spent).

One function, read top to bottom. It knows nothing about SQL or Celery: metrics go to a
`Reporter`, and `reporter.should_stop()` is checked before every optimizer step. Resuming from a
checkpoint restores weights, optimizer, RNGs, data position and LR step, so the run continues
exactly as if it had never stopped.
"""
import logging
import math
import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psutil
import torch
from torch import nn

from app.runs.schemas import LOWER_IS_BETTER, Training
from workers.training.data import Batch, Example, PreparedData, collate
from workers.training.distributed import ALONE, Alone
from workers.training.evaluation import EvalResult, autocast, batch_loss, evaluate
from workers.training.gpu_metrics import GpuSampler
from workers.training.packing import packed_collate, prepare_for_packing
from workers.training.precision import resolve_precision
from workers.training.reporting import Reporter
from workers.training.resume import CHECKPOINT_SECONDS, Checkpoint, CheckpointStore, LoopState
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
    best_step: int | None = None  # metric_for_best set: the step of the best evaluation
    best_eval: EvalResult | None = None  # that evaluation, when this attempt made it
    stopped_early: bool = False
    stopped_by: str | None = None  # "max_tokens" or "max_seconds" when that budget ended the run
    train_tokens: int = 0  # training tokens (padding not counted) and seconds over every attempt
    train_seconds: float = 0.0
    first_step_s: float | None = None  # from `started` (the claim) to the end of this attempt's first step


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def train(model: nn.Module, data: PreparedData, *, task: str, training: Training, pad_id: int,
          reporter: Reporter, device: torch.device | None = None, checkpoints: CheckpointStore | None = None,
          resume: Checkpoint | None = None, started: float | None = None, ranks: Alone = ALONE) -> TrainResult:
    """Train `model` in place. With `checkpoints`, save resumable checkpoints as training.checkpoint_every
    says and at each new best evaluation; with `resume`, continue from that checkpoint. `started`: the
    time.perf_counter() of the claim, for the `system/seconds_to_first_step` point. `ranks`: this
    process's place in a multi-process run (workers/training/distributed.py); every rank calls train()."""
    if not data.train:
        raise ValueError("there are no training examples")
    if training.metric_for_best and checkpoints is None:
        raise ValueError("metric_for_best needs a checkpoint store to keep the best weights in")
    device = device or pick_device()
    seed_everything(training.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    model = ranks.prepare(model, device)  # FSDP shards here, before the optimizer sees the parameters
    model.train()
    # The base weights were loaded in this dtype (fine_tune); the forward autocasts to it, and
    # fp16 on CUDA scales the loss so small gradients do not underflow.
    precision = resolve_precision(training.precision, device)
    scaler = precision.grad_scaler()

    # Optimizer: decay matrices only (not biases / norms), over what the method left trainable.
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the method left no trainable parameters")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": training.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=training.learning_rate,
                                  fused=device.type == "cuda" and all(p.dtype == torch.float32 for p in params))

    # Schedule length: max_steps wins over epochs.
    accum = training.gradient_accumulation
    batches_per_epoch = math.ceil(len(data.train) / training.batch_size)
    total_steps = training.max_steps or max(1, math.ceil(training.epochs * batches_per_epoch / accum))
    warmup_steps = round(training.warmup_ratio * total_steps)
    schedule = {"kind": training.lr_scheduler, "total_steps": total_steps, "warmup_steps": warmup_steps,
                "peak_lr": training.learning_rate}  # the LR is a function of the step: restoring the step restores it
    lr_at = lr_schedule(training, total_steps, warmup_steps)  # step (from 0) → rate, after warmup as training.lr_scheduler says

    # Everything the loop carries from step to step lives in `state`, so a checkpoint can save it.
    state = LoopState()
    if resume is not None:
        state = checkpoints.restore(resume, model, optimizer, ranks=ranks)
    if training.packing:
        prepare_for_packing(model)
    # Packed rows carry no padding, so grouping by length would only make batches less random.
    stream = BatchStream(data.train, training.batch_size, training.seed, pad_id, state.epoch, state.batch_start,
                         collate_fn=packed_collate(training.max_length) if training.packing else collate,
                         group_by_length=training.group_by_length and not training.packing, group_steps=accum,
                         shard=ranks.shard)
    forward = compiled(ranks.wrap(model), training, device)
    eval_batch = eval_batch_size(training)
    best_eval: EvalResult | None = None
    metric = training.metric_for_best

    def run_eval(step: int) -> EvalResult | None:
        result = evaluate(model, data.eval, task=task, pad_id=pad_id, batch_size=eval_batch, device=device,
                          precision=precision)
        if result is not None:
            for name, value in result.metrics.items():
                reporter.report(f"eval/{name}", step, value)
            log.info("step %d/%d: eval %s", step, total_steps,
                     ", ".join(f"{name} {value:.4g}" for name, value in result.metrics.items()))
        return result

    def track_best(step: int, result: EvalResult) -> bool:
        """Update the best metric and the early-stopping count; True when this evaluation is the new best."""
        value = result.metrics.get(metric.removeprefix("eval/"))
        if value is None or not math.isfinite(value):
            improved = False
        elif state.best_value is None:
            improved = True
        else:
            improved = value < state.best_value if LOWER_IS_BETTER[metric] else value > state.best_value
        if improved:
            state.best_value, state.best_step, state.evals_without_improvement = value, step, 0
        else:
            state.evals_without_improvement += 1
            patience = training.early_stopping_patience
            state.stopped_early = patience is not None and state.evals_without_improvement >= patience
        return improved

    gpu = GpuSampler(device)
    log.info("training %d steps of %d examples on %s%s", total_steps, training.batch_size * accum, device,
             f", resuming after step {state.step}" if resume is not None else "")
    pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []  # step metrics still on the device
    window = {"start": time.perf_counter(), "tokens": 0, "samples": 0}
    totals = state.totals

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

    last_checkpoint = {"step": state.step, "time": time.monotonic()}

    def save_checkpoint() -> None:
        if pending:
            report_window(state.step)  # the points up to the checkpoint go out before it is written
        state.epoch, state.batch_start = stream.epoch, stream.start
        # A refused or failed write (database or disk down) waits for the next due one, not the next step.
        if ranks.world == 1:
            checkpoints.save(state, model, optimizer, schedule)
        else:  # whole tensors on rank 0 (every rank takes part in gathering FSDP's shards); rank 0 writes
            weights, optimizer_state = ranks.trainable_weights(model), ranks.optimizer_state(optimizer)
            if ranks.main:
                checkpoints.save(state, model, optimizer, schedule, weights=weights, optimizer_state=optimizer_state)
        last_checkpoint.update(step=state.step, time=time.monotonic())
        window["start"] = time.perf_counter()  # writing is not training throughput

    def checkpoint_due() -> bool:
        every = training.checkpoint_every
        if checkpoints is None or every == 0:
            return False
        if state.step == total_steps or state.stopped_early or state.stopped_by:
            return True  # a retry after a failed final write then has nothing left to train
        if every is None:
            return time.monotonic() - last_checkpoint["time"] >= CHECKPOINT_SECONDS
        return state.step - last_checkpoint["step"] >= every

    def budget_spent() -> float:
        """The share of the run's token or time budget used so far (the larger one; 0 without a budget).
        Seconds are training seconds: the current window's plus the reported ones (evaluation excluded)."""
        shares = [0.0]
        if training.max_tokens:
            shares.append((totals["tokens"] + window["tokens"]) / training.max_tokens)
        if training.max_seconds:
            shares.append((totals["seconds"] + time.perf_counter() - window["start"]) / training.max_seconds)
        return max(shares)

    def schedule_step() -> int:
        """The step the LR schedule is at: with a budget, the share spent (of the steps or of the budget,
        whichever is further) decides, so the rate warms up and decays over the budget."""
        if not (training.max_tokens or training.max_seconds):
            return state.step
        share = max(state.step / total_steps, budget_spent())
        return min(total_steps - 1, int(share * total_steps))

    def budget_reason() -> str | None:
        if training.max_tokens and totals["tokens"] + window["tokens"] >= training.max_tokens:
            return "max_tokens"
        if training.max_seconds and totals["seconds"] + time.perf_counter() - window["start"] >= training.max_seconds:
            return "max_seconds"
        return None

    last_eval: EvalResult | None = None
    stopped = False
    first_step_s: float | None = None
    while state.step < total_steps and not state.stopped_early and state.stopped_by is None:
        # Forward/backward over `accum` micro-batches; the loss is the mean over every target of
        # the step, so uneven batches (padding, masked prompts, a short last batch) weigh right.
        # Several ranks: this rank's share of each global batch, the counts summed over the ranks
        # together with the stop request (rank 0's reporter decides; one collective a step).
        micro = [next(stream) for _ in range(accum)]
        stop, step_targets, step_tokens, step_samples = ranks.sum(
            [float(reporter.should_stop()), sum(b.num_targets for b in micro), sum(b.num_tokens for b in micro),
             sum(len(b.rows) for b in micro)])
        if stop:
            stopped = True
            break
        lr = lr_at(schedule_step())
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_targets = max(1, step_targets)
        step_loss = torch.zeros((), device=device)
        for i, batch in enumerate(micro):
            batch = batch.to(device)
            with ranks.accumulating(forward, model, last=i == accum - 1), autocast(device, precision):
                loss_sum, _ = batch_loss(forward, batch, task)
                if batch.num_targets == 0:
                    loss_sum = loss_sum * 0  # an empty share (a short last batch): the collectives still run
            # Gradients are averaged over the ranks: times world, each rank's share adds up to the whole batch's.
            scaler.scale(loss_sum * ranks.world / step_targets).backward()
            step_loss += loss_sum.detach()
        ranks.reduce_(step_loss)
        scaler.unscale_(optimizer)  # clipping sees the true gradients
        grad_norm = ranks.plain(torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP))
        scaler.step(optimizer)  # skipped (and the scale lowered) when fp16 gradients overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step = state.step
        if first_step_s is None and started is not None:
            first_step_s = time.perf_counter() - started  # queued work may still run on a GPU: close enough
            reporter.report("system/seconds_to_first_step", step, first_step_s)
            log.info("first step %.2f s after the claim", first_step_s)

        state.micro_done += accum
        window["tokens"] += int(step_tokens)
        window["samples"] += int(step_samples)
        pending.append((step, step_loss / step_targets, grad_norm, lr))
        reporter.report("train/epoch", step, state.micro_done / batches_per_epoch)
        reason = budget_reason()
        if training.max_seconds and ranks.any(reason is not None) and reason is None:
            reason = "max_seconds"  # another rank's clock ran out first: all stop after the same step
        if reason is not None:
            state.stopped_by = reason
            log.info("step %d: the %s budget is spent; stopping", step, "token" if reason == "max_tokens" else "time")

        eval_due = step % training.eval_every == 0 or step == total_steps or state.stopped_by is not None
        if eval_due or time.perf_counter() - window["start"] >= LOG_SECONDS:
            report_window(step)
        if eval_due and data.eval:
            last_eval = run_eval(step)
            window["start"] = time.perf_counter()  # evaluation time is not training throughput
            if metric and last_eval is not None and track_best(step, last_eval):
                best_eval = last_eval
                save_checkpoint()  # the best weights, kept until a better evaluation comes
        if ranks.any(checkpoint_due()):  # time-based checkpoints: the ranks' clocks differ
            save_checkpoint()
        reporter.progress(1.0 if state.stopped_by else min(1.0, max(step / total_steps, budget_spent())))
    if pending:
        report_window(state.step)
    if resume is not None and last_eval is None and not stopped and data.eval:
        # Resumed from the final checkpoint (a retry after the final write failed): the last
        # evaluation's points are in already, but the summary and predictions need its result.
        last_eval = evaluate(model, data.eval, task=task, pad_id=pad_id, batch_size=eval_batch, device=device,
                             precision=precision)

    seconds = totals["seconds"]
    return TrainResult(steps=state.step, stopped=stopped, eval=None if stopped else last_eval,
                       train_samples_per_s=totals["samples"] / seconds if seconds else 0.0,
                       train_tokens_per_s=totals["tokens"] / seconds if seconds else 0.0,
                       peak_memory_bytes=peak_memory_bytes(device), best_step=state.best_step,
                       best_eval=best_eval,  # None when the best came from an attempt before a resume
                       stopped_early=state.stopped_early, stopped_by=state.stopped_by,
                       train_tokens=totals["tokens"], train_seconds=seconds, first_step_s=first_step_s)


class BatchStream:
    """Endless shuffled batches, a fresh seeded order each epoch (same seed, same order).

    group_by_length: each epoch's permutation is cut into windows of GROUP_WINDOW optimizer steps,
    each window sorted by length and cut into steps, and the full steps shuffled (a short last one stays
    last): batches of similar lengths, in a random order. Grouping whole steps (batch_size x
    group_steps) gives an accumulated step the same examples as one big batch.

    (epoch, start) is the position of the next batch: a checkpoint saves it and a resumed run
    starts the stream there."""

    def __init__(self, examples: list[Example], batch_size: int, seed: int, pad_id: int, epoch: int = 0, start: int = 0,
                 collate_fn: Callable[[list[Example], int], Batch] = collate, group_by_length: bool = False,
                 group_steps: int = 1, shard: Callable[[list[int]], list[int]] | None = None):
        self.examples, self.batch_size, self.seed, self.pad_id = examples, batch_size, seed, pad_id
        # Several ranks: each draws the same global batch and keeps its share (workers/training/distributed.py).
        self.shard = shard
        self.collate_fn = collate_fn  # collate (padded rows) or packing's (several examples a row)
        self.group_by_length = group_by_length
        self.group_steps = group_steps  # micro-batches per optimizer step: a step's examples are grouped together
        self.epoch, self.start = epoch, start
        self._order: tuple[int, list[int]] | None = None  # (epoch, permutation)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.start >= len(self.examples):
            self.epoch, self.start = self.epoch + 1, 0
        if self._order is None or self._order[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.examples), generator=generator).tolist()
            if self.group_by_length:
                order = grouped_order(order, [len(e.input_ids) for e in self.examples],
                                      self.batch_size * self.group_steps, generator)
            self._order = (self.epoch, order)
        indices = self._order[1][self.start:self.start + self.batch_size]
        self.start += self.batch_size
        if self.shard is None:
            return self.collate_fn([self.examples[i] for i in indices], self.pad_id)
        mine = self.shard(indices)
        if mine:
            return self.collate_fn([self.examples[i] for i in mine], self.pad_id)
        # A short last batch left this rank nothing: it still runs a forward and backward (DDP and FSDP
        # need every rank in every collective), on one example that counts for nothing.
        empty = self.collate_fn([self.examples[indices[0]]], self.pad_id)
        return Batch(empty.inputs, empty.labels, [], 0, 0)


GROUP_WINDOW = 64  # batches sorted together: wide enough to find like lengths, narrow enough to stay random


def grouped_order(order: list[int], lengths: list[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """`order` regrouped so each run of batch_size indices holds similar lengths, the batches shuffled."""
    window = batch_size * GROUP_WINDOW
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda i: lengths[i])
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    short = [batches.pop()] if len(batches[-1]) < batch_size else []  # stays last: batch boundaries stay aligned
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()] + short
    return [i for batch in shuffled for i in batch]


def eval_batch_size(training: Training) -> int:
    """training.eval_batch_size, or twice the training batch: evaluation keeps no activations for a backward."""
    return training.eval_batch_size or min(4096, 2 * training.batch_size)


def compiled(model: nn.Module, training: Training, device: torch.device) -> nn.Module:
    """What the training forward calls: torch.compile's wrapper (sharing the model's parameters) when
    training.compile is on and the device is a GPU, else the model itself. Evaluation and saving use the
    model; dynamic shapes, since padded batches change length from step to step."""
    if not training.compile or device.type != "cuda":
        return model
    return torch.compile(model, dynamic=True)


def memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return psutil.Process().memory_info().rss


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
