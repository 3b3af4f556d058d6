"""Run configuration and responses. Validated by the server, parsed again by the worker."""
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.ids import Id
from app.methods import all_specs, get_spec, method_union
from app.runs.label_names import MAX_NAME_CHARS as MAX_LABEL_NAME_CHARS, MAX_NAMES as MAX_LABEL_NAMES, check_names
from app.methods.adapter import AdapterMethod  # noqa: F401 — re-exported: the configs' old home
from app.methods.adapter_fusion import AdapterFusionMethod  # noqa: F401
from app.methods.full import FullMethod  # noqa: F401
from app.methods.lora import LoraMethod  # noqa: F401
from app.methods.prefix import PrefixMethod  # noqa: F401
from app.methods.prompt import PromptMethod  # noqa: F401
from app.methods.ptuning import PTuningMethod  # noqa: F401


class _Strict(BaseModel):
    # Strict: a run config says what it means. `true` is not an id and "8" is not a rank (JSON numbers
    # still fill float fields), and NaN or Infinity is no setting.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# The method configs live with their specs in app/methods (one module per method); the union is the registry's.
Method = method_union()
METHOD_TYPES = tuple(spec.name for spec in all_specs())


class MethodOut(BaseModel):
    """GET /api/methods: one registered method."""

    name: str
    title: str
    description: str
    paper: str
    learning_rate: float = Field(description="The preset: a run config without training.learning_rate gets it.")
    tasks: list[str]
    architectures: list[str] | None = Field(description="model_type values it supports; null = any.")
    quantized_base: bool
    shards: bool = Field(description="training.distributed fsdp can shard it.")
    presets: bool = Field(description="Offered by 'every method' experiments.")
    defaults: dict
    settings_schema: dict = Field(description="JSON schema of the method's settings.")


class Columns(_Strict):
    text: str | None = Field(None, max_length=200)
    text_pair: str | None = Field(None, max_length=200)
    label: str | None = Field(None, max_length=200)
    prompt: str | None = Field(None, max_length=200)
    response: str | None = Field(None, max_length=200)
    # Chat and instruction data (causal_lm; app/runs/conversations.py, workers/training/chat.py).
    messages: str | None = Field(None, max_length=200, description="causal_lm: a column of chat turns, "
                                 "[{role, content}] (roles system/user/assistant) or ShareGPT [{from, value}] "
                                 "(human/gpt/system); the loss is on the assistant turns only.")
    input: str | None = Field(None, max_length=200, description="Alpaca: the optional input column, appended "
                              "to columns.prompt (the instruction) in the user turn; needs chat_template.")
    chat_template: Literal["auto", "chatml"] | None = Field(
        None, description="Not a column: how chat turns become text. auto = the base model's chat template "
        "(ChatML when its tokenizer has none); chatml = always ChatML. Set on a prompt/response (Alpaca) run, "
        "it trains the pair as a user and an assistant turn. Default with columns.messages: auto.")
    label_names: (list[Annotated[str, Field(max_length=MAX_LABEL_NAME_CHARS)]]
                  | dict[Annotated[str, Field(max_length=MAX_LABEL_NAME_CHARS)], Annotated[str, Field(max_length=MAX_LABEL_NAME_CHARS)]]
                  | None) = Field(
        None, max_length=MAX_LABEL_NAMES,
        description="Classification: names for the label values, shown instead of them (metrics, confusion matrix, "
                    "predictions, the adapter's id2label). A list names the distinct values in natural order "
                    "(numeric when all are integers), e.g. [\"World\", \"Sports\", \"Business\", \"Sci/Tech\"] for 1–4; "
                    "a mapping names each value: {\"1\": \"World\", …}.")

    @field_validator("label_names")
    @classmethod
    def _label_names(cls, value):
        return None if value is None else check_names(value)


# The most GPUs one run may ask for: the largest single hosts have 8 or 16.
MAX_GPUS = 16

BestMetric = Literal["eval/loss", "eval/accuracy", "eval/f1", "eval/perplexity"]
# Which way is better for each metric_for_best.
LOWER_IS_BETTER = {"eval/loss": True, "eval/perplexity": True, "eval/accuracy": False, "eval/f1": False}
METRIC_TASKS = {"eval/accuracy": "classification", "eval/f1": "classification", "eval/perplexity": "causal_lm"}


