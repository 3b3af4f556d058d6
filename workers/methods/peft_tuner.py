"""What the methods peft implements as a tuner (LoRA-like layers beside frozen ones) share: the model
is a `peft.PeftModel`, saved and downloaded as a standard PEFT directory that
`peft.PeftModel.from_pretrained(base, dir)` loads; for classification peft trains the head too
(SEQ_CLS puts `classifier` / `score` in modules_to_save)."""
from pathlib import Path

from peft import PeftConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from workers.methods.base import Method, linear_module_names

TASK_TYPES = {"classification": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM}


def has_conv1d(model: nn.Module) -> bool:
    """GPT-2-style Conv1D layers store their weight transposed (peft's fan_in_fan_out)."""
    return any(isinstance(m, Conv1D) for m in model.modules())


def apply(base_model: nn.Module, config: PeftConfig, what: str) -> PeftModel:
    try:
        return get_peft_model(base_model, config)
    except ValueError as e:  # e.g. an architecture peft has no default target modules for
        raise ValueError(f"{what} could not be applied: {e} Linear layers in this model: "
                         f"{', '.join(linear_module_names(base_model)[:20])}") from e


class PeftTuner(Method):
    """save / load of a peft tuner; subclasses build."""

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir), safe_serialization=True)

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        return PeftModel.from_pretrained(base_model, str(saved_dir)).eval()
