"""The training task: claim a run, keep its lease alive, fine-tune, store the results, finish.

Wiring only: the engine lives in workers/training and workers/methods. Every way a run can
end lands in one guarded `finish` (succeeded, cancelled, failed with a one-line reason and the
traceback), except a lost lease: then the run belongs to someone else and is left alone.
"""
import errno
import logging
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from celery.signals import worker_process_init, worker_ready

from app.artifacts.service import (delete_for_run, discard, local_copy, publish, record_artifact, run_artifact_dir,
                                   run_dir)
from app.artifacts.service import get as get_artifact
from app.config import Settings, get_settings
from app.datasets.models import Dataset
from app.datasets.reader import iter_rows
from app.datasets.service import stored_file
from app.db import session_scope
from app.models.inspect import ModelSourceError, config_facts, model_facts, read_config
from app.models.service import resolve_source
from app.queue import TRAIN_TASK
from app.runs.checks import run_problems, usable_length
from app.runs.lifecycle import Lease, finish, hold, save_result, start_attempt, take_next
from app.runs.models import Run
from app.runs.service import enqueue
from app.runs.schemas import EvalSummary, RunCreate, RunSummary, Training
from app.storage import service as storage
from workers import device_report
from workers.device_fit import DeviceFilter
from workers.celery_app import celery
from workers.methods import get_method, total_parameters
from workers.methods.base import BuildContext, Method
from workers.model_card import write_model_cards
from workers.base_model_cache import BASE_MODELS
from workers.model_loading import attention_implementation, load_base_model, load_tokenizer
from workers.training.checkpoints import PREDICTIONS_FILE, save_adapter, write_predictions
from workers.training.distributed import ALONE, Alone
from workers.training.token_cache import cached_prepare_data
from workers.training.evaluation import evaluate
from workers.training.grad_checkpointing import enable_gradient_checkpointing
from workers.training.log_capture import RunLogCapture
from workers.training.loop import TrainResult, eval_batch_size, pick_device, seed_everything, train
from workers.training.mirrored_checkpoints import MirroredCheckpointStore
from workers.training.packing import resolve_packing
from workers.training.precision import resolve_precision, upcast_trainable
from workers.training.quantization import (check_supported, dequantised_weights, load_dequantised,
                                           prepare_for_training)
from workers.training.resume import WEIGHTS_FILE, Checkpoint, CheckpointStore, load_weights
from workers.training.reporting import LeaseKeeper, LeaseLost, Reporter, SqlReporter, retry_database

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"  # per call: prefork children have their own pid


@worker_ready.connect
@worker_process_init.connect
def _report_device(**_) -> None:
    """The worker's device in the workers table at start (solo pool: worker_ready; prefork: each child)."""
    device_report.start_heartbeat(worker_id)


