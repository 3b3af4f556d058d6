"""VeRA (Kopiczko et al. 2024) through peft's VeraConfig on its default targets: shared frozen random
A and B (saved with the adapter, so the download is self-contained), trainable vectors d and b per
layer; the head trains too. A PEFT directory."""
from peft import VeraConfig
from torch import nn

from app.methods.vera import VeraMethod
from workers.methods.base import BuildContext
from workers.methods.peft_tuner import TASK_TYPES, PeftTuner, apply, has_conv1d


class Vera(PeftTuner):
    name = "vera"

    def build(self, base_model: nn.Module, method_config: VeraMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        config = VeraConfig(task_type=TASK_TYPES[task], r=method_config.r, d_initial=method_config.d_initial,
                            vera_dropout=method_config.dropout, save_projection=True,
                            fan_in_fan_out=has_conv1d(base_model))
        return apply(base_model, config, "VeRA")
