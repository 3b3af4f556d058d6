"""The method registry: one `MethodSpec` per fine-tuning method, registered by name.

A spec imports no torch (the server loads every spec). It holds the method's pydantic config —
whose fields carry the defaults, bounds, help text and choices, the only copy of them — the
texts the pages show, the paper, what it supports, its preset learning rate and its exact
trainable-parameter formula. The worker's implementation (workers/methods/<name>.py) registers
under the same name; tests/unit/test_method_registry.py checks that the two sides pair up.
"""
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args

from pydantic import BaseModel, ConfigDict, Field

from app.methods.shape import ModelShape

TASKS = ("classification", "causal_lm")


class MethodConfig(BaseModel):
    """Base of every method's config: unknown fields are refused; `type` is the registry name."""

    # Strict like the rest of a run config: "8" is not a rank, NaN is no setting.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CountError(ValueError):
    """The settings allow no count (e.g. a bottleneck of size 0); `field` names the setting."""

    def __init__(self, msg: str, field: str | None = None):
        super().__init__(msg)
        self.field = field


@dataclass(frozen=True)
class Count:
    """What a method trains on a model, the classification head left out (every method trains it)."""

    trainable: int  # parameters that receive gradients
    added: int  # parameters the method adds to the model (0 when it trains some of the model's own)
    exact: bool = True
    note: str = ""


# (shape, config, task, extra) → Count; `extra` carries what only the database knows
# (AdapterFusion: the fused adapters' variant).
Formula = Callable[[ModelShape, Any, str, dict], Count]
# (shape, config, task) → [(setting or "" for the method as a whole, why it cannot work on this model)]:
# checks that need the model's shape.
Check = Callable[[ModelShape, Any, str], list[tuple[str, str]]]


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the run config's method.type
    config: type[MethodConfig]
    title: str
    description: str  # one paragraph for the UI
    paper: str  # citation with arXiv id, or "—"
    learning_rate: float  # preset: a run that leaves training.learning_rate out gets this
    count: Formula
    order: int  # place in lists and forms
    tasks: tuple[str, ...] = TASKS
    architectures: tuple[str, ...] | None = None  # model_type values it supports; None = any
    # trains on a base loaded by bitsandbytes in 4 or 8 bits (training.quantization): it trains weights it adds
    # (or the norms, biases and head, which stay unquantised), never the quantised linear weights themselves
    quantized_base: bool = False
    # training.gradient_checkpointing works with it (prefix-tuning's key/value prefixes ride in the
    # cache, which checkpointed transformers layers drop)
    gradient_checkpointing: bool = True
    # training.distributed "fsdp" works with it: its weights can be sharded with the base's blocks
    shards: bool = True
    shard_note: str = ""  # why not, when it cannot
    presets: bool = True  # offered by "every method" experiments (False: needs settings no default can give)
    settings_note: str = ""  # what the preset settings are, for the docs
    check: Check | None = None  # run by app.runs.checks on the server and on the worker

    def defaults(self) -> dict:
        """The config with every default filled in, as a run stores it."""
        fields = {name: f for name, f in self.config.model_fields.items() if name != "type"}
        required = [name for name, f in fields.items() if f.is_required()]
        if required:
            return {"type": self.name}
        return self.config.model_validate({"type": self.name}).model_dump(mode="json")

    def schema(self) -> dict:
        return self.config.model_json_schema()


# Why peft's prompt-learning methods (prompt-tuning, P-tuning) cannot be sharded: measured with FSDP2 on 2 gloo processes.
PROMPT_SHARD_NOTE = ("peft's prompt-learning model looks up the input embeddings itself, outside the base model's "
                     "forward, where FSDP keeps those weights sharded")

SPECS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in SPECS:
        raise ValueError(f"method {spec.name!r} is registered twice")
    type_field = spec.config.model_fields.get("type")
    if type_field is None or getattr(type_field.annotation, "__args__", None) != (spec.name,):
        raise ValueError(f"{spec.config.__name__}.type must be Literal[{spec.name!r}]")
    SPECS[spec.name] = spec
    return spec


def all_specs() -> list[MethodSpec]:
    return sorted(SPECS.values(), key=lambda s: s.order)


def get_spec(name: str) -> MethodSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(s.name for s in all_specs())}") from None


# Options that change how a method trains enough to measure on their own (bench/methods_quality.py and
# tests/unit/test_method_presets.py measure every entry of `measured_variants`).
MEASURED_OPTIONS = {"lora": {"dora": {"use_dora": True}, "rslora": {"use_rslora": True}, "pissa": {"init": "pissa"}}}


def measured_variants() -> dict[str, dict]:
    """name → method config (other settings: the spec's defaults): one entry per registered method, one per
    choice of a `variant` setting (adapter_houlsby, adapter_pfeiffer) and one per option in MEASURED_OPTIONS
    (lora_dora, …). AdapterFusion's entry still lacks its required adapter_run_ids."""
    variants = {}
    for spec in all_specs():
        variant = spec.config.model_fields.get("variant")
        choices = get_args(variant.annotation) if variant is not None else ()
        if choices:
            variants |= {f"{spec.name}_{choice}": {"type": spec.name, "variant": choice} for choice in choices}
        else:
            variants[spec.name] = {"type": spec.name}
        for option, settings in MEASURED_OPTIONS.get(spec.name, {}).items():
            spec.config.model_validate({"type": spec.name, **settings})  # an option the spec lost fails here
            variants[f"{spec.name}_{option}"] = {"type": spec.name, **settings}
    return variants


def method_union():
    """The `method` field's type: the specs' configs, told apart by `type`."""
    configs = tuple(s.config for s in all_specs())
    return Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007 — built from a tuple


def markdown_table() -> str:
    """docs/METHODS.md's table of methods (tests/unit/test_method_registry.py keeps the two equal)."""
    rows = ["| method | `method.type` | paper | tasks | architectures | preset learning rate | preset settings |",
            "|---|---|---|---|---|---|---|"]
    for s in all_specs():
        rows.append(f"| {s.title} | `{s.name}` | {s.paper} | {', '.join(s.tasks)} | "
                    f"{', '.join(s.architectures) if s.architectures else 'any'} | {s.learning_rate:g} | "
                    f"{s.settings_note or 'defaults'} |")
    return "\n".join(rows)
