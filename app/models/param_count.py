"""How many parameters a method trains on a base model, from the model's facts alone (no torch).

The shapes follow what the worker builds: peft's LoRA layers and prompt encoders, and the
in-house bottleneck adapters and AdapterFusion layers (DESIGN.md's formulas):
  LoRA        r·(fan_in + fan_out) per adapted linear layer
  Adapter     2·L·(2·d·m + m + d) (Houlsby), half of it (Pfeiffer), m = d // reduction_factor
  Fusion      3·d·d per adapter location (query, key, value without biases, as the worker builds them)
  Prefix      n·L·2·k, or with the MLP  n·k + (k·h + h) + (h·2·L·k + 2·L·k)
              (k = d, or num_key_value_heads·head_dim under grouped-query attention, as peft sizes it)
  P-tuning    n·d + the MLP or the bidirectional two-layer LSTM + MLP head peft builds
  Prompt      n·d
  Full        every weight of the task model
plus, for classification, the head (BERT `classifier` with bias; GPT-2 / Llama `score` without).
Architectures other than BERT, GPT-2 and Llama get the same formulas with exact = False.
"""
from dataclasses import dataclass

# peft's default LoRA targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_LORA_TARGETS = {"bert": ["query", "value"], "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}
KNOWN = tuple(DEFAULT_LORA_TARGETS)
# Decoder families: a classifier built from their checkpoint drops the (untied) LM head.
DECODERS = ("gpt2", "llama")


class EstimateError(ValueError):
    """The model's facts (or the method's settings) do not allow a count."""


@dataclass(frozen=True)
class Facts:
    model_type: str | None
    d: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    num_parameters: int
    tied: bool

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def known(self) -> bool:
        return self.model_type in KNOWN


@dataclass
class Estimate:
    trainable_params: int
    total_params: int
    exact: bool
    note: str

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0


@dataclass(frozen=True)
class Linear:
    name: str  # full module path, matched against target names the way peft does
    fan_in: int
    fan_out: int


def facts_from(raw: dict) -> Facts:
    d, layers, heads = raw.get("hidden_size"), raw.get("num_layers"), raw.get("num_heads")
    if not (d and layers and raw.get("num_parameters")):
        raise EstimateError("The server does not know this model's shape (it was registered by hub id, "
                            "or its config.json lacks hidden_size / num_layers); no estimate is possible.")
    heads = heads or 1
    kv_heads = raw.get("num_key_value_heads") or heads
    model_type = raw.get("model_type")
    return Facts(model_type=model_type, d=d, layers=layers, heads=heads, kv_heads=kv_heads,
                 head_dim=raw.get("head_dim") or d // heads,
                 intermediate=raw.get("intermediate_size") or 4 * d,  # GPT-2's n_inner null means 4·d
                 vocab=raw.get("vocab_size") or 0, num_parameters=raw["num_parameters"],
                 tied=raw.get("tie_word_embeddings", True))


def linear_layers(f: Facts, task: str) -> list[Linear]:
    """The linear layers of the task model, named as in transformers (known architectures only)."""
    out: list[Linear] = []
    d, i = f.d, f.intermediate
    if f.model_type == "bert":
        for n in range(f.layers):
            p = f"bert.encoder.layer.{n}."
            out += [Linear(p + "attention.self.query", d, d), Linear(p + "attention.self.key", d, d),
                    Linear(p + "attention.self.value", d, d), Linear(p + "attention.output.dense", d, d),
                    Linear(p + "intermediate.dense", d, i), Linear(p + "output.dense", i, d)]
        out.append(Linear("bert.pooler.dense", d, d))
    elif f.model_type == "gpt2":
        for n in range(f.layers):
            p = f"transformer.h.{n}."
            out += [Linear(p + "attn.c_attn", d, 3 * d), Linear(p + "attn.c_proj", d, d),
                    Linear(p + "mlp.c_fc", d, i), Linear(p + "mlp.c_proj", i, d)]
    elif f.model_type == "llama":
        q = f.heads * f.head_dim
        for n in range(f.layers):
            p = f"model.layers.{n}."
            out += [Linear(p + "self_attn.q_proj", d, q), Linear(p + "self_attn.k_proj", d, f.kv_width),
                    Linear(p + "self_attn.v_proj", d, f.kv_width), Linear(p + "self_attn.o_proj", q, d),
                    Linear(p + "mlp.gate_proj", d, i), Linear(p + "mlp.up_proj", d, i),
                    Linear(p + "mlp.down_proj", i, d)]
    if task == "causal_lm" and f.model_type in DECODERS:
        out.append(Linear("lm_head", d, f.vocab))
    return out


def head_params(f: Facts, task: str, num_labels: int) -> int:
    if task != "classification":
        return 0
    bias = 0 if f.model_type in DECODERS else num_labels  # GPT-2 / Llama `score` has no bias
    return f.d * num_labels + bias


def base_params(f: Facts, task: str) -> int:
    """The checkpoint's weights that the task model keeps (a classifier drops an untied LM head)."""
    if task == "classification" and f.model_type in DECODERS and not f.tied:
        return f.num_parameters - f.vocab * f.d
    return f.num_parameters


