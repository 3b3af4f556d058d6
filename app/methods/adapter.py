"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021).

Trainable: 2·L·(2·d·m + m + d) for Houlsby, half of it for Pfeiffer, m = d // reduction_factor.
"""
from typing import Literal

from pydantic import Field

from app.methods.registry import Count, CountError, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape

# Where adapters go per variant: Houlsby after both sublayers, Pfeiffer after the FFN only.
VARIANT_LOCATIONS: dict[str, tuple[str, ...]] = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}


class AdapterMethod(MethodConfig):
    """Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): down-projection → non-linearity →
    up-projection + residual, after the attention and FFN sublayers (houlsby) or after the FFN only (pfeiffer)."""

    type: Literal["adapter"]
    variant: Literal["houlsby", "pfeiffer"] = Field("houlsby", title="Variant", description="Where adapters sit: houlsby = after attention and FFN; pfeiffer = after the FFN only.",
        json_schema_extra={"x-labels": {"houlsby": "Houlsby: after attention and FFN", "pfeiffer": "Pfeiffer: after the FFN only"}})
    reduction_factor: int = Field(16, ge=1, le=1024, title="Reduction factor", description="Bottleneck size m = hidden_size // reduction_factor.")
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = Field("relu", title="Non-linearity", description="Activation between the projections.",
        json_schema_extra={"x-labels": {"relu": "ReLU", "gelu": "GELU", "swish": "Swish (SiLU)", "tanh": "tanh"}})


def locations(shape: ModelShape, variant: str) -> int:
    return shape.layers * len(VARIANT_LOCATIONS[variant])


def count(shape: ModelShape, config: AdapterMethod, task: str, extra: dict) -> Count:
    m = shape.d // config.reduction_factor
    if m < 1:
        raise CountError(f"reduction_factor {config.reduction_factor} leaves no bottleneck for hidden size {shape.d}.",
                         "reduction_factor")
    n = locations(shape, config.variant) * (2 * shape.d * m + m + shape.d)
    return Count(n, n, True, f"bottleneck m = {m}")


SPEC = register(MethodSpec(
    name="adapter", config=AdapterMethod, title="Adapter", order=20,
    description="Trains small bottleneck layers (down → non-linearity → up) after the attention and FFN sublayers of every layer.",
    paper="Houlsby et al. 2019, arXiv 1902.00751; Pfeiffer et al. 2021, arXiv 2005.00247", learning_rate=2e-3,
    count=count, settings_note="Houlsby, reduction factor 16, relu",
    quantized_base=True,
))
