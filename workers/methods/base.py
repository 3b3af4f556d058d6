"""The one interface every fine-tuning method implements.

A method turns a loaded base model into the model that trains (freezing what the method
freezes, keeping the classification head trainable), saves what it trained in its engine's
format, and loads that back beside a base model for inference.
"""
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel
from torch import nn
from transformers.pytorch_utils import Conv1D


def _no_adapters(run_id: int) -> Path:
    raise LookupError(f"run {run_id}'s adapter is not available here")


@dataclass
class BuildContext:
    """What a method may need beyond the base model: the base model's source (path or hub id),
    the tokenizer, and where other runs' saved adapters are (AdapterFusion reads them)."""

    source: str = ""
    tokenizer: object | None = None
    adapter_dir: Callable[[int], Path] = field(default=_no_adapters)


class Method(ABC):
    name: ClassVar[str]  # the `method.type` of a run config

    @abstractmethod
    def build(self, base_model: nn.Module, method_config: BaseModel, task: str,
              context: BuildContext | None = None) -> nn.Module:
        """The trainable model for `task` ("classification" | "causal_lm")."""

    @abstractmethod
    def save(self, model: nn.Module, out_dir: Path) -> None:
        """Write what trained into `out_dir` (safetensors + JSON; never pickle)."""

    @abstractmethod
    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        """`base_model` with what `save` wrote applied, in eval mode."""

    def extra_artifacts(self, model: nn.Module, artifact_dir: Callable[[str], Path]) -> dict[str, Path]:
        """Further downloads besides the adapter ({kind: path}), e.g. LoRA's merged model."""
        return {}

    def trainable_parameters(self, model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)


def total_parameters(model: nn.Module) -> int:
    # A 4-bit weight packs two parameters per element; its quant_state keeps the real shape.
    return sum(p.quant_state.shape.numel() if getattr(p, "quant_state", None) is not None else p.numel()
               for p in model.parameters())


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct last name parts of the model's linear layers ("query", "c_attn", "q_proj", …)."""
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
    return sorted(names)
