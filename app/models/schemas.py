from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.runs.schemas import Method


class BaseModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=1000, description="A local model directory or a hub id (org/name).")


class BaseModelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    source: str
    architecture: str | None
    num_parameters: int | None
    facts: dict
    created_at: datetime


class EstimateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Literal["classification", "causal_lm"] = "classification"
    num_labels: int = Field(2, ge=1, le=100_000, description="Classes of the classification head.")
    method: Method
    training: dict | None = Field(None, description="The run config's training section (batch_size, max_length, "
                                  "precision, gradient_checkpointing, quantization, …) for memory_bytes; left out: "
                                  "the defaults.")
    columns: dict | None = Field(None, description="The run config's columns (label_names sets the class count).")


class MemoryOut(BaseModel):
    precision: str = Field(description="The compute dtype the figure is for (auto resolved for `device`).")
    device: str = Field(description="cuda or cpu: the worker kind the figure is for (auto precision differs).")
    quantization: str | None
    gradient_checkpointing: bool
    tokens: int = Field(description="batch_size × max_length: the tokens one micro-batch holds at most.")
    parts: dict[str, int] = Field(description="Bytes by part; they sum to memory_bytes: weights (the frozen base), "
                                  "trainable_weights (fp32), gradients, optimizer_states (AdamW: 2 fp32 per trainable "
                                  "parameter), activations, logits, dequantization_buffer (4-bit), workspace.")
    weights_by_dtype: dict[str, int] = Field(description="The frozen weights' bytes by storage (bf16, fp32, nf4, int8).")
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    note: str


class WorkerFitOut(BaseModel):
    name: str
    device: dict
    memory_bytes: int | None = Field(description="The worker's total device memory.")
    needed_bytes: int | None = Field(description="The estimate on this worker's device kind (auto precision: bf16 on "
                                     "a GPU, fp32 on a CPU).")
    usable_bytes: int | None = Field(description="What the device leaves for a run (90% of it, less 1 GiB).")
    fits: bool


class EstimateOut(BaseModel):
    trainable_params: int
    total_params: int
    percent: float = Field(description="trainable_params / total_params · 100")
    exact: bool = Field(description="False where the count is an estimate (e.g. an architecture the server does not know).")
    note: str
    memory_bytes: int | None = Field(None, description="Peak training memory of the config (bytes); null when the "
                                     "model's shape is unknown.")
    memory: MemoryOut | None = None
    workers: list[WorkerFitOut] = Field(default_factory=list, description="Workers seen in the last hour and whether "
                                        "each could take the run.")
