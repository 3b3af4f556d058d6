"""Runs that span several processes on one host (training.gpus > 1), as the training loop sees them.

`Alone` is the one-process case (every collective is the identity); `Ranks` is a torch.distributed
process group started by torchrun, one process per GPU (or, on a CPU worker, per --cpu-processes):
- DDP (training.distributed "ddp"): every rank holds the whole model; gradients are averaged.
- FSDP ("fsdp"): torch's FSDP2 `fully_shard` along the base's transformer blocks (its
  `_no_split_modules`), then the root; parameters, gradients and optimizer state are sharded.

training.batch_size stays the global batch: every rank draws the same global batch (same seed, same
order) and trains on its share (rows rank, rank + world, …), so a 2-process run takes the steps a
1-process run takes. The loss of each rank is its summed loss over the global number of targets,
times world (DDP and FSDP average gradients over the ranks): the averaged gradient is then exactly
the one-process gradient of the whole batch.

Every decision that ends or saves (stop, time budget, time-based checkpoint) is agreed through a
collective, so the ranks never disagree on how many collectives come next. Rank 0 alone talks to
SQL and writes files; the others get a `Silent` reporter.
"""
import logging
import os
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
from torch import nn

from workers.training.resume import copy_weights

log = logging.getLogger(__name__)


