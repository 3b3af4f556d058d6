"""LN-tuning (Zhao et al. 2023) through peft's LNTuningConfig: a trainable copy of every LayerNorm
(the spec's targets per architecture) beside the frozen model; the head trains too. A PEFT directory."""
from peft import LNTuningConfig
from torch import nn

from app.methods.ln_tuning import TARGETS, LNTuningMethod
from workers.methods.base import BuildContext
from workers.methods.peft_tuner import TASK_TYPES, PeftTuner, apply


class LNTuning(PeftTuner):
    name = "ln_tuning"

    def build(self, base_model: nn.Module, method_config: LNTuningMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        targets = TARGETS.get(base_model.config.model_type)  # None: peft's default, where it has one
        return apply(base_model, LNTuningConfig(task_type=TASK_TYPES[task], target_modules=targets), "LN-tuning")