@celery.task(name=TRAIN_TASK)
def train_run(message_run_id: int) -> None:
    """Train the run at the head of the queue. Each queued run has one message, but a message only
    says "a run is waiting": which one starts is the queue's order (runs can be moved)."""
    settings, worker = get_settings(), worker_id()
    device, memory = device_report.device_info()
    started = time.perf_counter()  # claim to first step: the summary's seconds_to_first_step
    with session_scope() as session:
        fits = DeviceFilter(session, device, memory)
        lease = take_next(session, worker, settings.lease_seconds, hint=message_run_id, fits=fits)
    if lease is None and fits.declined:
        pass_on(message_run_id, fits, settings)
        return
    if lease is None:
        log.info("message for run %s: no run is queued (taken, cancelled or deleted); nothing to do", message_run_id)
        return
    run_id = lease.run_id
    if run_id != message_run_id:
        log.info("message for run %s: run %s is first in the queue, training it", message_run_id, run_id)
    if (processes := requested_processes(run_id)) > 1:
        from workers import ranks  # torchrun's processes: rank 0 holds the lease, reports and saves

        device_report.report(worker, run_id=run_id)
        try:
            ranks.launch(lease, processes, settings)
        finally:
            device_report.report(worker, run_id=None)
        return
    keeper = LeaseKeeper(lease, settings.lease_seconds, settings.heartbeat_seconds).start()
    device_report.report(worker, run_id=run_id)
    logs = RunLogCapture(run_id).start()  # the run page's log tail
    try:
        reporter = SqlReporter(lease, keeper)
        reporter.on_flush.append(logs.write)
        _save(lease, keeper, reporter, _run(run_id, settings, reporter, started), settings)
        if storage.is_remote(settings):  # everything is in the object store now: the working copy goes
            shutil.rmtree(run_dir(settings, run_id), ignore_errors=True)
    except LeaseLost:
        log.warning("run %s: lease lost (attempt %s; another worker may own it now); nothing more is written",
                    run_id, lease.attempt)
    except Exception as e:
        log.exception("run %s failed", run_id)
        with session_scope() as session:
            if finish(session, run_id, worker, "failed", error=failure_reason(e), traceback=traceback.format_exc(),
                      attempt=lease.attempt):
                delete_for_run(session, settings=settings, run_id=run_id)  # no half-written adapter stays
    finally:
        keeper.close()
        logs.stop(store_rest=not keeper.lost.is_set())  # a stale attempt writes nothing more
        device_report.report(worker, run_id=None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next run in this process gets the whole GPU


def pass_on(message_run_id: int, fits: DeviceFilter, settings: Settings) -> None:
    """No queued run fits this worker's device (memory, quantisation, GPU count): the message goes back
    to the queue for a larger worker (acking it without a new one would leave the run to the reaper's
    lost-message timer), due pass_on_pause_seconds from now, so that no worker spins on it while none
    can take it. The task slot is free at once: this worker goes on with runs it can take, and a worker
    that receives the due message early holds it without blocking its own slot (Celery keeps ETA
    messages aside). The run stays queued; nothing about it fails."""
    log.info("message for run %s: no queued run fits this device (%s); leaving it for a larger worker",
             message_run_id, fits.describe())
    run_id = message_run_id if message_run_id in fits.declined else next(iter(fits.declined))
    with session_scope() as session:  # a new message (and enqueued_at), before this one is acked
        enqueue(session, run_id, countdown=settings.pass_on_pause_seconds)


def requested_processes(run_id: int) -> int:
    """training.gpus of the run: how many processes train it (1 = in this process)."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        training = (run.config or {}).get("training") or {} if run is not None else {}
    gpus = training.get("gpus", 1)
    return gpus if isinstance(gpus, int) and gpus > 1 else 1


def _save(lease: Lease, keeper: LeaseKeeper, reporter: SqlReporter,
          outcome: tuple[dict, dict[str, Path]] | None, settings: Settings) -> None:
    """The end of a run: the last points, then the result (artifacts rows, summary, status) in one
    fenced transaction. Both ride out a database outage (retried for save_retry_seconds): a run
    that trained to the end is not retrained because PostgreSQL restarted at the wrong moment."""
    if keeper.lost.is_set():  # before anything is written: a stale attempt's buffer is dropped
        raise LeaseLost()
    until = time.monotonic() + settings.save_retry_seconds
    retry_database(reporter.close, until=until, what=f"run {lease.run_id}: the last points")
    if outcome is None:  # stopped: a cancel (a lost lease raised above)
        with session_scope() as session:
            finish(session, lease.run_id, lease.worker, "cancelled", attempt=lease.attempt)
        return
    summary, artifacts = outcome

    def record(session) -> None:
        for kind, path in artifacts.items():
            record_artifact(session, lease.run_id, kind, path, commit=False)

    def write() -> str | None:
        with session_scope() as session:
            return save_result(session, lease, summary, record)

    status = retry_database(write, until=until, what=f"run {lease.run_id}: saving the result")
    if status is None:
        raise LeaseLost()
    if status == "cancelled":  # the cancel came in first: it wins, and what was saved goes
        log.info("run %s: cancelled while saving its results; its outputs are removed", lease.run_id)
        discard(settings, artifacts)


def load_run(run_id: int, settings: Settings) -> tuple[RunCreate, str, list[dict], list[dict] | None]:
    """(config, base model source, training rows, eval rows or None) of a run, from SQL and disk."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} was deleted")
        config = RunCreate.model_validate(run.config, strict=False)  # checked strictly when stored; read back as stored
        source = resolve_source(session, config.base_model)
        files = [_dataset_location(session, config.dataset_id)]
        if config.eval_dataset_id is not None:
            files.append(_dataset_location(session, config.eval_dataset_id))
    # Read outside the session: with an object store the first read on this host downloads the file.
    rows = [list(iter_rows(stored_file(settings, name), fmt, has_header, column_names=names))
            for name, fmt, has_header, names in files]
    return config, source, rows[0], rows[1] if len(rows) > 1 else None


