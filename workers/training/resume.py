"""Resumable training checkpoints: everything a killed run needs to continue as if it never stopped.

A checkpoint is a directory `step-<N>/` in the run's checkpoint directory:
- `weights.safetensors`: the trainable parameters, by name (frozen weights come from the base model);
- `optimizer.safetensors`: the optimizer's per-parameter tensors, flattened to `state.<index>.<key>`;
- `rng.safetensors`: the torch CPU generator state and one state per CUDA device;
- `state.json`: the rest — step, data position (epoch, index in that epoch's permutation), the
  optimizer's non-tensor state and param groups, the LR schedule, Python's RNG state, the best
  metric so far and the early-stopping count. Nothing is pickled.
It is written under a temporary name and renamed into place, so a crash mid-write leaves the
previous checkpoint as it was; only directories with a `state.json` count. Pruning keeps the
newest and the best.
"""
import json
import logging
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# training.checkpoint_every = null: checkpoint after this much training time, so a dead worker
# costs at most about five minutes of work.
CHECKPOINT_SECONDS = 300.0
WEIGHTS_FILE, OPTIMIZER_FILE, RNG_FILE, STATE_FILE = ("weights.safetensors", "optimizer.safetensors",
                                                     "rng.safetensors", "state.json")
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"


@dataclass
class LoopState:
    """The training loop's own position and bookkeeping (JSON in state.json)."""

    step: int = 0  # optimizer steps done
    micro_done: int = 0  # micro-batches consumed (train/epoch = micro_done / batches per epoch)
    epoch: int = 0  # the data stream's epoch …
    batch_start: int = 0  # … and index into that epoch's permutation of the next example to use
    best_value: float | None = None  # metric_for_best at best_step
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    stopped_by: str | None = None  # "max_tokens" / "max_seconds": that budget was spent
    totals: dict = field(default_factory=lambda: {"seconds": 0.0, "tokens": 0, "samples": 0})


def flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors for safetensors, JSON-able rest) of `optimizer.state_dict()`."""
    tensors, values = {}, {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                values.setdefault(str(index), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
              for group in state_dict["param_groups"]]
    return tensors, {"state_values": values, "param_groups": groups}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """The inverse of flatten_optimizer: a dict `optimizer.load_state_dict` takes."""
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    for index, entries in rest["state_values"].items():
        state.setdefault(int(index), {}).update(entries)
    # JSON turned tuples (AdamW's betas) into lists; `params` is the one list that stays a list.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
              for group in rest["param_groups"]]
    return {"state": state, "param_groups": groups}


def rng_state() -> tuple[dict[str, torch.Tensor], list]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    return tensors, [version, list(internal), gauss]


def restore_rng(tensors: dict[str, torch.Tensor], python_state: list) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))


def trainable_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()
            if p.requires_grad}


def load_weights(model: nn.Module, path: Path) -> None:
    """Copy the trainable weights saved in `path` into `model` in place (names must match exactly)."""
    copy_weights(model, load_file(str(path)))


def copy_weights(model: nn.Module, saved: dict[str, torch.Tensor],
                 place: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
    """Copy saved trainable weights into `model` in place (names must match exactly). `place(param,
    tensor)`: the tensor as that parameter holds it (a multi-process run's shard,
    workers/training/distributed.py); by default copied as it is."""
    params = dict(model.named_parameters())
    missing = sorted(set(saved) - set(params))
    if missing:
        raise ValueError(f"the checkpoint does not fit the model: it has no parameter {missing[0]}")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor if place is None else place(params[name], tensor))


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


class CheckpointStore:
    """The checkpoints of one run, in `directory`.

    `may_write()` is asked before every write (the worker flushes its metric points there, so the
    curve up to a checkpoint is in SQL before the checkpoint is, and checks it still holds the run);
    `on_saved(directory)` is told after each one (to record the size). `directory` may be a function
    that makes it, called on first use (a run that never checkpoints creates nothing)."""

    def __init__(self, directory: Path | Callable[[], Path], *, may_write: Callable[[], bool] = lambda: True,
                 on_saved: Callable[[Path], None] = lambda directory: None):
        self._directory = directory
        self.may_write = may_write
        self.on_saved = on_saved

    @property
    def directory(self) -> Path:
        if callable(self._directory):
            self._directory = self._directory()
        return self._directory

    def all(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / STATE_FILE).is_file():
                found.append(Checkpoint(int(match.group(1)), path))
        return sorted(found, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        found = self.all()
        return found[-1] if found else None

    def get(self, step: int) -> Checkpoint | None:
        return next((c for c in self.all() if c.step == step), None)

    def save(self, state: LoopState, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: dict, *,
             weights: dict[str, torch.Tensor] | None = None, optimizer_state: dict | None = None) -> bool:
        """Write a checkpoint of this moment; prune the rest. False when not written (told not to,
        or the disk failed: training goes on and the previous checkpoint stays). `weights` /
        `optimizer_state`: the whole tensors when the model's own are shards (FSDP, gathered on rank 0)."""
        final = self.directory / f"step-{state.step:08d}"
        if final.exists():
            return True  # this step is saved already
        try:
            if not self.may_write():
                return False
        except Exception:  # noqa: BLE001 — e.g. the database is down: try again at the next one
            log.warning("not writing the step %s checkpoint now", state.step, exc_info=True)
            return False
        tmp = self.directory / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self._write(tmp, state, model, optimizer, schedule, weights, optimizer_state)
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.directory)
        except (OSError, SafetensorError):  # disk full, quota, I/O error: safetensors reports them as its own
            log.warning("could not write the step %s checkpoint; keeping the previous one", state.step, exc_info=True)
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        self.written(final)
        self.prune(keep={state.step, state.best_step})
        self.on_saved(self.directory)
        return True

    @staticmethod
    def _write(directory: Path, state: LoopState, model: nn.Module, optimizer: torch.optim.Optimizer,
               schedule: dict, weights: dict[str, torch.Tensor] | None = None,
               optimizer_state: dict | None = None) -> None:
        opt_tensors, opt_rest = flatten_optimizer(optimizer_state or optimizer.state_dict())
        rng_tensors, python_rng = rng_state()
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        _save_tensors(trainable_weights(model) if weights is None else weights, directory / WEIGHTS_FILE)
        _save_tensors(opt_tensors, directory / OPTIMIZER_FILE)
        _save_tensors(rng_tensors, directory / RNG_FILE)
        document = {"format_version": FORMAT_VERSION, "loop": asdict(state), "optimizer": opt_rest,
                    "parameter_names": names, "schedule": schedule, "python_rng": python_rng,
                    "saved_at": time.time()}
        with open(directory / STATE_FILE, "w") as f:  # written last: its presence marks a complete checkpoint
            json.dump(document, f)
            f.flush()
            os.fsync(f.fileno())

    def restore(self, checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer,
                ranks=None) -> LoopState:
        """Put the model, optimizer and RNGs back to the checkpoint; its loop state. `ranks`: a
        multi-process run's (workers/training/distributed.py): every rank reads the whole tensors and
        keeps its shard."""
        document = json.loads((checkpoint.path / STATE_FILE).read_text())
        names = [name for name, p in model.named_parameters() if p.requires_grad]
        if document["parameter_names"] != names:
            raise ValueError("the checkpoint was saved from a different model; cannot resume from it")
        sharded = ranks is not None and ranks.world > 1
        if sharded:
            ranks.load_weights(model, load_file(str(checkpoint.path / WEIGHTS_FILE)))
        else:
            load_weights(model, checkpoint.path / WEIGHTS_FILE)
        saved = unflatten_optimizer(load_file(str(checkpoint.path / OPTIMIZER_FILE)), document["optimizer"])
        # Device-specific switches (fused, foreach, …) stay as this process built them.
        for saved_group, live_group in zip(saved["param_groups"], optimizer.param_groups):
            for key in ("fused", "foreach", "capturable", "differentiable"):
                if key in live_group:
                    saved_group[key] = live_group[key]
        if sharded:
            ranks.load_optimizer(optimizer, saved)
        else:
            optimizer.load_state_dict(saved)
        restore_rng(load_file(str(checkpoint.path / RNG_FILE)), document["python_rng"])
        return LoopState(**document["loop"])

    def written(self, path: Path) -> None:
        """A complete checkpoint is in place at `path` (before the older ones are pruned): nothing more to
        do on a disk the next attempt shares (workers/training/mirrored_checkpoints.py copies it to an object store)."""

    def pull(self) -> None:
        """Fetch checkpoints kept elsewhere before a resumed attempt looks for one: here, all are on this disk."""

    def prune(self, keep: set[int | None]) -> None:
        """Delete every checkpoint but the steps in `keep`, and leftovers of interrupted writes."""
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            match = _STEP_DIR.match(path.name)
            stale_tmp = path.name.startswith(_TMP_PREFIX) and not path.name.endswith(f"-{os.getpid()}")
            if (match and int(match.group(1)) not in keep) or stale_tmp:
                shutil.rmtree(path, ignore_errors=True)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
