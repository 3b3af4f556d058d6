"""AdapterFusion (Pfeiffer et al. 2021): per-layer attention over N trained, frozen adapters.

Trainable: 3·d·d per adapter location (query, key, value without biases).
"""
from typing import Literal

from pydantic import Field, model_validator

from app.ids import Id
from app.methods.adapter import locations
from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape


class AdapterFusionMethod(MethodConfig):
    """AdapterFusion (Pfeiffer et al. 2021): per-layer attention over the outputs of already trained,
    frozen adapters; only the fusion layers (query, key, value) and the head train."""

    type: Literal["adapter_fusion"]
    adapter_run_ids: list[Id] = Field(
        min_length=2, max_length=16, title="Adapter runs to fuse",
        description="Two or more succeeded Adapter runs on the chosen base model and task, of one variant. "
                    "They stay frozen; only the fusion layers and the head train.",
        json_schema_extra={"x-runs": {"method": "adapter", "status": "succeeded"}})

    @model_validator(mode="after")
    def _distinct(self) -> "AdapterFusionMethod":
        if len(set(self.adapter_run_ids)) != len(self.adapter_run_ids):
            raise ValueError("adapter_run_ids must not repeat a run")
        return self


def count(shape: ModelShape, config: AdapterFusionMethod, task: str, extra: dict) -> Count:
    variant = extra.get("fusion_variant")
    n = locations(shape, variant or "pfeiffer") * 3 * shape.d * shape.d
    if variant is None:
        return Count(n, n, False, "the fused adapters are not known yet; counted for Pfeiffer adapters (one per layer)")
    return Count(n, n, True, f"fusion layers at {locations(shape, variant)} {variant} adapter locations")


SPEC = register(MethodSpec(
    name="adapter_fusion", config=AdapterFusionMethod, title="AdapterFusion", order=30,
    description="Trains a per-layer attention over the outputs of two or more already trained, frozen Adapter runs.",
    paper="Pfeiffer et al. 2021, arXiv 2005.00247", learning_rate=2e-3, count=count, presets=False,
    settings_note="needs trained Adapter runs",
    quantized_base=True,
))
