"""Prefix-tuning (Li & Liang 2021; without projection it is P-tuning v2).

Trainable: n·L·2·k, or with the MLP n·k + (k·h + h) + (h·2·L·k + 2·L·k) (k = d, or
num_key_value_heads·head_dim under grouped-query attention, as peft sizes it).
"""
from typing import Literal

from pydantic import Field

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape


class PrefixMethod(MethodConfig):
    """Prefix-tuning (Li & Liang 2021): trainable key/value prefixes in every layer's attention;
    without projection it is P-tuning v2."""

    type: Literal["prefix"]
    num_virtual_tokens: int = Field(20, ge=1, le=512, title="Prefix length", description="Prefix length per layer.")
    projection: bool = Field(False, title="Reparameterise through an MLP", description="Reparameterise the prefixes through an MLP (the paper's setup).")
    encoder_hidden_size: int = Field(512, ge=1, le=16384, title="MLP hidden size", description="Hidden size of that MLP (used with projection only).",
                                     json_schema_extra={"x-show-if": {"projection": True}})


def count(shape: ModelShape, config: PrefixMethod, task: str, extra: dict) -> Count:
    k = shape.kv_width if shape.model_type == "llama" else shape.d
    n, h, layers = config.num_virtual_tokens, config.encoder_hidden_size, shape.layers
    total = n * layers * 2 * k if not config.projection else n * k + (k * h + h) + (h * 2 * layers * k + 2 * layers * k)
    return Count(total, total)


SPEC = register(MethodSpec(
    name="prefix", config=PrefixMethod, title="Prefix-tuning", order=40,
    description="Trains key/value prefixes that every layer's attention sees, optionally produced by an MLP.",
    paper="Li & Liang 2021, arXiv 2101.00190", learning_rate=1e-2, count=count,
    settings_note="20 virtual tokens, no projection", gradient_checkpointing=False,
    quantized_base=True,
))
