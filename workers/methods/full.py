"""Full fine-tuning: every weight trains; the result is the whole model (safetensors)."""
from pathlib import Path

from pydantic import BaseModel
from torch import nn

from workers.methods.base import BuildContext, Method


class FullFineTuning(Method):
    name = "full"

    def build(self, base_model: nn.Module, method_config: BaseModel, task: str,
              context: BuildContext | None = None) -> nn.Module:
        for p in base_model.parameters():
            p.requires_grad_(True)
        return base_model

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))  # transformers writes safetensors only

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        # The saved directory is a complete model of the base model's class.
        return type(base_model).from_pretrained(str(saved_dir), use_safetensors=True).eval()
