"""LN-tuning (Zhao et al. 2023): only the LayerNorm parameters train (a trainable copy of each norm,
through peft's LNTuningConfig), plus the head.

Trainable: (2·L + 1) norms (two per layer and the embedding or final norm) of 2·d parameters (gain
and bias), or d for Llama's RMSNorm (gain only).
"""
from typing import Literal

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape

# The norms peft's LN-tuning targets per architecture (peft has no default for BERT).
TARGETS = {"bert": ["LayerNorm"], "gpt2": ["ln_1", "ln_2", "ln_f"],
           "llama": ["input_layernorm", "post_attention_layernorm", "norm"]}


class LNTuningMethod(MethodConfig):
    """LN-tuning (Zhao et al. 2023): only the LayerNorm gains and biases train."""

    type: Literal["ln_tuning"]


def count(shape: ModelShape, config: LNTuningMethod, task: str, extra: dict) -> Count:
    per_norm = shape.d if shape.model_type == "llama" else 2 * shape.d
    n = (2 * shape.layers + 1) * per_norm
    if not shape.known:
        return Count(n, n, False, f"estimated for an unknown architecture ({shape.model_type}) as 2·L + 1 LayerNorms")
    return Count(n, n, True, f"{2 * shape.layers + 1} norms")


SPEC = register(MethodSpec(
    name="ln_tuning", config=LNTuningMethod, title="LN-tuning", order=17,
    description="Trains only the LayerNorm gains and biases of every layer (a trainable copy of each norm); "
                "the rest of the model stays frozen.",
    paper="Zhao et al. 2023, arXiv 2312.11420", learning_rate=1e-2, count=count, settings_note="every LayerNorm",
    quantized_base=True,
))