class Training(_Strict):
    learning_rate: float = Field(5e-4, gt=0, le=1, description="Left out of a run config: the method's preset (GET /api/methods).")
    epochs: float = Field(1, gt=0, le=1000)
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    max_tokens: int | None = Field(
        None, ge=1, le=10_000_000_000,
        description="A budget in training tokens (padding not counted): the run stops cleanly, evaluated and saved, "
                    "after the step that spends it (summary.stopped_by = \"max_tokens\"). The learning-rate schedule "
                    "runs over the budget.")
    max_seconds: int | None = Field(
        None, ge=1, le=10_000_000,
        description="A budget in seconds of training (wall clock, evaluations and checkpoint writes not counted): "
                    "the run stops cleanly after the step that spends it (summary.stopped_by = \"max_seconds\"). "
                    "The learning-rate schedule runs over the budget.")
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(128, ge=8, le=32768)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    eval_every: int = Field(100, ge=1, le=10_000_000, description="Evaluate every this many optimizer steps.")
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="After warmup (warmup_ratio): linear decay to 0, half-cosine decay to 0, or constant.")
    weight_decay: float = Field(0.0, ge=0, le=1)
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    checkpoint_every: int | None = Field(
        None, ge=0, le=10_000_000,
        description="Save a resumable checkpoint every this many optimizer steps; null = about every "
        "5 minutes of training; 0 = no periodic checkpoints (a restarted run starts over).")
    metric_for_best: BestMetric | None = Field(
        None, description="Eval metric that picks the best checkpoint (loss and perplexity: lower is better; "
        "accuracy and f1: higher). Downloads and predictions then use the best checkpoint.")
    early_stopping_patience: int | None = Field(
        None, ge=1, le=10_000, description="Stop after this many evaluations without improving metric_for_best; "
        "null = never stop early.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="The dtype the base weights load in and the forward autocasts to; trainable weights "
        "stay fp32. auto: bf16 on a GPU that supports it, else fp16 with loss scaling; fp32 on a CPU. "
        "fp16 on a CPU worker trains in fp32. The run summary records the precision used.")
    quantization: Literal["4bit", "8bit"] | None = Field(
        None, description="Load the frozen base's linear layers quantised by bitsandbytes: 4bit = QLoRA (NF4, double "
        "quantisation, matmuls in the run's precision), 8bit = LLM.int8(). null = not quantised. Only methods that "
        "train beside a frozen base support it (GET /api/methods quantized_base).")
    gradient_checkpointing: bool = Field(
        False, description="Recompute each layer's activations in the backward instead of keeping them: far less "
        "activation memory for about a third more compute. Not with prefix-tuning.")
    packing: bool | None = Field(
        None, description="causal_lm: pack several examples into each row (no padding inside a row); position ids "
        "restart per example and attention never crosses an example. Not with virtual-token methods. null = auto: "
        "on for causal_lm runs where it is exact (no virtual tokens, and the worker checks that the model's "
        "attention keeps packed examples apart), off otherwise.")
    group_by_length: bool = Field(
        True, description="Batches of similar lengths (so little compute goes to padding), in a random order: "
        "each epoch shuffles the examples, sorts them by length within windows of 64 batches and shuffles the "
        "batches. Not used while packing is on (packed rows carry no padding to save).")
    eval_batch_size: int | None = Field(
        None, ge=1, le=4096, description="Examples per evaluation batch (no gradients are kept, so it can be larger "
        "than batch_size); null = twice batch_size, at most 4096.")
    compile: bool = Field(
        False, description="torch.compile the model on a GPU worker (dynamic shapes): faster steps after a "
        "compilation of a minute or so; ignored on a CPU worker.")
    gpus: int = Field(
        1, ge=1, le=MAX_GPUS, description="GPUs of one host the run trains on, one process each (torchrun); "
        "batch_size stays the batch of one optimizer step, split over them. A worker that owns this many "
        "(`peftlab worker --gpus 0,1,…`) takes the run.")
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp", description="With gpus > 1: ddp = every GPU holds the whole model (DistributedDataParallel); "
        "fsdp = parameters, gradients and optimizer state are sharded over the GPUs (torch FSDP2), for models "
        "that do not fit one GPU. Not every method can be sharded (GET /api/methods `shards`).")

    @field_validator("early_stopping_patience")
    @classmethod
    def _patience_needs_metric(cls, value: int | None, info) -> int | None:
        if value is not None and info.data.get("metric_for_best") is None:
            raise ValueError("early_stopping_patience needs training.metric_for_best: choose the metric to watch")
        return value


def best_metric_problem(config: "RunCreate") -> str | None:
    """Why training.metric_for_best cannot work for this run, or None (checked when a run is submitted)."""
    metric = config.training.metric_for_best
    if metric is None:
        return None
    if METRIC_TASKS.get(metric, config.task) != config.task:
        return f"{metric} is only measured for {METRIC_TASKS[metric]} runs; this is a {config.task} run"
    if config.eval_dataset_id is None and config.eval_fraction == 0:
        return f"{metric} needs evaluation data: choose an eval dataset or an eval_fraction above 0"
    return None


