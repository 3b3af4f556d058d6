"""The training task: claim a run, keep its lease alive, fine-tune, store the results, finish.

Wiring only: the engine lives in workers/training and workers/methods. Every way a run can
end lands in one guarded `finish` (succeeded, cancelled, failed with a one-line reason and the
traceback), except a lost lease: then the run belongs to someone else and is left alone.
"""
import logging
import os
import socket
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from app.artifacts.service import absolute_path, record_artifact, run_artifact_dir, run_dir
from app.artifacts.service import get as get_artifact
from app.config import Settings, get_settings
from app.datasets.models import Dataset
from app.datasets.reader import iter_rows
from app.datasets.service import dataset_file
from app.db import session_scope
from app.models.service import resolve_source
from app.queue import TRAIN_TASK
from app.runs.lifecycle import claim_next, finish, heartbeat, holds, start_attempt
from app.runs.models import Run
from app.runs.schemas import EvalSummary, RunCreate, RunSummary, Training
from workers.celery_app import celery
from workers.methods import get_method, total_parameters
from workers.methods.base import BuildContext
from workers.model_loading import load_base_model, load_tokenizer
from workers.training.checkpoints import PREDICTIONS_FILE, save_adapter, write_predictions
from workers.training.data import prepare_data
from workers.training.evaluation import evaluate
from workers.training.loop import TrainResult, seed_everything, train
from workers.training.resume import WEIGHTS_FILE, Checkpoint, CheckpointStore, load_weights
from workers.training.reporting import Reporter, SqlReporter

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"  # per call: prefork children have their own pid


@celery.task(name=TRAIN_TASK)
def train_run(message_run_id: int) -> None:
    """Train the run at the head of the queue. Each queued run has one message, but a message only
    says "a run is waiting": which one starts is the queue's order (runs can be moved)."""
    settings, worker = get_settings(), worker_id()
    with session_scope() as session:
        run_id = claim_next(session, worker, settings.lease_seconds, hint=message_run_id)
    if run_id is None:
        log.info("message for run %s: no run is queued (taken, cancelled or deleted); nothing to do", message_run_id)
        return
    if run_id != message_run_id:
        log.info("message for run %s: run %s is first in the queue, training it", message_run_id, run_id)
    stop, lease_lost, done = threading.Event(), threading.Event(), threading.Event()
    beat = threading.Thread(target=_keep_lease, args=(run_id, worker, settings, stop, lease_lost, done),
                            name=f"heartbeat-{run_id}", daemon=True)
    beat.start()
    try:
        reporter = SqlReporter(run_id, worker, stop)
        summary = _run(run_id, settings, reporter, worker, lease_lost)
        reporter.close()
        if lease_lost.is_set():
            log.warning("run %s: lease lost (another worker may own it now); not finishing it", run_id)
            return
        with session_scope() as session:
            if summary is None:
                finish(session, run_id, worker, "cancelled")
            else:
                finish(session, run_id, worker, "succeeded", summary=summary)
    except Exception as e:
        log.exception("run %s failed", run_id)
        with session_scope() as session:
            finish(session, run_id, worker, "failed", error=failure_reason(e), traceback=traceback.format_exc())
    finally:
        done.set()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next run in this process gets the whole GPU


def _keep_lease(run_id: int, worker: str, settings: Settings, stop: threading.Event,
                lease_lost: threading.Event, done: threading.Event) -> None:
    """Renew the lease every heartbeat_seconds; a cancel request or a lost lease sets `stop`."""
    while not done.wait(settings.heartbeat_seconds):
        try:
            with session_scope() as session:
                cancel = heartbeat(session, run_id, worker, settings.lease_seconds)
        except Exception:  # a database hiccup: the lease has slack, try again next beat
            log.warning("run %s: heartbeat failed", run_id, exc_info=True)
            continue
        if cancel is None:  # the reaper gave the run away: stop, and leave it to its new owner
            lease_lost.set()
            stop.set()
            return
        if cancel:
            stop.set()


