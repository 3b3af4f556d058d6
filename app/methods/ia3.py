"""(IA)³ (Liu et al. 2022): learned vectors that rescale the keys, the values and the FFN's inner
activations of a frozen model, through peft's IA3 with its default targets per architecture.

Trainable: one entry per output feature of each attention target (keys, values) and one per input
feature of each feed-forward target (BERT: key, value, attention.output.dense, output.dense; GPT-2:
c_attn, mlp.c_proj; Llama: k_proj, v_proj, down_proj), plus the head.
"""
from typing import Literal

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape, linear_layers, matches

# peft's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING / _FEEDFORWARD_MODULES_MAPPING.
TARGETS = {"bert": ["key", "value", "output.dense"], "gpt2": ["c_attn", "mlp.c_proj"],
           "llama": ["k_proj", "v_proj", "down_proj"]}
FEEDFORWARD = {"bert": ["output.dense"], "gpt2": ["mlp.c_proj"], "llama": ["down_proj"]}


class IA3Method(MethodConfig):
    """(IA)³ (Liu et al. 2022): learned rescaling vectors for keys, values and FFN activations."""

    type: Literal["ia3"]


def count(shape: ModelShape, config: IA3Method, task: str, extra: dict) -> Count:
    if not shape.known:
        n = shape.layers * (2 * shape.d + shape.intermediate)  # keys, values, FFN inner activations
        return Count(n, n, False, f"estimated for an unknown architecture ({shape.model_type})")
    targets, feedforward = TARGETS[shape.model_type], FEEDFORWARD[shape.model_type]
    n = 0
    for layer in linear_layers(shape, task):
        if any(matches(layer.name, t) for t in targets):
            n += layer.fan_in if any(matches(layer.name, f) for f in feedforward) else layer.fan_out
    return Count(n, n, True, f"(IA)³ vectors on {', '.join(targets)}")


SPEC = register(MethodSpec(
    name="ia3", config=IA3Method, title="(IA)³", order=15,
    description="Trains three learned vectors per layer that rescale the keys, the values and the FFN's inner "
                "activations; the fewest trainable parameters of the adapter-style methods.",
    paper="Liu et al. 2022, arXiv 2205.05638", learning_rate=3e-2, count=count, settings_note="peft's default targets",
    quantized_base=True,
))
