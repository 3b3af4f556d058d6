"""Run configuration and responses. Validated by the server, parsed again by the worker."""
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.ids import Id


class _Strict(BaseModel):
    # Strict: a run config says what it means. `true` is not an id and "8" is not a rank (JSON numbers
    # still fill float fields), and NaN or Infinity is no setting.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class LoraMethod(_Strict):
    """LoRA (Hu et al. 2021): trainable low-rank A·B beside frozen linear layers, B = 0 at init."""

    type: Literal["lora"]
    r: int = Field(8, ge=1, le=1024, description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, le=4096, description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=64,
        description="Module names to adapt; null = the default for the architecture (BERT: query, value; "
        "GPT-2: c_attn; Llama: q_proj, v_proj).",
    )


class AdapterMethod(_Strict):
    """Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): down-projection → non-linearity →
    up-projection + residual, after the attention and FFN sublayers (houlsby) or after the FFN only (pfeiffer)."""

    type: Literal["adapter"]
    variant: Literal["houlsby", "pfeiffer"] = Field("houlsby", description="Where adapters sit: houlsby = after attention and FFN; pfeiffer = after the FFN only.")
    reduction_factor: int = Field(16, ge=1, le=1024, description="Bottleneck size m = hidden_size // reduction_factor.")
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = Field("relu", description="Activation between the projections.")


class AdapterFusionMethod(_Strict):
    """AdapterFusion (Pfeiffer et al. 2021): per-layer attention over the outputs of already trained,
    frozen adapters; only the fusion layers (query, key, value) and the head train."""

    type: Literal["adapter_fusion"]
    adapter_run_ids: list[Id] = Field(min_length=2, max_length=16, description="Two or more succeeded Adapter runs on the same base model.")

    @model_validator(mode="after")
    def _distinct(self) -> "AdapterFusionMethod":
        if len(set(self.adapter_run_ids)) != len(self.adapter_run_ids):
            raise ValueError("adapter_run_ids must not repeat a run")
        return self


class PrefixMethod(_Strict):
    """Prefix-tuning (Li & Liang 2021): trainable key/value prefixes in every layer's attention;
    without projection it is P-tuning v2."""

    type: Literal["prefix"]
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Prefix length per layer.")
    projection: bool = Field(False, description="Reparameterise the prefixes through an MLP (the paper's setup).")
    encoder_hidden_size: int = Field(512, ge=1, le=16384, description="Hidden size of that MLP.")


class PTuningMethod(_Strict):
    """P-tuning (Liu et al. 2021): virtual-token embeddings produced by a prompt encoder (MLP or LSTM)."""

    type: Literal["ptuning"]
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Number of virtual tokens.")
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="The prompt encoder.")
    encoder_hidden_size: int = Field(128, ge=1, le=16384, description="Hidden size of the prompt encoder.")


class PromptMethod(_Strict):
    """Prompt-tuning (Lester et al. 2021): trainable virtual-token embeddings prepended to the input."""

    type: Literal["prompt"]
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Number of virtual tokens.")
    init: Literal["random", "text", "vocab"] = Field("random", description="Initialise from random values, the embeddings of init_text, or sampled vocabulary embeddings.")
    init_text: str | None = Field(None, max_length=2000, description="Text whose token embeddings initialise the prompt (init = text).")

    @model_validator(mode="after")
    def _text_needs_text(self) -> "PromptMethod":
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init = text needs init_text")
        return self


class FullMethod(_Strict):
    """Full fine-tuning: every weight trains. The baseline every comparison needs."""

    type: Literal["full"]


Method = Annotated[
    LoraMethod | AdapterMethod | AdapterFusionMethod | PrefixMethod | PTuningMethod | PromptMethod | FullMethod,
    Field(discriminator="type"),
]
METHOD_TYPES = ("lora", "adapter", "adapter_fusion", "prefix", "ptuning", "prompt", "full")


class Columns(_Strict):
    text: str | None = Field(None, max_length=200)
    text_pair: str | None = Field(None, max_length=200)
    label: str | None = Field(None, max_length=200)
    prompt: str | None = Field(None, max_length=200)
    response: str | None = Field(None, max_length=200)


class Training(_Strict):
    learning_rate: float = Field(5e-4, gt=0, le=1)
    epochs: float = Field(1, gt=0, le=1000)
    max_steps: int | None = Field(None, ge=1, le=10_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    max_length: int = Field(128, ge=8, le=32768)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    eval_every: int = Field(100, ge=1, le=10_000_000, description="Evaluate every this many optimizer steps.")
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0, le=1)
    gradient_accumulation: int = Field(1, ge=1, le=1024)


class RunCreate(_Strict):
    name: str | None = Field(None, max_length=200)
    dataset_id: Id
    eval_dataset_id: Id | None = None
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Held-out share of the dataset when no eval dataset is given.")
    base_model: str = Field("minilm-l6", min_length=1, max_length=64)
    task: Literal["classification", "causal_lm"] = "classification"
    columns: Columns
    method: Method
    training: Training = Field(default_factory=Training)

    @model_validator(mode="after")
    def _columns_fit_task(self) -> "RunCreate":
        c = self.columns
        if self.task == "classification":
            if not c.text or not c.label:
                raise ValueError("classification needs columns.text and columns.label")
        elif not (c.text or (c.prompt and c.response)):
            raise ValueError("causal_lm needs columns.prompt and columns.response, or columns.text")
        return self


class EvalSummary(BaseModel):
    accuracy: float | None = None
    f1: float | None = None
    loss: float | None = None
    perplexity: float | None = None


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    trainable_params: int | None = None
    total_params: int | None = None
    adapter_bytes: int | None = None
    peak_memory_bytes: int | None = None
    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None
    eval: EvalSummary = Field(default_factory=EvalSummary)


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
