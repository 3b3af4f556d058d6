"""Prompt-tuning (Lester et al. 2021): n trainable virtual-token embeddings, n·d parameters."""
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from app.methods.registry import PROMPT_SHARD_NOTE as SHARD_NOTE, Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape


class PromptMethod(MethodConfig):
    """Prompt-tuning (Lester et al. 2021): trainable virtual-token embeddings prepended to the input."""

    type: Literal["prompt"]
    num_virtual_tokens: int = Field(20, ge=1, le=512, title="Virtual tokens", description="Number of virtual tokens.")
    init: Literal["random", "text", "vocab"] = Field("random", title="Initialise from", description="Initialise from random values, the embeddings of init_text, or sampled vocabulary embeddings.",
        json_schema_extra={"x-labels": {"random": "Random values", "text": "The embeddings of a text", "vocab": "Sampled vocabulary embeddings"}})
    init_text: str | None = Field(None, max_length=2000, validate_default=True, title="Initialisation text",
                                  description="Text whose token embeddings initialise the prompt (init = text).",
                                  json_schema_extra={"x-show-if": {"init": "text"}})

    @field_validator("init_text")
    @classmethod
    def _text_needs_text(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("init") == "text" and not (value or "").strip():
            raise ValueError("init = text needs init_text: the text whose embeddings initialise the prompt")
        return value


def count(shape: ModelShape, config: PromptMethod, task: str, extra: dict) -> Count:
    n = config.num_virtual_tokens * shape.d
    return Count(n, n)


SPEC = register(MethodSpec(
    name="prompt", config=PromptMethod, title="Prompt-tuning", order=60,
    description="Trains only a few virtual-token embeddings prepended to the input.",
    paper="Lester et al. 2021, arXiv 2104.08691", learning_rate=3e-2, count=count,
    settings_note="20 virtual tokens, random init",
    quantized_base=True,
    shards=False, shard_note=SHARD_NOTE,
))