def _run(run_id: int, settings: Settings, reporter: SqlReporter,
         started: float | None = None, ranks: Alone = ALONE) -> tuple[dict, dict[str, Path]] | None:
    """Load what the run needs from SQL and disk, fine-tune (from the last checkpoint when an earlier
    attempt left one): (summary, artifacts), or None = stopped. In a multi-process run this is rank 0's
    part (workers/ranks.py runs the others'): it picks the checkpoint and tells the others its step."""
    config, source, rows, eval_rows = load_run(run_id, settings)
    lease = reporter.lease
    checkpoints = _checkpoint_store(settings, reporter)
    if lease.attempt <= 1:
        checkpoints.prune(keep=set())  # a first attempt starts clean, whatever a reused run id left behind
    else:
        checkpoints.pull()  # an earlier attempt on another host left its checkpoints in the object store
    resume = checkpoints.latest()
    with session_scope() as session:
        if not start_attempt(session, lease, from_step=resume.step if resume else 0):
            raise LeaseLost()
    ranks.broadcast_int(resume.step if resume else -1)
    if resume is not None:
        log.info("run %s: attempt %s resumes from the checkpoint at step %s", run_id, lease.attempt, resume.step)
    outcome = fine_tune(config, rows, eval_rows, source, reporter,
                        artifact_dir=lambda kind: _output_dir(settings, run_id, kind, reporter),
                        find_adapter=lambda other: _adapter_location(settings, other),
                        checkpoints=checkpoints, resume=resume, started=started, ranks=ranks)
    if outcome is not None:  # README.md cards, a base model others can resolve (reads SQL: rides out an outage)
        if resume is not None:
            outcome[0]["resumed_from"] = {"step": resume.step, "attempt": lease.attempt}
        retry_database(lambda: write_model_cards(run_id, config, *outcome),
                       until=time.monotonic() + settings.save_retry_seconds, what=f"run {run_id}: the model card")
        reporter.check_lease()  # a worker that lost the run must not overwrite its successor's objects
        publish(settings, outcome[1])  # to the object store, when there is one
    return outcome  # recorded by _save, in the same transaction as the run's status


def _output_dir(settings: Settings, run_id: int, kind: str, reporter: Reporter) -> Path:
    """A fresh directory for one output, made only while this attempt still holds the run: a worker
    that lost its lease must not empty the directory its successor writes to."""
    if isinstance(reporter, SqlReporter):
        reporter.check_lease()
    return run_artifact_dir(settings, run_id, kind)


def _checkpoint_store(settings: Settings, reporter: SqlReporter) -> CheckpointStore:
    """The run's checkpoints beside its other artifacts. Before each write the buffered metric
    points go to SQL (so the curve up to a checkpoint is complete) and the worker checks it still
    holds the run; after it, the size is recorded (checkpoints count in the run's artifact size)."""
    lease = reporter.lease

    def may_write() -> bool:
        reporter.flush()  # raises LeaseLost when the run was given away
        with session_scope() as session:
            held = hold(session, lease) is not None
            session.commit()
        return held

    def on_saved(directory: Path) -> None:
        with session_scope() as session:
            if hold(session, lease) is not None:
                record_artifact(session, lease.run_id, "checkpoints", directory, commit=False)
            session.commit()

    directory = run_dir(settings, lease.run_id) / "checkpoints"
    if storage.is_remote(settings):
        return MirroredCheckpointStore(directory, store=storage.artifact_store(settings),
                                       prefix=f"runs/{lease.run_id}/checkpoints", may_write=may_write, on_saved=on_saved)
    return CheckpointStore(directory, may_write=may_write, on_saved=on_saved)


