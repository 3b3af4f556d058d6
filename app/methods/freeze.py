"""Layer freezing: full fine-tuning of the top k transformer layers only, with everything above them
(BERT's pooler, GPT-2's ln_f, Llama's final norm and untied LM head) and the head; the embeddings and
the lower layers stay frozen. The baseline other fine-tuning tools offer. In-house.

Trainable: k · (one layer's parameters) + what sits above the layers. Per layer (d = hidden, i = FFN
width): BERT 4·(d² + d) + 2·d·i + i + d + 4·d; GPT-2 4·d² + 4·d (+ the d² and d of c_proj: c_attn is
d × 3d) + 2·d·i + i + d + 4·d; Llama d·q + 2·d·kv + q·d + 3·d·i + 2·d (q = heads·head_dim, kv =
key/value width).
"""
from typing import Literal

from pydantic import Field

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape


class FreezeMethod(MethodConfig):
    """Layer freezing: full fine-tuning of the top `trainable_layers` layers (plus what sits above them and the head)."""

    type: Literal["freeze"]
    trainable_layers: int = Field(2, ge=1, le=1000, title="Trainable layers",
                                  description="How many of the top transformer layers train; the lower ones and the "
                                              "embeddings stay frozen.")


def layer_params(shape: ModelShape) -> int:
    d, i = shape.d, shape.intermediate
    if shape.model_type == "llama":
        q = shape.heads * shape.head_dim
        return d * q + 2 * d * shape.kv_width + q * d + 3 * d * i + 2 * d
    if shape.model_type == "gpt2":
        return (d * 3 * d + 3 * d) + (d * d + d) + (d * i + i) + (i * d + d) + 4 * d
    return 4 * (d * d + d) + (d * i + i) + (i * d + d) + 4 * d  # BERT, and the estimate elsewhere


def above_layers(shape: ModelShape, task: str) -> int:
    if shape.model_type == "bert":
        return shape.d * shape.d + shape.d  # pooler
    if shape.model_type == "gpt2":
        return 2 * shape.d  # ln_f (the LM head is the tied input embedding: frozen)
    if shape.model_type == "llama":
        lm_head = shape.vocab * shape.d if task == "causal_lm" and not shape.tied else 0
        return shape.d + lm_head  # final RMSNorm, untied LM head
    return 2 * shape.d


def count(shape: ModelShape, config: FreezeMethod, task: str, extra: dict) -> Count:
    k = min(config.trainable_layers, shape.layers)
    n = k * layer_params(shape) + above_layers(shape, task)
    return Count(n, 0, shape.known, f"the top {k} of {shape.layers} layers")


def check(shape: ModelShape, config: FreezeMethod, task: str) -> list[tuple[str, str]]:
    if config.trainable_layers > shape.layers:
        return [("trainable_layers", f"the model has {shape.layers} layers; trainable_layers "
                                     f"{config.trainable_layers} would train them all: choose full fine-tuning")]
    return []


SPEC = register(MethodSpec(
    name="freeze", config=FreezeMethod, title="Layer freezing", order=90,
    description="Fully fine-tunes only the top layers (and the head); the embeddings and lower layers stay frozen. "
                "The classic cheap baseline between a head-only probe and full fine-tuning.",
    paper="— (the common baseline; e.g. Lee et al. 2019, arXiv 1911.03090)", learning_rate=1e-4, count=count,
    check=check, settings_note="top 2 layers",
))
