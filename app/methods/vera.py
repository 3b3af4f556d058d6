"""VeRA (Kopiczko et al. 2024): one pair of frozen random matrices A (r × in), B (out × r) shared by
every adapted layer, and per layer two trainable scaling vectors: d (r entries) and b (out entries),
ΔW = Λ_b B Λ_d A. Through peft's VeraConfig, on its default targets (BERT: query, value; GPT-2:
c_attn; Llama: q_proj, v_proj).

Trainable: r + fan_out per adapted layer, plus the head (the shared A and B are frozen buffers).
"""
from typing import Literal

from pydantic import Field

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import DEFAULT_LORA_TARGETS, ModelShape, linear_layers, matches


class VeraMethod(MethodConfig):
    """VeRA (Kopiczko et al. 2024): shared frozen random projections, trainable scaling vectors."""

    type: Literal["vera"]
    r: int = Field(256, ge=1, le=4096, title="Rank r",
                   description="Rank of the shared random matrices; each adapted layer trains r + its output width "
                               "values, so a high rank stays cheap.")
    d_initial: float = Field(0.1, gt=0, le=10, title="Initial d",
                             description="Initial value of the scaling vector d (b starts at zero).")
    dropout: float = Field(0.0, ge=0, lt=1, title="Dropout", description="Dropout on the VeRA input.")


def count(shape: ModelShape, config: VeraMethod, task: str, extra: dict) -> Count:
    if not shape.known:
        n = 2 * shape.layers * (config.r + shape.d)  # as if two d×d projections per layer
        return Count(n, n, False, f"estimated for an unknown architecture ({shape.model_type})")
    targets = DEFAULT_LORA_TARGETS[shape.model_type]  # peft's VeRA defaults are LoRA's
    layers = [layer for layer in linear_layers(shape, task) if any(matches(layer.name, t) for t in targets)]
    n = sum(config.r + layer.fan_out for layer in layers)
    return Count(n, n, True, f"scaling vectors on {len(layers)} layers ({', '.join(targets)})")


SPEC = register(MethodSpec(
    name="vera", config=VeraMethod, title="VeRA", order=12,
    description="Trains two scaling vectors per adapted layer around a pair of frozen random low-rank matrices "
                "shared by all layers: LoRA-like updates for a fraction of LoRA's parameters.",
    paper="Kopiczko et al. 2024, arXiv 2310.11454", learning_rate=5e-2, count=count, settings_note="r 256",
    quantized_base=True,
))