def _adapter_location(settings: Settings, run_id: int) -> Path:
    """Another run's saved adapter directory, from the artifacts table (this host's copy with an object store)."""
    with session_scope() as session:
        artifact = get_artifact(session, run_id=run_id, kind="adapter")
        if artifact is None:
            raise LookupError(f"run {run_id} has no saved adapter")
        session.expunge(artifact)
    return local_copy(settings, artifact)


def _dataset_location(session, dataset_id: int) -> tuple[str, str, bool | None, dict | None]:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise LookupError(f"dataset {dataset_id} no longer exists")
    return dataset.storage_name, dataset.format, dataset.has_header, dataset.column_names


def fine_tune(config: RunCreate, rows: list[dict], eval_rows: list[dict] | None, source: str, reporter: Reporter,
              artifact_dir: Callable[[str], Path],
              find_adapter: Callable[[int], Path] | None = None, checkpoints: CheckpointStore | None = None,
              resume: Checkpoint | None = None, started: float | None = None,
              ranks: Alone = ALONE) -> tuple[dict, dict[str, Path]] | None:
    """The whole run without SQL: returns (summary, {artifact kind: path}), or None when stopped (and, in
    a multi-process run, on every rank but 0: rank 0 saves the outputs).

    find_adapter(run_id) finds another run's saved adapter (AdapterFusion builds on them).
    checkpoints: where resumable checkpoints go (default: a fresh artifact_dir("checkpoints"));
    resume: the checkpoint to continue from. started: time.perf_counter() at the claim (seconds to first step)."""
    t = config.training
    settings = get_settings()
    started = time.perf_counter() if started is None else started
    facts = source_facts(source)
    # The server made the same checks at POST /api/runs; the data or the model may have changed since.
    problems = run_problems(config, num_rows=len(rows), columns=list(rows[0]) if rows else None,
                            eval_columns=list(eval_rows[0]) if eval_rows else None, facts=facts,
                            max_trainable=settings.max_trainable_params, dataset_name="training dataset",
                            rows=rows, eval_rows=eval_rows)
    if problems:
        raise ValueError(f"{'.'.join(map(str, problems[0].loc))}: {problems[0].msg}")
    tokenizer = load_tokenizer(source)
    max_length = usable_length(facts.get("max_positions"), getattr(config.method, "num_virtual_tokens", 0),
                               t.max_length)
    clock = time.perf_counter()
    with ranks.main_first():  # rank 0 tokenizes into the cache; the others read it
        data, cached = cached_prepare_data(
            rows, eval_rows, task=config.task, columns=config.columns, tokenizer=tokenizer, max_length=max_length,
            eval_fraction=config.eval_fraction,
            seed=t.seed if config.eval_split_seed is None else config.eval_split_seed,
            directory=settings.tokenized_cache_dir, max_bytes=settings.tokenized_cache_bytes)
    log.info("data %s in %.2f s", "from the tokenized cache" if cached else "tokenized", time.perf_counter() - clock)
    log.info("data: %d training and %d eval examples, max_length %d%s", len(data.train), len(data.eval), max_length,
             f", {len(data.labels)} labels: {', '.join(data.labels[:20])}{' …' if len(data.labels) > 20 else ''}"
             if data.labels else "")
    method = get_method(config.method.type)
    context = BuildContext(source=source, tokenizer=tokenizer, adapter_dir=find_adapter or BuildContext().adapter_dir)
    precision = resolve_precision(t.precision, pick_device())
    attention = attention_implementation(precision.device, precision.dtype)

    def build(where: str) -> tuple:
        """(base, model, how the base was loaded): the base model with the method applied, in training trim."""
        clock = time.perf_counter()
        seed_everything(t.seed)  # the new head and the method's weights initialise the same every time
        if t.quantization:
            check_supported(t.quantization, precision.device)  # before loading gigabytes it cannot use
            # A quantised base is not kept: its packed weights are bound to bitsandbytes' state, and the
            # memory it saves is what a quantised run is for.
            base, kept = load_base_model(source, config.task, data.labels, tokenizer, dtype=precision.dtype,
                                         attn_implementation=attention, quantization=t.quantization,
                                         device=precision.device), "off"
            base = prepare_for_training(base, t.gradient_checkpointing)
        else:  # "off" loads on the CPU: the training loop moves (or FSDP shards) the model onto the device
            base, kept = BASE_MODELS.load(source, config.task, data.labels, tokenizer, dtype=precision.dtype,
                                          attn_implementation=attention, seed=t.seed, where=where,
                                          max_bytes=settings.base_model_cache_max_bytes, device=precision.device)
        log.info("base model %s in %.2f s", {"hit": "copied from the kept one", "miss": "loaded (and kept)",
                                              "off": "loaded"}[kept], time.perf_counter() - clock)
        return base, method.build(base, config.method, config.task, context), kept

    # Several processes: each is a fresh one, so nothing is kept for a next run.
    base, model, kept = build(settings.base_model_cache if ranks.world == 1 else "off")
    # Resolved once (null = pack where exact), so a resumed attempt packs as the first one did.
    t = t.model_copy(update={"packing": resolve_packing(t.packing, config.task, config.method, base)})
    use_cache = getattr(base.config, "use_cache", None)  # checkpointing and packing turn it off for training
    upcast_trainable(model)  # the optimizer keeps fp32 weights; the frozen base stays in precision.dtype
    if t.gradient_checkpointing:
        enable_gradient_checkpointing(base)
    log.info("%s on %s: %s of %s parameters train", config.method.type, config.base_model,
             f"{method.trainable_parameters(model):,}", f"{total_parameters(model):,}")
    checkpoints = checkpoints or CheckpointStore(lambda: artifact_dir("checkpoints"))
    result = train(model, data, task=config.task, training=t, pad_id=tokenizer.pad_token_id, reporter=reporter,
                   checkpoints=checkpoints, resume=resume, started=started, ranks=ranks)
    if result.stopped:
        return None
    if ranks.world > 1:
        weights = ranks.trainable_weights(model)  # every rank takes part (FSDP gathers); rank 0 gets them
        if not ranks.main:
            return None
        if ranks.strategy == "fsdp":  # the outputs are written from a plain copy holding the whole weights
            base, model, _ = build("off")
            upcast_trainable(model)
            ranks.load_weights(model, weights)
    if use_cache is not None:
        base.config.use_cache = use_cache  # the merged model's config.json: generation reuses its cache

    def save(kind: str) -> tuple[Path, int]:
        out = artifact_dir(kind)
        return out, save_adapter(model, method, tokenizer, out, task=config.task, base_model=config.base_model,
                                 method_config=config.method.model_dump(), labels=data.labels,
                                 columns=config.columns.model_dump(exclude_none=True), max_length=max_length,
                                 quantization=t.quantization)

    artifacts: dict[str, Path] = {}
    final_eval, shipped_step = result.eval, result.steps
    if (best := best_checkpoint(checkpoints, result, t)) is not None:
        # metric_for_best: the downloads, the merged model, predictions and Try it use the best
        # step's weights; the last ones stay downloadable as adapter_last.
        artifacts["adapter_last"] = save("adapter_last")[0]
        load_weights(model, best.path / WEIGHTS_FILE)
        final_eval = result.best_eval or evaluate(model, data.eval, task=config.task, pad_id=tokenizer.pad_token_id,
                                                  batch_size=eval_batch_size(t), device=next(model.parameters()).device,
                                                  precision=precision)
        shipped_step = best.step
    adapter_dir, adapter_bytes = save("adapter")
    artifacts |= {"adapter": adapter_dir, **extra_artifacts(method, model, artifact_dir, config, source, data.labels,
                                                            tokenizer, precision.dtype, adapter_dir)}
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
        precision=precision.name, attention=base.config._attn_implementation, quantization=t.quantization,
        packing=t.packing, tokenized_cache=cached, base_model_cache=kept, seconds_to_first_step=result.first_step_s,
    )
    if t.metric_for_best:
        summary.best_step, summary.stopped_early = shipped_step, result.stopped_early
    if ranks.world > 1:
        summary.processes, summary.distributed = ranks.world, ranks.strategy
    if t.max_tokens or t.max_seconds:
        # A budgeted run says what ended it: its budget (stopped_by), or null when its steps/epochs ran out first.
        summary.stopped_by = result.stopped_by
        summary.budget = {"max_tokens": t.max_tokens, "max_seconds": t.max_seconds,
                          "tokens": result.train_tokens, "seconds": round(result.train_seconds, 3)}
    return summary.model_dump(mode="json"), artifacts