class RunCreate(_Strict):
    name: str | None = Field(None, max_length=200)
    dataset_id: Id
    eval_dataset_id: Id | None = None
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Held-out share of the dataset when no eval dataset is given.")
    eval_split_seed: int | None = Field(
        None, ge=0, le=2**31 - 1,
        description="The seed that picks the held-out rows (eval_fraction); null = training.seed. Repeats keep it "
                    "fixed, so every seed of a group is evaluated on the same rows.")
    base_model: str = Field("minilm-l6", min_length=1, max_length=64)
    task: Literal["classification", "causal_lm"] = "classification"
    columns: Columns
    method: Method
    training: Training = Field(default_factory=Training)

    @model_validator(mode="after")
    def _method_learning_rate(self) -> "RunCreate":
        """A run that leaves the learning rate out trains at its method's preset (the registry's):
        prompt-tuning at a LoRA rate stays at chance."""
        if "learning_rate" not in self.training.model_fields_set:
            self.training.learning_rate = get_spec(self.method.type).learning_rate
        return self

    @model_validator(mode="after")
    def _label_names_for_classification(self) -> "RunCreate":
        if self.columns.label_names is not None and self.task != "classification":
            raise ValueError("columns.label_names names classes: only classification runs have them")
        return self

    @model_validator(mode="after")
    def _columns_fit_task(self) -> "RunCreate":
        c = self.columns
        if self.task == "classification":
            if not c.text or not c.label:
                raise ValueError("classification needs columns.text and columns.label")
            if c.messages or c.chat_template or c.input:
                raise ValueError("columns.messages, columns.input and columns.chat_template are for causal_lm runs")
        elif not (c.text or c.messages or (c.prompt and c.response)):
            raise ValueError("causal_lm needs columns.messages, columns.prompt and columns.response, or columns.text")
        elif c.input and not (c.prompt and c.response and c.chat_template):
            raise ValueError("columns.input (Alpaca) needs columns.prompt, columns.response and columns.chat_template")
        return self


class EvalSummary(BaseModel):
    accuracy: float | None = None
    f1: float | None = None
    loss: float | None = None
    perplexity: float | None = None


class ResumedFrom(BaseModel):
    step: int  # the optimizer step of the checkpoint the attempt started from
    attempt: int  # the attempt that resumed


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    trainable_params: int | None = None
    total_params: int | None = None
    adapter_bytes: int | None = None
    peak_memory_bytes: int | None = None
    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None
    eval: EvalSummary = Field(default_factory=EvalSummary)
    # Checkpoints and early stopping (absent on runs that had none of it).
    steps: int | None = None
    best_step: int | None = Field(None, description="The step whose weights the downloads use (metric_for_best set).")
    stopped_early: bool | None = None
    stopped_by: Literal["max_tokens", "max_seconds"] | None = Field(
        None, description="A budgeted run (training.max_tokens / max_seconds): the budget that ended it; null when "
                          "its steps or epochs ran out first.")
    budget: dict | None = Field(None, description="A budgeted run: {max_tokens, max_seconds, tokens, seconds} — the "
                                                   "budget and what the run used (training tokens, training seconds).")
    resumed_from: ResumedFrom | None = None


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    status: str
    progress: float
    error: str | None
    traceback: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    dataset_id: int
    eval_dataset_id: int | None
    base_model: str
    method: str
    task: str
    attempts: int
    cancel_requested: bool
    config: dict
    summary: RunSummary
    tags: list[str] = []
    notes: str = ""


class RunListItem(RunOut):
    """A row of GET /api/runs: the run, its place in the queue, and the metric figures asked for."""

    queue_position: int | None = Field(None, description="1 = the next run a free worker starts; null when not queued.")
    metrics: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="For each name in `metrics=`: {min, max, last} of the run's series (absent when it has no points).")


MAX_TAGS, MAX_TAG_CHARS, MAX_NOTES_CHARS = 20, 40, 10_000
Tag = Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]


class RunUpdate(_Strict):
    """PATCH /api/runs/{id}: only the fields sent change."""

    name: str | None = Field(None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS, description=f"Up to {MAX_TAGS} tags of up to {MAX_TAG_CHARS} characters; repeats are dropped.")
    notes: str | None = Field(None, max_length=MAX_NOTES_CHARS)

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("the name must not be blank")
        return value.strip() if value is not None else None

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        cleaned = [t.strip() for t in value]
        if any(not t for t in cleaned):
            raise ValueError("tags must not be blank")
        return list(dict.fromkeys(cleaned))  # keeps the first of each repeat, in order