def lora(f: Facts, task: str, r: int, targets: list[str] | None) -> tuple[int, bool, str]:
    if not f.known:
        # Assume two d×d projections per layer, like BERT's query and value.
        return 2 * f.layers * 2 * f.d * r, False, (f"estimated for an unknown architecture ({f.model_type}) "
                                                   "as two d×d projections per layer")
    names = targets or DEFAULT_LORA_TARGETS[f.model_type]
    layers = linear_layers(f, task)
    matched = [l for l in layers if any(l.name == t or l.name.endswith("." + t) for t in names)]
    missing = [t for t in names if not any(l.name == t or l.name.endswith("." + t) for l in layers)]
    count = sum(r * (l.fan_in + l.fan_out) for l in matched)
    if missing:
        return count, False, (f"{', '.join(missing)} names no linear layer of this model that the server knows; "
                              "the run fails if the worker finds none either")
    note = f"LoRA on {len(matched)} layers ({', '.join(names)})"
    return count, True, note


def adapter_locations(f: Facts, variant: str) -> int:
    return f.layers * (2 if variant == "houlsby" else 1)


def adapter(f: Facts, variant: str, reduction_factor: int) -> int:
    m = f.d // reduction_factor
    if m < 1:
        raise EstimateError(f"reduction_factor {reduction_factor} leaves no bottleneck for hidden size {f.d}.")
    return adapter_locations(f, variant) * (2 * f.d * m + m + f.d)


def fusion(f: Facts, variant: str) -> int:
    return adapter_locations(f, variant) * 3 * f.d * f.d


def prefix(f: Facts, n: int, projection: bool, h: int) -> int:
    k = f.kv_width if f.model_type == "llama" else f.d
    if not projection:
        return n * f.layers * 2 * k
    return n * k + (k * h + h) + (h * 2 * f.layers * k + 2 * f.layers * k)


def lstm(input_size: int, hidden: int, layers: int = 2) -> int:
    """torch.nn.LSTM, bidirectional: per layer and direction W_ih, W_hh, b_ih, b_hh."""
    total, width = 0, input_size
    for _ in range(layers):
        total += 2 * (4 * hidden * width + 4 * hidden * hidden + 8 * hidden)
        width = 2 * hidden
    return total


def ptuning(f: Facts, n: int, encoder: str, h: int) -> int:
    d = f.d
    if encoder == "mlp":
        return n * d + (d * h + h) + (h * h + h) + (h * d + d)
    # peft: a two-layer bidirectional LSTM, then Linear(2h, 2h) → ReLU → Linear(2h, d)
    return n * d + lstm(d, h) + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)


def estimate(raw_facts: dict, task: str, num_labels: int, method: dict,
             fusion_variant: str | None = None) -> Estimate:
    """Count for `method` (a run config's `method`, as a dict). `fusion_variant`: the fused
    adapters' variant (None: unknown, counted as Pfeiffer and marked inexact)."""
    f = facts_from(raw_facts)
    head = head_params(f, task, num_labels)
    base = base_params(f, task)
    kind = method["type"]
    exact, note = f.known, ""
    if kind == "full":
        trainable = base + head
        note = "every weight trains"
    elif kind == "lora":
        own, exact, note = lora(f, task, method.get("r", 8), method.get("target_modules"))
        trainable = own + head
    elif kind == "adapter":
        trainable = adapter(f, method.get("variant", "houlsby"), method.get("reduction_factor", 16)) + head
        note = f"bottleneck m = {f.d // method.get('reduction_factor', 16)}"
    elif kind == "adapter_fusion":
        trainable = fusion(f, fusion_variant or "pfeiffer") + head
        if fusion_variant is None:
            exact, note = False, "the fused adapters are not known yet; counted for Pfeiffer adapters (one per layer)"
        else:
            note = f"fusion layers at {adapter_locations(f, fusion_variant)} {fusion_variant} adapter locations"
    elif kind == "prefix":
        trainable = prefix(f, method.get("num_virtual_tokens", 20), method.get("projection", False),
                           method.get("encoder_hidden_size", 512)) + head
    elif kind == "ptuning":
        trainable = ptuning(f, method.get("num_virtual_tokens", 20), method.get("encoder", "mlp"),
                            method.get("encoder_hidden_size", 128)) + head
    elif kind == "prompt":
        trainable = method.get("num_virtual_tokens", 20) * f.d + head
    else:
        raise EstimateError(f"unknown method {kind!r}")
    if head:
        note = "; ".join(filter(None, [note, f"includes the classification head ({head:,})"]))
    if not f.known and "unknown architecture" not in note:
        note = "; ".join(filter(None, [note, f"estimated: the server knows BERT, GPT-2 and Llama layouts, "
                                             f"not {f.model_type}"]))
    total = base + head + (0 if kind == "full" else trainable - head)
    return Estimate(trainable_params=trainable, total_params=total, exact=exact, note=note)