def extra_artifacts(method: Method, model, artifact_dir: Callable[[str], Path], config: RunCreate, source: str,
                    labels: list[str] | None, tokenizer, dtype: torch.dtype, adapter_dir: Path) -> dict[str, Path]:
    """The method's further downloads (LoRA's merged model). A quantised run's are built on the base loaded
    unquantised (on the CPU, in the run's precision) holding the dequantised weights the adapter was
    trained beside, with the saved adapter: re-quantising would round the folded update away, and the
    download needs no bitsandbytes."""
    if not config.training.quantization or type(method).extra_artifacts is Method.extra_artifacts:
        return method.extra_artifacts(model, artifact_dir)
    weights = dequantised_weights(model.get_base_model() if hasattr(model, "get_base_model") else model)
    plain = load_base_model(source, config.task, labels, tokenizer, dtype=dtype)
    load_dequantised(plain, weights)
    return method.extra_artifacts(method.load(plain, adapter_dir), artifact_dir)


def best_checkpoint(checkpoints: CheckpointStore, result: TrainResult, training: Training) -> Checkpoint | None:
    """The best step's checkpoint when metric_for_best picks a step other than the last; else None."""
    if not training.metric_for_best or result.best_step is None or result.best_step == result.steps:
        return None
    saved = checkpoints.get(result.best_step)
    if saved is None:  # its write failed (disk full, lost lease): the last weights are all there is
        log.warning("the best checkpoint (step %s) is missing; shipping the last weights", result.best_step)
    return saved


