"""The checks of a run config that need more than its own fields — the dataset's columns and size,
the base model's shape — made by the server at POST /api/runs (and for every experiment run) and
by the worker before it trains, with this one function, so both refuse the same things with the
same words. No torch, no web layer: the worker imports it.

Each problem carries the config field it is about (`loc`, without FastAPI's "body"), so the
server's 422 and the New run form can put it beside that field.
"""
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.methods import CountError, get_spec
from app.methods.shape import ModelShape, ShapeError, shape_from
from app.models.param_count import EstimateError, estimate
from app.runs.conversations import preview_problem
from app.runs.schemas import Columns, RunCreate, Training, best_metric_problem

# Columns fields that are settings, not column names.
NOT_COLUMNS = {"chat_template"}
# Positions a run must leave for real text after virtual tokens take theirs.
MIN_TEXT_POSITIONS = 8
# The class count assumed where the labels are not known yet (the head is a rounding error then).
ASSUMED_LABELS = 2


@dataclass(frozen=True)
class Problem:
    loc: tuple
    msg: str


def eval_rows(num_rows: int, eval_fraction: float) -> int:
    """How many rows a held-out split of `eval_fraction` takes (the worker's split uses the same)."""
    return round(num_rows * eval_fraction) if eval_fraction > 0 else 0


def split_problems(num_rows: int, eval_fraction: float) -> list[Problem]:
    held = eval_rows(num_rows, eval_fraction)
    if eval_fraction > 0 and held < 1:
        return [Problem(("eval_fraction",), f"{eval_fraction} of {num_rows} rows leaves no eval rows.")]
    if num_rows - held < 1:
        return [Problem(("eval_fraction",), f"{eval_fraction} of {num_rows} rows leaves no training rows.")]
    return []


def column_problems(columns: Columns, available: Iterable[str], what: str) -> list[Problem]:
    """Every column the config names must be in the data (`what`: "dataset", "training dataset", …)."""
    names = list(available)
    shown = ", ".join(repr(n) for n in names[:20]) + (", …" if len(names) > 20 else "")
    return [Problem(("columns", role), f"column {column!r} is not in the {what} (its columns: [{shown}])")
            for role, column in columns.model_dump(exclude={"label_names"}).items()
            if column is not None and role not in NOT_COLUMNS and column not in names]


def usable_length(positions: int | None, virtual_tokens: int, max_length: int) -> int:
    """max_length, capped at what the model's position table holds once virtual tokens take theirs."""
    if not positions:
        return max_length
    return min(max_length, positions - virtual_tokens)


def model_problems(config: RunCreate, facts: dict | None, *, max_trainable: int | None,
                   fusion_variant: str | None = None) -> list[Problem]:
    """What the base model's shape rules out: the task, the method's own checks (e.g. LoRA's target
    modules), virtual tokens that leave no room for text, and absurd trainable-parameter counts."""
    spec = get_spec(config.method.type)
    here = ("method", spec.name)
    problems = []
    if config.task not in spec.tasks:
        problems.append(Problem(("task",), f"{spec.title} does not support {config.task}; it supports "
                                           f"{', '.join(spec.tasks)}."))
    try:
        shape = shape_from(facts or {})
    except ShapeError:
        return problems  # registered by hub id: the worker checks what it finds
    if config.task == "causal_lm" and shape.is_encoder:
        problems.append(Problem(("task",), f"The base model {config.base_model!r} is an encoder "
                                           f"({shape.model_type}) without a language-modelling head; causal_lm "
                                           "needs a decoder such as GPT-2 or Llama."))
    if config.training.quantization and facts.get("quantized"):
        problems.append(Problem(("training", "quantization"),
                                f"The base model {config.base_model!r} is already quantised ({facts['quantized']}); "
                                "bitsandbytes cannot quantise it again: leave training.quantization empty"))
    if spec.architectures is not None and shape.model_type not in spec.architectures:
        problems.append(Problem(here, f"{spec.title} supports {', '.join(spec.architectures)} models, "
                                      f"not {shape.model_type}."))
    if spec.check is not None:
        problems += [Problem((*here, field) if field else here, msg)
                     for field, msg in spec.check(shape, config.method, config.task)]
    virtual = getattr(config.method, "num_virtual_tokens", 0)
    if shape.positions and shape.positions - virtual < MIN_TEXT_POSITIONS:
        problems.append(Problem((*here, "num_virtual_tokens"),
                                f"the model holds {shape.positions} positions; {virtual} virtual tokens leave no room "
                                f"for text (at least {MIN_TEXT_POSITIONS} positions must stay): use fewer "
                                "num_virtual_tokens"))
    problems += _size_problems(config, facts, shape, max_trainable, fusion_variant)
    return problems


