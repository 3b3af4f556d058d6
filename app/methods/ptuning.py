"""P-tuning (Liu et al. 2021): virtual-token embeddings produced by a prompt encoder (peft's MLP or
bidirectional two-layer LSTM + MLP head).

Trainable: n·d + (d·h+h) + (h·h+h) + (h·d+d) with the MLP.
"""
from typing import Literal

from pydantic import Field

from app.methods.registry import PROMPT_SHARD_NOTE as SHARD_NOTE, Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape


class PTuningMethod(MethodConfig):
    """P-tuning (Liu et al. 2021): virtual-token embeddings produced by a prompt encoder (MLP or LSTM)."""

    type: Literal["ptuning"]
    num_virtual_tokens: int = Field(20, ge=1, le=512, title="Virtual tokens", description="Number of virtual tokens.")
    encoder: Literal["mlp", "lstm"] = Field("mlp", title="Prompt encoder", description="The prompt encoder.",
                                                  json_schema_extra={"x-labels": {"mlp": "MLP", "lstm": "LSTM"}})
    encoder_hidden_size: int = Field(128, ge=1, le=16384, title="Encoder hidden size", description="Hidden size of the prompt encoder.")


def lstm(input_size: int, hidden: int, layers: int = 2) -> int:
    """torch.nn.LSTM, bidirectional: per layer and direction W_ih, W_hh, b_ih, b_hh."""
    total, width = 0, input_size
    for _ in range(layers):
        total += 2 * (4 * hidden * width + 4 * hidden * hidden + 8 * hidden)
        width = 2 * hidden
    return total


def count(shape: ModelShape, config: PTuningMethod, task: str, extra: dict) -> Count:
    d, n, h = shape.d, config.num_virtual_tokens, config.encoder_hidden_size
    if config.encoder == "mlp":
        total = n * d + (d * h + h) + (h * h + h) + (h * d + d)
    else:  # peft: a two-layer bidirectional LSTM, then Linear(2h, 2h) → ReLU → Linear(2h, d)
        total = n * d + lstm(d, h) + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)
    return Count(total, total)


SPEC = register(MethodSpec(
    name="ptuning", config=PTuningMethod, title="P-tuning", order=50,
    description="Trains virtual-token embeddings produced by a small prompt encoder (MLP or LSTM) in front of the input.",
    paper="Liu et al. 2021, arXiv 2103.10385", learning_rate=3e-2, count=count,
    settings_note="20 virtual tokens, MLP encoder, hidden 128",
    quantized_base=True,
    shards=False, shard_note=SHARD_NOTE,
))
