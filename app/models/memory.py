"""Peak training memory of a run config, from the model's shape alone (no torch; the server and
the worker both call it).

The peak of a training step is the sum of:
- weights: the frozen base in the compute dtype (bf16/fp16: 2 bytes, fp32: 4), or with
  `training.quantization` its transformer-block linear layers in 4-bit NF4 (0.5 byte per weight plus
  one 8-bit absmax per 64 weights and, double-quantised, an fp32 constant per 256 of those) or 8-bit
  (1 byte plus an fp32 scale per row). What bitsandbytes does not quantise (embeddings, the LM head,
  norms) stays unquantised, in fp32 after k-bit training preparation (peft casts it up).
- trainable weights, their gradients and AdamW's two states: 4 + 4 + 8 bytes per trainable
  parameter (trainable weights are kept in fp32 whatever the base dtype).
- activations: what autograd keeps for the backward, for batch_size × max_length tokens (padding
  to the longest row, and packing, both fill rows up to max_length): per layer per token, the
  fp32 inputs of the RMS/LayerNorms, q/k/v and the attention output kept by SDPA, the MLP's
  up/gate/activation outputs, and each LoRA or adapter input. With gradient checkpointing only each
  layer's input stays, plus one layer's activations while it is recomputed.
- logits: a causal LM's [tokens × vocab] logits in the compute dtype, their fp32 copy for the
  loss, its log-softmax and the gradient of that (classification has one row of logits per example).
- workspace: allocator slack and kernels' scratch space (a share of the rest).

The per-token coefficients were measured against the worker's training loop on the CPU
(bench/memory_estimate.py; docs/PERFORMANCE.md gives the error).
"""
from dataclasses import dataclass, field

from app.methods.shape import DEFAULT_LORA_TARGETS, ENCODERS, ModelShape, linear_layers, matches

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANT_BYTES = {"4bit": 0.5 + 1 / 64 + 4 / (64 * 256), "8bit": 1.0}
WORKSPACE_SHARE = 0.05
WORKSPACE_MIN = 16 * 2**20
# Methods that train the base's own linear weights: every such linear keeps its input for the
# weight gradient.
TRAINS_BASE = ("full", "freeze")


@dataclass
class MemoryEstimate:
    precision: str  # the compute dtype the figure is for (auto resolved for `device`)
    device: str  # cuda or cpu
    quantization: str | None
    gradient_checkpointing: bool
    tokens: int  # batch_size × max_length
    parts: dict[str, int]  # sums to total
    weights_by_dtype: dict[str, int]
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def as_dict(self) -> dict:
        return {"precision": self.precision, "device": self.device, "quantization": self.quantization,
                "gradient_checkpointing": self.gradient_checkpointing, "tokens": self.tokens,
                "parts": dict(self.parts), "weights_by_dtype": dict(self.weights_by_dtype),
                "activations_without_checkpointing": self.activations_without_checkpointing,
                "activations_with_checkpointing": self.activations_with_checkpointing,
                "note": "; ".join(self.notes)}


def resolve_precision(requested: str | None, device: str) -> str:
    """The dtype a run trains in on a device of this kind (workers/training/precision.py's rule, less
    the per-GPU bf16 check: a GPU without bf16 gets fp16, the same size)."""
    requested = requested or "auto"
    if device == "cuda":
        return "bf16" if requested == "auto" else requested
    return "fp32" if requested in ("auto", "fp16") else requested


def quantization_of(training: dict) -> str | None:
    """training.quantization (null, 4bit or 8bit), read defensively: older configs have no such field."""
    value = training.get("quantization")
    return value if value in QUANT_BYTES else None


def _quantizable(shape: ModelShape, task: str) -> int:
    """Weights bitsandbytes quantises: the linear layers inside the transformer blocks (never the LM head)."""
    if shape.known:
        return sum(layer.fan_in * layer.fan_out for layer in linear_layers(shape, task) if layer.name != "lm_head")
    kv = shape.kv_width
    return shape.layers * (shape.d * (shape.heads * shape.head_dim) * 2 + 2 * shape.d * kv + 3 * shape.d * shape.intermediate)