def _size_problems(config: RunCreate, facts: dict, shape: ModelShape, max_trainable: int | None,
                   fusion_variant: str | None) -> list[Problem]:
    if not shape.num_parameters:
        return []
    here = ("method", config.method.type)
    try:
        count = estimate(facts, config.task, ASSUMED_LABELS, config.method.model_dump(), fusion_variant=fusion_variant)
    except EstimateError as e:
        return [Problem((*here, e.field) if e.field else here, str(e))]
    if max_trainable is not None and count.trainable_params > max_trainable:
        return [Problem(here, f"these settings would train {count.trainable_params:,} parameters, more than the "
                              f"{max_trainable:,} this server allows (PEFTLAB_MAX_TRAINABLE_PARAMS)")]
    return []


def chat_problems(config: RunCreate, rows: Sequence[dict] | None, what: str) -> list[Problem]:
    """A chat column whose cells are not lists of role/content turns (roles system/user/assistant,
    at least one assistant turn)."""
    column = config.columns.messages
    if config.task != "causal_lm" or not column or not rows:
        return []
    problem = preview_problem(rows, column)
    return [Problem(("columns", "messages"), f"{what} {problem}")] if problem else []


def run_problems(config: RunCreate, *, num_rows: int | None, columns: Iterable[str] | None,
                 eval_columns: Iterable[str] | None, facts: dict | None, max_trainable: int | None,
                 fusion_variant: str | None = None, dataset_name: str = "dataset",
                 eval_dataset_name: str = "eval dataset", rows: Sequence[dict] | None = None,
                 eval_rows: Sequence[dict] | None = None) -> list[Problem]:
    """Everything that can be known before training; [] when the run can start. None for what
    the caller does not know (the server skips a missing dataset, it reports that itself).
    rows / eval_rows: sample rows (the server: the stored previews) for the checks of cell shapes."""
    problems = []
    if columns is not None:
        problems += column_problems(config.columns, columns, dataset_name)
    if eval_columns is not None:
        problems += column_problems(config.columns, eval_columns, eval_dataset_name)
    problems += chat_problems(config, rows, dataset_name) + chat_problems(config, eval_rows, eval_dataset_name)
    if num_rows is not None and config.eval_dataset_id is None:
        problems += split_problems(num_rows, config.eval_fraction)
    problems += model_problems(config, facts, max_trainable=max_trainable, fusion_variant=fusion_variant)
    if problem := best_metric_problem(config):
        problems.append(Problem(("training", "metric_for_best"), problem))
    problems += training_problems(config)
    return problems


def training_problems(config: RunCreate) -> list[Problem]:
    """Training settings the task or the method rules out."""
    spec, t = get_spec(config.method.type), config.training
    problems = []
    if t.gradient_checkpointing and not spec.gradient_checkpointing:
        problems.append(Problem(("training", "gradient_checkpointing"),
                                f"{spec.title} cannot use gradient checkpointing: its key/value prefixes live in the "
                                "attention cache, which checkpointed layers drop; turn it off or choose LoRA"))
    if t.quantization and not spec.quantized_base:
        problems.append(Problem(("training", "quantization"),
                                f"{spec.title} (method {spec.name}) cannot train on a quantised base: it trains the base "
                                f"model's own weights, which training.quantization {t.quantization} stores frozen in "
                                f"{t.quantization[0]} bits; leave quantization empty or choose a method such as LoRA"))
    elif t.quantization and getattr(config.method, "init", None) in ("pissa", "olora"):
        # Both rewrite the base weights into a residual at init, which quantised weights cannot hold exactly.
        problems.append(Problem(("training", "quantization"),
                                f"LoRA init = {config.method.init} rewrites the base weights, which training.quantization "
                                f"{t.quantization} keeps frozen in {t.quantization[0]} bits; use init gaussian (or the "
                                "default) with a quantised base, or leave quantization empty"))
    problems += distributed_problems(config)
    if t.packing and config.task != "causal_lm":
        problems.append(Problem(("training", "packing"), "packing is for causal_lm runs; turn it off for "
                                                         f"{config.task}"))
    elif t.packing and getattr(config.method, "num_virtual_tokens", 0):
        problems.append(Problem(("training", "packing"),
                                f"{spec.title} puts virtual tokens in front of each row, which packed examples would "
                                "share; turn packing off for this method"))
    return problems


def distributed_problems(config: RunCreate) -> list[Problem]:
    """training.gpus / training.distributed settings that cannot work."""
    spec, t = get_spec(config.method.type), config.training
    problems = []
    if t.gpus > t.batch_size:
        problems.append(Problem(("training", "gpus"),
                                f"{t.gpus} GPUs split each batch of {t.batch_size}: batch_size must be at least gpus "
                                f"(raise training.batch_size to {t.gpus} or more, or use fewer GPUs)"))
    if t.distributed == "fsdp":
        if t.gpus < 2:
            problems.append(Problem(("training", "distributed"),
                                    "fsdp shards the model over several GPUs: set training.gpus to 2 or more, or "
                                    "choose ddp"))
        if not spec.shards:
            problems.append(Problem(("training", "distributed"),
                                    f"{spec.title} (method {spec.name}) cannot be sharded with fsdp: "
                                    f"{spec.shard_note or 'its weights do not live in the model blocks FSDP shards'}; "
                                    "choose ddp or a method such as LoRA"))
        if t.quantization:
            problems.append(Problem(("training", "distributed"),
                                    f"fsdp cannot shard a {t.quantization} base (bitsandbytes packs its weights); "
                                    "choose ddp, or leave training.quantization empty"))
    return problems