def _run(run_id: int, settings: Settings, reporter: SqlReporter, worker: str, lease_lost: threading.Event) -> dict | None:
    """Load what the run needs from SQL and disk, fine-tune (from the last checkpoint when an
    earlier attempt left one), record the artifacts. None = stopped."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} was deleted")
        attempt = run.attempts
        config = RunCreate.model_validate(run.config)
        source = resolve_source(session, config.base_model)
        files = [_dataset_location(session, settings, config.dataset_id)]
        if config.eval_dataset_id is not None:
            files.append(_dataset_location(session, settings, config.eval_dataset_id))
    rows = [list(iter_rows(*f)) for f in files]
    checkpoints = _checkpoint_store(run_id, settings, reporter, worker, lease_lost)
    if attempt <= 1:
        checkpoints.prune(keep=set())  # a first attempt starts clean, whatever a reused run id left behind
    resume = checkpoints.latest()
    with session_scope() as session:
        if not start_attempt(session, run_id, worker, from_step=resume.step if resume else 0, attempt=attempt):
            raise LookupError(f"run {run_id} was taken over before it started")
    if resume is not None:
        log.info("run %s: attempt %s resumes from the checkpoint at step %s", run_id, attempt, resume.step)
    outcome = fine_tune(config, rows[0], rows[1] if len(rows) > 1 else None, source, reporter,
                        artifact_dir=lambda kind: run_artifact_dir(settings, run_id, kind),
                        find_adapter=lambda other: _adapter_location(settings, other),
                        checkpoints=checkpoints, resume=resume)
    if outcome is None:
        return None
    summary, artifacts = outcome
    if resume is not None:
        summary["resumed_from"] = {"step": resume.step, "attempt": attempt}
    with session_scope() as session:
        for kind, path in artifacts.items():
            record_artifact(session, run_id, kind, path)
    return summary


def _checkpoint_store(run_id: int, settings: Settings, reporter: SqlReporter, worker: str,
                      lease_lost: threading.Event) -> CheckpointStore:
    """The run's checkpoints beside its other artifacts. Before each write the buffered metric
    points go to SQL (so the curve up to a checkpoint is complete) and the worker checks it still
    holds the run; after it, the size is recorded (checkpoints count in the run's artifact size)."""

    def may_write() -> bool:
        reporter.flush()
        with session_scope() as session:
            return not lease_lost.is_set() and holds(session, run_id, worker)

    def on_saved(directory: Path) -> None:
        with session_scope() as session:
            record_artifact(session, run_id, "checkpoints", directory)

    return CheckpointStore(run_dir(settings, run_id) / "checkpoints", may_write=may_write, on_saved=on_saved)


def _adapter_location(settings: Settings, run_id: int) -> Path:
    """Another run's saved adapter directory, from the artifacts table."""
    with session_scope() as session:
        artifact = get_artifact(session, run_id=run_id, kind="adapter")
        if artifact is None:
            raise LookupError(f"run {run_id} has no saved adapter")
        return absolute_path(settings, artifact)


def _dataset_location(session, settings: Settings, dataset_id: int) -> tuple[Path, str, bool | None]:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise LookupError(f"dataset {dataset_id} no longer exists")
    return dataset_file(settings, dataset), dataset.format, dataset.has_header


def fine_tune(config: RunCreate, rows: list[dict], eval_rows: list[dict] | None, source: str, reporter: Reporter,
              artifact_dir: Callable[[str], Path],
              find_adapter: Callable[[int], Path] | None = None, checkpoints: CheckpointStore | None = None,
              resume: Checkpoint | None = None) -> tuple[dict, dict[str, Path]] | None:
    """The whole run without SQL: returns (summary, {artifact kind: path}), or None when stopped.

    find_adapter(run_id) finds another run's saved adapter (AdapterFusion builds on them).
    checkpoints: where resumable checkpoints go (default: a fresh artifact_dir("checkpoints"));
    resume: the checkpoint to continue from."""
    t = config.training
    tokenizer = load_tokenizer(source)
    max_length = usable_length(source, config)
    data = prepare_data(rows, eval_rows, task=config.task, columns=config.columns, tokenizer=tokenizer,
                        max_length=max_length, eval_fraction=config.eval_fraction, seed=t.seed)
    seed_everything(t.seed)  # the new head and the method's weights initialise the same every time
    method = get_method(config.method.type)
    context = BuildContext(source=source, tokenizer=tokenizer, adapter_dir=find_adapter or BuildContext().adapter_dir)
    model = method.build(load_base_model(source, config.task, data.labels, tokenizer), config.method, config.task,
                         context)
    checkpoints = checkpoints or CheckpointStore(lambda: artifact_dir("checkpoints"))
    result = train(model, data, task=config.task, training=t, pad_id=tokenizer.pad_token_id, reporter=reporter,
                   checkpoints=checkpoints, resume=resume)
    if result.stopped:
        return None

    def save(kind: str) -> tuple[Path, int]:
        out = artifact_dir(kind)
        return out, save_adapter(model, method, tokenizer, out, task=config.task, base_model=config.base_model,
                                 method_config=config.method.model_dump(), labels=data.labels,
                                 columns=config.columns.model_dump(exclude_none=True), max_length=max_length)

    artifacts: dict[str, Path] = {}
    final_eval, shipped_step = result.eval, result.steps
    if (best := best_checkpoint(checkpoints, result, t)) is not None:
        # metric_for_best: the downloads, the merged model, predictions and Try it use the best
        # step's weights; the last ones stay downloadable as adapter_last.
        artifacts["adapter_last"] = save("adapter_last")[0]
        load_weights(model, best.path / WEIGHTS_FILE)
        final_eval = result.best_eval or evaluate(model, data.eval, task=config.task, pad_id=tokenizer.pad_token_id,
                                                  batch_size=t.batch_size, device=next(model.parameters()).device)
        shipped_step = best.step
    adapter_dir, adapter_bytes = save("adapter")
    artifacts |= {"adapter": adapter_dir, **method.extra_artifacts(model, artifact_dir)}
    if final_eval is not None and final_eval.predictions is not None:
        path = artifact_dir("predictions") / PREDICTIONS_FILE
        write_predictions(path, final_eval.predictions, data.labels)
        artifacts["predictions"] = path
    if checkpoints.latest() is not None:
        artifacts["checkpoints"] = checkpoints.directory
    summary = RunSummary(
        trainable_params=method.trainable_parameters(model), total_params=total_parameters(model),
        adapter_bytes=adapter_bytes, peak_memory_bytes=result.peak_memory_bytes,
        train_samples_per_s=result.train_samples_per_s, train_tokens_per_s=result.train_tokens_per_s,
        eval=EvalSummary(**(final_eval.metrics if final_eval else {})),
        steps=result.steps, train_examples=len(data.train), eval_examples=len(data.eval), max_length_used=max_length,
    )
    if t.metric_for_best:
        summary.best_step, summary.stopped_early = shipped_step, result.stopped_early
    return summary.model_dump(mode="json"), artifacts


def best_checkpoint(checkpoints: CheckpointStore, result: TrainResult, training: Training) -> Checkpoint | None:
    """The best step's checkpoint when metric_for_best picks a step other than the last; else None."""
    if not training.metric_for_best or result.best_step is None or result.best_step == result.steps:
        return None
    saved = checkpoints.get(result.best_step)
    if saved is None:  # its write failed (disk full, lost lease): the last weights are all there is
        log.warning("the best checkpoint (step %s) is missing; shipping the last weights", result.best_step)
    return saved


def usable_length(source: str, config: RunCreate) -> int:
    """max_length, capped at what the model's position table holds once virtual tokens (prompt,
    P-tuning, prefix) take their places: asking a 512-position MiniLM for 1024 tokens truncates
    to 512 instead of failing with an index error deep inside the embedding."""
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(source)
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if not positions:
        return config.training.max_length
    room = positions - getattr(config.method, "num_virtual_tokens", 0)
    if room < 8:
        raise ValueError(f"the model holds {positions} positions; {config.method.num_virtual_tokens} virtual tokens "
                         "leave no room for text: use fewer num_virtual_tokens")
    return min(config.training.max_length, room)


def failure_reason(e: BaseException) -> str:
    """One line a person can act on. Our own checks raise ValueError / LookupError with such a line."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return "out of GPU memory: try a smaller batch_size or max_length, or gradient_accumulation"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, (ValueError, LookupError)) and text:
        return text[:500]
    return f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__