def weight_parts(shape: ModelShape, task: str, frozen: int, dtype_bytes: int, precision: str,
                 quantization: str | None) -> dict[str, int]:
    """The frozen weights by storage: {"bf16": bytes} or {"nf4": bytes, "fp32": bytes}."""
    if quantization is None:
        return {precision: frozen * dtype_bytes}
    quantized = min(frozen, _quantizable(shape, task))
    rest = frozen - quantized
    name = "nf4" if quantization == "4bit" else "int8"
    row_scales = 4 * shape.layers * 7 * shape.d if quantization == "8bit" else 0
    return {name: int(quantized * QUANT_BYTES[quantization]) + row_scales, "fp32": rest * 4}


def _layer_activation_bytes(shape: ModelShape, a: int, targets: list[tuple[int, float]], trains_base: bool,
                            quantized: bool, device: str) -> float:
    """Bytes autograd keeps per token for one transformer layer. `targets`: (fan_in, dropout) of each
    LoRA / adapter input inside the layer."""
    d, i, kv = shape.d, shape.intermediate, shape.kv_width
    if shape.model_type == "gpt2":
        # LayerNorms (fp32 input), fused qkv + SDPA's q/k/v/out and their head-split copies, gelu_new's
        # saved terms (the 7·d beyond the 4·d of q/k/v/out: measured)
        per = 2 * 4 * d + a * 11 * d + a * 4 * i
    elif shape.model_type in ENCODERS:
        # post-LayerNorms, SDPA q/k/v/out, dropout masks, gelu input
        per = 2 * 4 * d + a * 4 * d + 2 * d + a * 2 * i
    else:  # llama-style: RMSNorm fp32 inputs, SDPA q/k/v/out, gate/up/silu outputs
        # (the 6·d beyond q and the attention output: RoPE and SDPA's own saved copies, measured)
        per = 2 * 4 * d + a * (8 * d + 2 * kv) + a * 3 * i
    if trains_base or quantized:
        per += a * (3 * d + i)  # the linear layers' inputs (bitsandbytes keeps them for the input gradient too)
    # Each LoRA / adapter input: the copy its first matmul keeps (in the compute dtype under autocast),
    # and with dropout its mask: 1 byte on a GPU (fused kernel), a 4-byte noise tensor on a CPU.
    mask = 1 if device == "cuda" else 4
    for fan_in, dropout in targets:
        per += a * fan_in + (mask * fan_in if dropout > 0 else 0)
    return per


def _attention_dropout(shape: ModelShape, stated: float | None) -> float:
    """The config's attention dropout; models registered before it was stored get their family's default
    (transformers': 0.1 for GPT-2 and the BERT family, 0 for Llama-style decoders)."""
    if stated is not None:
        return stated
    return 0.1 if shape.model_type == "gpt2" or shape.model_type in ENCODERS else 0.0