def source_facts(source: str) -> dict:
    """The base model's shape facts as the server reads them: from config.json (and the safetensors
    headers) of a local directory, or from the hub config of a hub id (without a parameter count)."""
    path = Path(source)
    if path.is_dir():
        try:
            return model_facts(path)
        except ModelSourceError:
            return config_facts(read_config(path)) if (path / "config.json").is_file() else {}
    from transformers import AutoConfig

    return config_facts(AutoConfig.from_pretrained(source).to_dict())


def failure_reason(e: BaseException) -> str:
    """One line a person can act on. Our own checks raise ValueError / LookupError with such a line."""
    if (where := out_of_memory(e)) is not None:
        checkpointing = ("; or turn on training.gradient_checkpointing"
                         if "gradient_checkpointing" in Training.model_fields else "")
        return (f"out of {where} memory: lower training.batch_size (raise training.gradient_accumulation to keep "
                f"the effective batch size) or training.max_length{checkpointing}")
    if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left on device" in str(e):
        return "out of disk space while writing the run's outputs: free space on the artifact storage and run it again"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, (ValueError, LookupError)) and text:
        return text[:500]
    return f"{type(e).__name__}: {text}"[:500] if text else type(e).__name__


def out_of_memory(e: BaseException) -> str | None:
    """Where memory ran out ("GPU" or "CPU") when the error, or one it was raised from, is that; else None.

    CUDA raises torch.cuda.OutOfMemoryError; on the CPU Python raises MemoryError and torch's
    allocator a RuntimeError "DefaultCPUAllocator: can't allocate memory"."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(e):
            return "GPU"
        if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
            return "CPU"
        e = e.__cause__ or e.__context__
    return None
