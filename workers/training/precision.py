"""training.precision: the dtype the base weights load in and the forward autocasts to.

`auto` is bf16 on a GPU that supports it, fp16 (with loss scaling) on an older GPU, and fp32 on
the CPU. Trainable weights are kept in fp32 whatever the base dtype (peft's practice): the
optimizer updates fp32 master weights, so tiny LoRA updates are not rounded away in bf16.

fp16 on a CPU falls back to fp32: CPUs have no fast fp16 matmuls and the server cannot know at
submit which device a worker has. The precision used is recorded in the run summary.
"""
import logging
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Precision:
    name: str  # the precision used: bf16, fp16 or fp32 (never auto)
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    @property
    def scales_loss(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return self.name == "fp16" and self.device.type == "cuda"

    def autocast(self):
        """The forward's autocast: ops that are safe in half precision run in it, the rest in fp32."""
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16 on CUDA (disabled, it passes losses and steps through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.scales_loss)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision a run gets on `device` (requested: auto, bf16, fp16 or fp32)."""
    if requested not in ("auto", *DTYPES):
        raise ValueError(f"unknown training.precision {requested!r}; choose auto, bf16, fp16 or fp32")
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return Precision("bf16" if bf16_ok else "fp16", device)
        if requested == "bf16" and not bf16_ok:
            raise ValueError(f"this GPU ({torch.cuda.get_device_name(device)}) does not support bf16; "
                             "use training.precision fp16 or auto")
        return Precision(requested, device)
    if requested == "auto":
        return Precision("fp32", device)
    if requested == "fp16":
        log.warning("training.precision fp16 on a CPU worker: training in fp32 (CPUs have no fast fp16)")
        return Precision("fp32", device)
    return Precision(requested, device)  # bf16 runs on the CPU (slower than fp32 on most, but half the memory)


def upcast_trainable(model: nn.Module) -> int:
    """Cast the trainable parameters to fp32 (the frozen base keeps its dtype); returns how many were cast."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast
