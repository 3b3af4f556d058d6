"""(IA)³ (Liu et al. 2022) through peft's IA3: vectors rescaling keys, values and FFN activations of
a frozen model (peft's default targets per architecture); the head trains too. A PEFT directory."""
from peft import IA3Config
from torch import nn

from app.methods.ia3 import IA3Method
from workers.methods.base import BuildContext
from workers.methods.peft_tuner import TASK_TYPES, PeftTuner, apply, has_conv1d


class IA3(PeftTuner):
    name = "ia3"

    def build(self, base_model: nn.Module, method_config: IA3Method, task: str,
              context: BuildContext | None = None) -> nn.Module:
        config = IA3Config(task_type=TASK_TYPES[task], fan_in_fan_out=has_conv1d(base_model))
        return apply(base_model, config, "(IA)³")