def _targets(shape: ModelShape, task: str, method: dict) -> list[tuple[int, float]]:
    """(fan_in, dropout) of every LoRA-style input inside one layer (averaged over layers)."""
    kind = method.get("type")
    if kind in ("lora", "vera") and shape.known:
        names = method.get("target_modules") or DEFAULT_LORA_TARGETS.get(shape.model_type, [])
        layers = [layer for layer in linear_layers(shape, task) if layer.name != "lm_head"
                  and any(matches(layer.name, t) for t in names)]
        dropout = float(method.get("dropout", 0.1 if kind == "lora" else 0.0) or 0.0)
        return [(layer.fan_in, dropout) for layer in layers[:len(layers) // max(1, shape.layers)]]
    if kind in ("lora", "vera"):
        return [(shape.d, 0.1), (shape.d, 0.1)]
    if kind in ("adapter", "adapter_fusion"):
        return [(shape.d, 0.0), (shape.d, 0.0)]
    return []


def estimate_memory(shape: ModelShape, *, task: str, num_labels: int, method: dict, training: dict,
                    trainable: int, total: int, device: str = "cuda",
                    attention_dropout: float | None = None) -> MemoryEstimate:
    """Peak training memory of the config on a `device` ("cuda" or "cpu") worker. `trainable` / `total`:
    the parameter counts of app.models.param_count (trainable ones in fp32, the others in the dtype)."""
    precision = resolve_precision(training.get("precision"), device)
    a = BYTES.get(precision, 4)
    quantization = quantization_of(training)
    checkpointing = bool(training.get("gradient_checkpointing"))
    # Several GPUs (training.gpus): the figure is one process's; each takes its share of the batch, and
    # FSDP shards the weights, gradients and optimizer state (a block is whole only while it runs).
    gpus = max(1, int(training.get("gpus") or 1))
    sharded = gpus > 1 and training.get("distributed") == "fsdp"
    batch = -(-int(training.get("batch_size") or 32) // gpus)
    length = int(training.get("max_length") or 128)
    if shape.positions:
        length = min(length, shape.positions)
    tokens = batch * length
    kind = method.get("type")
    trains_base = kind in TRAINS_BASE
    notes = []

    by_dtype = weight_parts(shape, task, max(0, total - trainable), a, precision, quantization)
    layer = _layer_activation_bytes(shape, a, _targets(shape, task, method), trains_base, quantization is not None,
                                    device)
    if device == "cpu" and _attention_dropout(shape, attention_dropout) > 0:
        # SDPA on a CPU has no fused kernel with dropout: the math path keeps the attention
        # probabilities, the dropout noise and the dropped probabilities (heads × length per token).
        layer += shape.heads * length * (2 * a + 4)
    # Outside the layers: the embedding output and the final norm's fp32 input.
    outside = (a + 4) * shape.d
    full = tokens * (shape.layers * layer + outside)
    # Checkpointed: each layer keeps its input (the residual stream) plus one layer recomputed at a time.
    kept = tokens * (shape.layers * a * shape.d + layer + outside)
    activations = kept if checkpointing else full

    if task == "causal_lm":
        # logits (dtype) + the fp32 copy the loss takes, its log-softmax, and their gradients in the
        # backward (not all alive at once: measured a + 8 bytes per logit at the peak)
        logits = tokens * shape.vocab * (a + 8)
    else:
        logits = batch * num_labels * 16
    parts = {
        "weights": sum(by_dtype.values()),
        "trainable_weights": 4 * trainable,
        "gradients": 4 * trainable,
        "optimizer_states": 8 * trainable,  # AdamW: exp_avg and exp_avg_sq, fp32
        "activations": int(activations),
        "logits": int(logits),
    }
    if sharded:
        for part in ("weights", "trainable_weights", "gradients", "optimizer_states"):
            parts[part] = -(-parts[part] // gpus)
        notes.append(f"per process: FSDP shards the weights over {gpus} GPUs")
    elif gpus > 1:
        notes.append(f"per process: each of the {gpus} GPUs holds the whole model and its share of the batch")
    if quantization == "4bit" and shape.known:  # one linear dequantised to the compute dtype at a time
        parts["dequantization_buffer"] = max(layer.fan_in * layer.fan_out for layer in linear_layers(shape, task)) * a
    parts["workspace"] = max(WORKSPACE_MIN, int(WORKSPACE_SHARE * sum(parts.values())))
    if not shape.known:
        notes.append(f"approximate: the server knows the BERT, GPT-2 and Llama layouts, not {shape.model_type}")
    if quantization and device == "cpu":
        notes.append("bitsandbytes quantisation on a CPU worker is slow where it works at all")
    return MemoryEstimate(precision=precision, device=device, quantization=quantization,
                          gradient_checkpointing=checkpointing, tokens=tokens, parts=parts, weights_by_dtype=by_dtype,
                          activations_without_checkpointing=int(full), activations_with_checkpointing=int(kept),
                          notes=notes)
