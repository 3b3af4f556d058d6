"""LoRA (Hu et al. 2021) through peft: frozen base, trainable low-rank A·B (B = 0 at init) beside
the target linear layers, update scaled by alpha / r. For classification peft also trains the
head (SEQ_CLS puts `classifier` / `score` in modules_to_save)."""
import copy
from collections.abc import Callable
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

from app.methods.lora import LoraMethod
from workers.methods.base import BuildContext, Method, linear_module_names

_TASK_TYPES = {"classification": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM}


class Lora(Method):
    name = "lora"

    def build(self, base_model: nn.Module, method_config: LoraMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        if method_config.target_modules is not None:
            check_target_modules(base_model, method_config.target_modules)
        config = LoraConfig(task_type=_TASK_TYPES[task], r=method_config.r, lora_alpha=method_config.alpha,
                            lora_dropout=method_config.dropout, target_modules=method_config.target_modules,
                            # GPT-2-style Conv1D layers store their weight transposed.
                            fan_in_fan_out=any(isinstance(m, Conv1D) for m in base_model.modules()))
        try:
            return get_peft_model(base_model, config)
        except ValueError as e:  # e.g. an architecture peft has no default target modules for
            raise ValueError(f"LoRA could not be applied: {e} Linear layers in this model: "
                             f"{', '.join(linear_module_names(base_model)[:20])}") from e

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir), safe_serialization=True)

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        return PeftModel.from_pretrained(base_model, str(saved_dir)).eval()

    def extra_artifacts(self, model: nn.Module, artifact_dir: Callable[[str], Path]) -> dict[str, Path]:
        """The base model with W + (alpha/r)·B·A folded into its weights: a plain transformers
        checkpoint (safetensors) that loads and runs without peft. Merged on a deep copy, so the
        trained adapter model is left as it was."""
        out = artifact_dir("merged")
        merged = copy.deepcopy(model).merge_and_unload()
        merged.save_pretrained(str(out), safe_serialization=True)
        return {"merged": out}


def check_target_modules(model: nn.Module, targets: list[str]) -> None:
    """Each target must name at least one linear layer the way peft matches names (exact or '.suffix')."""
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in layers)]
    if missing:
        available = linear_module_names(model)
        raise ValueError(f"LoRA target module(s) {', '.join(missing)} not found in the model; "
                         f"its linear layers are named: {', '.join(available[:20])}"
                         f"{' …' if len(available) > 20 else ''}")
