"""LoRA (Hu et al. 2021) through peft: frozen base, trainable low-rank A·B (B = 0 at init) beside
the target linear layers, update scaled by alpha / r. For classification peft also trains the
head (SEQ_CLS puts `classifier` / `score` in modules_to_save).

Options: DoRA (use_dora), rsLoRA (use_rslora), and the initialisations gaussian, PiSSA and OLoRA.
PiSSA and OLoRA change the base weights (they keep the residual); their adapter is saved converted
to a plain LoRA adapter of the original weights (rank 2r), so the download loads on the untouched
base model like any LoRA.
"""
import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
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
                            use_dora=method_config.use_dora, use_rslora=method_config.use_rslora,
                            init_lora_weights=method_config.init or True,
                            # GPT-2-style Conv1D layers store their weight transposed.
                            fan_in_fan_out=any(isinstance(m, Conv1D) for m in base_model.modules()))
        try:
            model = get_peft_model(base_model, config)
        except ValueError as e:  # e.g. an architecture peft has no default target modules for
            raise ValueError(f"LoRA could not be applied: {e} Linear layers in this model: "
                             f"{', '.join(linear_module_names(base_model)[:20])}") from e
        if method_config.init in MUTATING_INITS:
            keep_initial_adapter(model)
        return model

    def save(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir), safe_serialization=True)
        initial = getattr(model, "peftlab_initial_lora", None)
        if initial is not None:
            as_plain_lora(out_dir, initial)

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


MUTATING_INITS = ("pissa", "olora")


def keep_initial_adapter(model: nn.Module) -> None:
    """Remember A₀, B₀ as initialised, for the conversion at save time."""
    model.peftlab_initial_lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()
                                  if ".lora_A." in k or ".lora_B." in k}


def as_plain_lora(out_dir: Path, initial: dict[str, torch.Tensor]) -> None:
    """Rewrite a saved PiSSA / OLoRA adapter as a LoRA adapter of the original weights:
    W + ΔW = W_res + s·B·A and W = W_res + s·B₀·A₀, so ΔW = s·(B·A − B₀·A₀) = s·[B | −B₀]·[A ; A₀],
    a rank-2r LoRA with the same scale s (alpha doubles, or grows by √2 under rsLoRA). peft's own
    conversion (save_pretrained's path_initial_model_for_weight_conversion) drops the trained
    classification head, so it is done here; everything else in the file stays as peft wrote it."""
    weights = out_dir / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    for key in list(tensors):
        if key not in initial:
            continue
        dim = 0 if ".lora_A." in key else 1
        start = -initial[key] if ".lora_B." in key else initial[key]
        tensors[key] = torch.cat([tensors[key], start.to(tensors[key].dtype)], dim=dim).contiguous()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    config_path = out_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["lora_alpha"] = config["lora_alpha"] * (math.sqrt(2) if config.get("use_rslora") else 2)
    config.update(r=2 * config["r"], init_lora_weights=True, rank_pattern={}, alpha_pattern={})
    config_path.write_text(json.dumps(config, indent=2))


def check_target_modules(model: nn.Module, targets: list[str]) -> None:
    """Each target must name at least one linear layer the way peft matches names (exact or '.suffix')."""
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in layers)]
    if missing:
        available = linear_module_names(model)
        raise ValueError(f"LoRA target module(s) {', '.join(missing)} not found in the model; "
                         f"its linear layers are named: {', '.join(available[:20])}"
                         f"{' …' if len(available) > 20 else ''}")
