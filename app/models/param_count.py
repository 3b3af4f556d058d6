"""How many parameters a method trains on a base model, from the model's facts alone (no torch).

Each method's formula lives in its spec (app/methods/<name>.py, DESIGN.md's formulas); this
module adds what every method shares: the classification head (BERT `classifier` with bias;
GPT-2 / Llama `score` without), which every method trains, and the model's own weights.
Architectures other than BERT, GPT-2 and Llama get the same formulas with exact = False.
"""
from dataclasses import dataclass

from app.methods import CountError, get_spec
from app.methods.ptuning import lstm  # noqa: F401 — part of this module's interface (tests check it against torch)
from app.methods.shape import ModelShape, ShapeError, base_params, head_params, shape_from
from app.models.memory import MemoryEstimate, estimate_memory

Facts = ModelShape  # the old name


class EstimateError(ValueError):
    """The model's facts (or the method's settings) do not allow a count; `field` names the method setting."""

    def __init__(self, msg: str, field: str | None = None):
        super().__init__(msg)
        self.field = field


@dataclass
class Estimate:
    trainable_params: int
    total_params: int
    exact: bool
    note: str

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0


def facts_from(raw: dict) -> ModelShape:
    try:
        shape = shape_from(raw)
    except ShapeError as e:
        raise EstimateError(f"{e} No estimate is possible.") from None
    if not shape.num_parameters:
        raise EstimateError("The server does not know this model's shape (its parameter count is missing); "
                            "no estimate is possible.")
    return shape


def estimate(raw_facts: dict, task: str, num_labels: int, method: dict,
             fusion_variant: str | None = None) -> Estimate:
    """Count for `method` (a run config's `method`, as a dict; left-out settings take the spec's
    defaults). `fusion_variant`: the fused adapters' variant (None: unknown, counted inexactly)."""
    shape = facts_from(raw_facts)
    spec = get_spec(method["type"])
    config = spec.config.model_validate(method)
    head, base = head_params(shape, task, num_labels), base_params(shape, task)
    try:
        own = spec.count(shape, config, task, {"fusion_variant": fusion_variant})
    except CountError as e:
        raise EstimateError(str(e), e.field) from None
    note = own.note
    if head:
        note = "; ".join(filter(None, [note, f"includes the classification head ({head:,})"]))
    if not shape.known and "unknown architecture" not in note:
        note = "; ".join(filter(None, [note, f"estimated: the server knows BERT, GPT-2 and Llama layouts, "
                                             f"not {shape.model_type}"]))
    return Estimate(trainable_params=own.trainable + head, total_params=base + head + own.added,
                    exact=own.exact and shape.known, note=note)


def memory(raw_facts: dict, task: str, num_labels: int, method: dict, training: dict, *, device: str = "cuda",
           fusion_variant: str | None = None, count: Estimate | None = None) -> MemoryEstimate:
    """Peak training memory of a run config on a `device` worker (app.models.memory); `count`: the
    parameter estimate when the caller has it already."""
    count = count or estimate(raw_facts, task, num_labels, method, fusion_variant=fusion_variant)
    return estimate_memory(facts_from(raw_facts), task=task, num_labels=num_labels, method=method, training=training,
                           trainable=count.trainable_params, total=count.total_params, device=device,
                           attention_dropout=raw_facts.get("attention_dropout"))