# ---- memory: will the run fit a worker's device? (server at submit, worker at claim) ------------

# What a device's total memory loses before a run's tensors: the CUDA context and kernels (about
# 0.5–1 GiB), or on a CPU worker the OS, the Python process and the libraries; and 10% slack.
DEVICE_RESERVE_BYTES = 2**30
DEVICE_SLACK = 0.10


@dataclass(frozen=True)
class DeviceFit:
    needed_bytes: int | None  # the estimate for this device kind; None when the model's shape is unknown
    usable_bytes: int | None  # what the device leaves for a run; None when the worker did not say
    precision: str | None = None

    @property
    def fits(self) -> bool:
        """Unknown on either side counts as fitting: the worker finds out, as before estimates."""
        return self.needed_bytes is None or self.usable_bytes is None or self.needed_bytes <= self.usable_bytes


def usable_memory(memory_bytes: int | None) -> int | None:
    if not memory_bytes:
        return None
    return max(0, int(memory_bytes * (1 - DEVICE_SLACK)) - DEVICE_RESERVE_BYTES)


@dataclass(frozen=True)
class MemoryQuery:
    """What the memory estimate reads of a run config (the estimate endpoint has no whole config)."""

    task: str
    num_labels: int
    method: dict
    training: dict

    @classmethod
    def of(cls, config: RunCreate) -> "MemoryQuery":
        labels = config.columns.label_names
        return cls(config.task, len(labels) if labels else ASSUMED_LABELS, config.method.model_dump(),
                   config.training.model_dump())


def run_memory(query: MemoryQuery, facts: dict | None, device_kind: str, *, fusion_variant: str | None = None,
               count=None):
    """The peak-memory estimate (app.models.memory.MemoryEstimate) of a run on a device of this kind
    ("cuda" or "cpu"), or None when the model's facts allow none. `count`: the parameter estimate, if known."""
    from app.models.param_count import memory

    try:
        return memory(facts or {}, query.task, query.num_labels, query.method, query.training,
                      device="cuda" if device_kind == "cuda" else "cpu", fusion_variant=fusion_variant, count=count)
    except (EstimateError, ShapeError, CountError, ValueError):
        return None


def device_fit(query: MemoryQuery, facts: dict | None, device: dict | None, memory_bytes: int | None, *,
               fusion_variant: str | None = None, count=None) -> DeviceFit:
    """Whether a worker with this device ({kind, name}) and total memory can take the run: the one
    rule the server's refusal at submit, the New run form and the worker's claim all use."""
    estimate = run_memory(query, facts, (device or {}).get("kind", "cuda"), fusion_variant=fusion_variant, count=count)
    return DeviceFit(needed_bytes=estimate.total if estimate else None, usable_bytes=usable_memory(memory_bytes),
                     precision=estimate.precision if estimate else None)


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def memory_problem(config: RunCreate, facts: dict | None, workers: Sequence, *,
                   fusion_variant: str | None = None) -> Problem | None:
    """A run that none of `workers` (rows with name, device, memory_bytes: those seen in the last hour)
    could fit; None when one could, when no worker was seen (workers may start later), or when the
    estimate is unknown."""
    if not workers:
        return None
    query = MemoryQuery.of(config)
    fits = [(w, device_fit(query, facts, w.device, w.memory_bytes, fusion_variant=fusion_variant)) for w in workers]
    if any(f.fits for _, f in fits):
        return None
    worker, fit = max(fits, key=lambda wf: wf[0].memory_bytes or 0)
    t = config.training
    batch = f"batch {t.batch_size} × {t.max_length} tokens"
    changes = []
    spec = get_spec(config.method.type)
    if spec.quantized_base and "quantization" in Training.model_fields and not getattr(t, "quantization", None):
        changes.append("load the base in 4-bit (training.quantization 4bit)")
    if spec.gradient_checkpointing and not t.gradient_checkpointing:
        changes.append("turn on training.gradient_checkpointing")
    if t.batch_size > 1:
        changes.append("lower training.batch_size (raise training.gradient_accumulation to keep the effective batch)")
    changes.append("lower training.max_length")
    device_name = (worker.device or {}).get("name") or (worker.device or {}).get("kind") or "device"
    return Problem(("training", "batch_size"),
                   f"this run needs about {gib(fit.needed_bytes)} of memory at its peak ({fit.precision}, {batch}); the "
                   f"largest worker seen in the last hour, {worker.name} ({device_name}), has {gib(worker.memory_bytes)} "
                   f"({gib(fit.usable_bytes)} usable): {'; or '.join(changes)}")
