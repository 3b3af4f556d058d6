"""BitFit (Ben Zaken et al. 2022): only the bias terms of the model train (attention, feed-forward and
LayerNorm biases), plus the head. In-house: peft has no BitFit.

Trainable (d = hidden, i = FFN width, L = layers): BERT L·(7·d + i) + 2·d (the layers' seven d-wide
biases and the FFN's, the embedding LayerNorm's and the pooler's); GPT-2 L·(7·d + i) + d (ln_f).
Llama-family models have no biases: BitFit is refused there.
"""
from typing import Literal

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape

NO_BIASES = ("llama", "mistral", "qwen2")


class BitFitMethod(MethodConfig):
    """BitFit (Ben Zaken et al. 2022): only the bias terms train."""

    type: Literal["bitfit"]


def count(shape: ModelShape, config: BitFitMethod, task: str, extra: dict) -> Count:
    d, i, layers = shape.d, shape.intermediate, shape.layers
    if shape.model_type in NO_BIASES:
        return Count(0, 0, True, f"{shape.model_type} has no bias terms")
    per_layer = layers * (7 * d + i)
    if shape.model_type == "bert":
        return Count(per_layer + 2 * d, 0, True, "every bias of the model")
    if shape.model_type == "gpt2":
        return Count(per_layer + d, 0, True, "every bias of the model")
    return Count(per_layer + d, 0, False, f"estimated for an unknown architecture ({shape.model_type})")


def check(shape: ModelShape, config: BitFitMethod, task: str) -> list[tuple[str, str]]:
    if shape.model_type in NO_BIASES:
        return [("", f"{shape.model_type} models have no bias terms: BitFit would train only the head; "
                         "choose LN-tuning or (IA)³ for a comparably small method")]
    return []


SPEC = register(MethodSpec(
    name="bitfit", config=BitFitMethod, title="BitFit", order=18,
    description="Trains only the bias terms (attention, feed-forward and LayerNorm biases); every weight matrix "
                "stays frozen.",
    paper="Ben Zaken et al. 2022, arXiv 2106.10199", learning_rate=5e-3, count=count, check=check,
    settings_note="every bias",
    quantized_base=True,
))
