"""P-tuning (Liu et al. 2021) through peft: n virtual-token embeddings passed through a trainable
prompt encoder (MLP or bidirectional LSTM + MLP) and prepended to the input embeddings of a
frozen model; the classification head trains too.

peft's encoders, hidden size h, embedding dim d:
- MLP: Linear(d, h) → ReLU → Linear(h, h) → ReLU → Linear(h, d), i.e. the design's
  n·d + (d·h+h) + (h·h+h) + (h·d+d) parameters.
- LSTM: a 2-layer bidirectional LSTM (hidden h per direction), then Linear(2h, 2h) → ReLU →
  Linear(2h, d).
After training peft saves the encoder's output (n·d values); the encoder itself is not needed
for inference.
"""
from pathlib import Path

from peft import PromptEncoderConfig, PromptEncoderReparameterizationType
from torch import nn

from app.methods.ptuning import PTuningMethod
from workers.methods.base import BuildContext, Method
from workers.methods.prompt import (TASK_TYPES, build_virtual_token_model, load_virtual_token_model,
                                    save_virtual_token_model)

_ENCODERS = {"mlp": PromptEncoderReparameterizationType.MLP, "lstm": PromptEncoderReparameterizationType.LSTM}


class PTuning(Method):
    name = "ptuning"

    def build(self, base_model: nn.Module, method_config: PTuningMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        config = PromptEncoderConfig(task_type=TASK_TYPES[task], num_virtual_tokens=method_config.num_virtual_tokens,
                                     encoder_reparameterization_type=_ENCODERS[method_config.encoder],
                                     encoder_hidden_size=method_config.encoder_hidden_size)
        return build_virtual_token_model(base_model, config, task)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        save_virtual_token_model(model, out_dir)

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        return load_virtual_token_model(base_model, saved_dir)
