"""LoRA (Hu et al. 2021): trainable low-rank A·B beside frozen linear layers, B = 0 at init.

Trainable: r·(fan_in + fan_out) per adapted linear layer (2·L·2·d·r on BERT's query and value).
"""
from typing import Annotated, Literal

from pydantic import Field

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import DEFAULT_LORA_TARGETS, ModelShape, linear_layers, matches, module_names


class LoraMethod(MethodConfig):
    """LoRA (Hu et al. 2021): trainable low-rank A·B beside frozen linear layers, B = 0 at init."""

    type: Literal["lora"]
    r: int = Field(8, ge=1, le=1024, title="Rank r", description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, le=4096, title="Alpha", description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, title="Dropout", description="Dropout on the LoRA input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=64, title="Target modules",
        description="Module names to adapt; null = the default for the architecture (BERT: query, value; "
        "GPT-2: c_attn; Llama: q_proj, v_proj).",
    )


def targets(shape: ModelShape, config: LoraMethod) -> list[str]:
    return config.target_modules or DEFAULT_LORA_TARGETS.get(shape.model_type, [])


def count(shape: ModelShape, config: LoraMethod, task: str, extra: dict) -> Count:
    r = config.r
    if not shape.known:
        n = 2 * shape.layers * 2 * shape.d * r  # as if two d×d projections per layer, like BERT's query and value
        return Count(n, n, False, f"estimated for an unknown architecture ({shape.model_type}) "
                                  "as two d×d projections per layer")
    names = targets(shape, config)
    layers = [layer for layer in linear_layers(shape, task) if any(matches(layer.name, t) for t in names)]
    n = sum(r * (layer.fan_in + layer.fan_out) for layer in layers)
    problems = check(shape, config, task)
    if problems:  # the estimate still answers (the form shows it); POST /api/runs refuses the run
        return Count(n, n, False, problems[0][1])
    return Count(n, n, True, f"LoRA on {len(layers)} layers ({', '.join(names)})")


def check(shape: ModelShape, config: LoraMethod, task: str) -> list[tuple[str, str]]:
    """Each target must name at least one linear layer, matched the way peft matches names."""
    if not shape.known or not config.target_modules:
        return []
    layers = linear_layers(shape, task)
    missing = [t for t in config.target_modules if not any(matches(layer.name, t) for layer in layers)]
    if not missing:
        return []
    available = module_names(shape, task)
    return [("target_modules", f"LoRA target module(s) {', '.join(missing)} not found in the model; its linear "
                               f"layers are named: {', '.join(available[:20])}{' …' if len(available) > 20 else ''}")]


SPEC = register(MethodSpec(
    name="lora", config=LoraMethod, title="LoRA", order=10,
    description="Trains low-rank update matrices A·B beside the frozen attention weights; the base model stays frozen.",
    paper="Hu et al. 2021, arXiv 2106.09685", learning_rate=5e-4, count=count, check=check, quantized_base=True,
    settings_note="r 8, alpha 16, dropout 0.1",
))