class Alone:
    """One process: no group, nothing to agree on."""

    rank, world, main, strategy = 0, 1, True, None

    def sum(self, values: list[float]) -> list[float]:
        return values

    def reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def any(self, flag: bool) -> bool:
        return flag

    def broadcast_int(self, value: int) -> int:
        return value

    def shard(self, indices: list[int]) -> list[int]:
        return indices

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model.to(device)

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def accumulating(self, forward: nn.Module, model: nn.Module, last: bool):
        return nullcontext()

    def plain(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    @contextmanager
    def main_first(self):
        yield

    def barrier(self) -> None:
        pass


ALONE = Alone()


class Ranks(Alone):
    """This process's place in a torchrun group (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_* in the environment)."""

    def __init__(self, strategy: str):
        self.strategy = strategy
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)  # "cuda" means this rank's GPU from here on
            self.device = torch.device("cuda", self.local_rank)
            dist.init_process_group("nccl", device_id=self.device)
        else:
            self.device = torch.device("cpu")
            dist.init_process_group("gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.main = self.rank == 0

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    # ---- agreeing --------------------------------------------------------------------------------

    def sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        return self.sum([float(flag)])[0] > 0

    def broadcast_int(self, value: int) -> int:
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def barrier(self) -> None:
        dist.barrier()

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (it fills a cache the others then read), the others after it."""
        if not self.main:
            dist.barrier()
        yield
        if self.main:
            dist.barrier()

    # ---- data ------------------------------------------------------------------------------------

    def shard(self, indices: list[int]) -> list[int]:
        return indices[self.rank::self.world]

    # ---- the model -------------------------------------------------------------------------------

    def prepare(self, model: nn.Module, device: torch.device) -> nn.Module:
        """Before the optimizer sees the parameters: FSDP shards them (and moves the shards to the
        device); DDP only moves the model."""
        if self.strategy != "fsdp":
            return model.to(device)
        shard_model(model, device)
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the training forward calls: DDP's wrapper (it averages gradients in the backward), or
        the sharded model itself (FSDP's hooks do)."""
        if self.strategy == "fsdp":
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

    def accumulating(self, forward: nn.Module, model: nn.Module, last: bool):
        """Gradient accumulation: only the step's last micro-batch synchronises gradients."""
        if self.strategy == "fsdp":
            model.set_requires_gradient_sync(last)
            return nullcontext()
        return nullcontext() if last else forward.no_sync()

    def plain(self, tensor: torch.Tensor) -> torch.Tensor:
        """A sharded (DTensor) value as the whole tensor; collective under FSDP."""
        return tensor.full_tensor() if is_dtensor(tensor) else tensor

    # ---- checkpoints and the result: whole tensors on rank 0 -------------------------------------

    def trainable_weights(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The trainable parameters, whole, on the CPU: on rank 0; None on the others. Every rank must
        call it (under FSDP each parameter is gathered in turn)."""
        out = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                whole = self.plain(p.detach())
                if self.main:
                    out[name] = whole.to("cpu", copy=True).contiguous()
        return out if self.main else None

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict | None:
        """optimizer.state_dict() with whole tensors, on rank 0 (None on the others); every rank calls it."""
        saved = optimizer.state_dict()
        state = {}
        for index, entries in saved["state"].items():
            state[index] = {key: self.plain(value) if isinstance(value, torch.Tensor) else value
                            for key, value in entries.items()}
        return {"state": state, "param_groups": saved["param_groups"]} if self.main else None

    def load_weights(self, model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
        """Whole saved tensors into the (possibly sharded) parameters; every rank read the same file."""
        copy_weights(model, saved, place=self.like)

    def load_optimizer(self, optimizer: torch.optim.Optimizer, saved: dict) -> None:
        """A whole optimizer state dict into a sharded optimizer: each per-parameter tensor shaped like
        its parameter is cut to this rank's shard."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, entries in saved["state"].items():
            param = params[int(index)]
            for key, value in entries.items():
                if isinstance(value, torch.Tensor) and is_dtensor(param) and value.shape == param.shape:
                    entries[key] = self.like(param, value)
        optimizer.load_state_dict(saved)

    @staticmethod
    def like(param: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
        """`whole` placed like `param`: cut to this rank's shard (no communication) for a DTensor."""
        if not is_dtensor(param):
            return whole.to(param.device)
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(whole.to(param.device_mesh.device_type), param.device_mesh, param.placements,
                                 src_data_rank=None)


def is_dtensor(tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def block_classes(model: nn.Module) -> set[str]:
    """The class names of the transformer blocks: what transformers itself never splits across devices."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or [])
    return names


def shard_model(model: nn.Module, device: torch.device) -> None:
    """FSDP2: each transformer block its own unit (gathered for its forward and backward only), then
    the rest (embeddings, head, the method's own weights outside the blocks) as the root unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = block_classes(model)
    # FSDP2 would shard a module registered under two names twice (peft's prompt-learning models keep
    # the base's word embeddings as `word_embeddings` too): the shortcut names are hidden while sharding
    # and put back after; they still lead to the same module, which FSDP manages at its own place.
    aliases = _shortcut_registrations(model)
    for parent, name, _ in aliases:
        del parent._modules[name]
    try:
        units = [m for m in model.modules() if type(m).__name__ in blocks]
        for module in units:
            fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
    finally:
        for parent, name, module in aliases:
            parent._modules[name] = module
    log.info("FSDP: %d blocks (%s) and the root sharded over %d processes", len(units),
             ", ".join(sorted(blocks)) or "none found", dist.get_world_size())


def _shortcut_registrations(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, name, module) for every registration of a module but its deepest one (its own place in
    the model; the others are shortcuts to it)."""
    places: dict[int, list[str]] = {}
    modules = dict(model.named_modules(remove_duplicate=False))
    for path, module in modules.items():
        places.setdefault(id(module), []).append(path)
    found = []
    for paths in places.values():
        if len(paths) < 2:
            continue
        keep = max(paths, key=lambda p: p.count("."))
        for path in paths:
            if path != keep:
                parent_path, _, name = path.rpartition(".")
                found.append((modules[parent_path] if parent_path else model, name, modules[path]))
    return found


class Silent:
    """The reporter of ranks other than 0: rank 0 reports for the run, and decides when to stop."""

    def report(self, name: str, step: int, value: float) -> None:
        pass

    def progress(self, fraction: float) -> None:
        pass

    def should_stop(self) -> bool:
        return False
