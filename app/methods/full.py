"""Full fine-tuning: every weight of the task model trains. The baseline every comparison needs."""
from typing import Literal

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import ModelShape, base_params


class FullMethod(MethodConfig):
    """Full fine-tuning: every weight trains. The baseline every comparison needs."""

    type: Literal["full"]


def count(shape: ModelShape, config: FullMethod, task: str, extra: dict) -> Count:
    return Count(base_params(shape, task), 0, True, "every weight trains")


SPEC = register(MethodSpec(
    name="full", config=FullMethod, title="Full fine-tuning", order=100,
    description="Trains every weight; the baseline.", paper="—", learning_rate=5e-5, count=count,
    quantized_base=False, settings_note="—",
))
