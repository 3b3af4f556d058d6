"""A base model's shape as the server knows it without torch: read from config.json (and the
safetensors headers) by app.models.inspect, stored with the model, turned into `ModelShape` here.

The layouts of BERT, GPT-2 and Llama are known exactly (module names and sizes, as transformers
builds them); other architectures get their width and depth only, and checks that need module
names are left to the worker.
"""
from dataclasses import dataclass

# peft's default LoRA targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_LORA_TARGETS = {"bert": ["query", "value"], "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}
KNOWN = tuple(DEFAULT_LORA_TARGETS)
# Decoder families: a classifier built from their checkpoint drops the (untied) LM head.
DECODERS = ("gpt2", "llama")
# Encoder-only families: no causal language modelling head.
ENCODERS = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2", "albert", "mpnet")


class ShapeError(ValueError):
    """The model's facts do not say enough for what was asked."""


@dataclass(frozen=True)
class Linear:
    name: str  # full module path, matched against target names the way peft does
    fan_in: int
    fan_out: int
    bias: bool = True


@dataclass(frozen=True)
class ModelShape:
    model_type: str | None
    architecture: str | None
    d: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    num_parameters: int | None
    tied: bool
    positions: int | None

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def known(self) -> bool:
        return self.model_type in KNOWN

    @property
    def is_encoder(self) -> bool:
        """True only where the model surely has no causal LM head (unknown types get the benefit of the doubt)."""
        arch = self.architecture or ""
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return False
        return self.model_type in ENCODERS


def shape_from(raw: dict) -> ModelShape:
    """The shape from a model's stored facts (app.models.inspect.model_facts)."""
    d, layers = raw.get("hidden_size"), raw.get("num_layers")
    if not (d and layers):
        raise ShapeError("The server does not know this model's shape (it was registered by hub id, "
                         "or its config.json lacks hidden_size / num_layers).")
    heads = raw.get("num_heads") or 1
    return ModelShape(model_type=raw.get("model_type"), architecture=raw.get("architecture"), d=d, layers=layers,
                      heads=heads, kv_heads=raw.get("num_key_value_heads") or heads,
                      head_dim=raw.get("head_dim") or d // heads,
                      intermediate=raw.get("intermediate_size") or 4 * d,  # GPT-2's n_inner null means 4·d
                      vocab=raw.get("vocab_size") or 0, num_parameters=raw.get("num_parameters"),
                      tied=raw.get("tie_word_embeddings", True), positions=raw.get("max_positions"))


def linear_layers(s: ModelShape, task: str) -> list[Linear]:
    """The linear layers of the task model, named as in transformers (known architectures only)."""
    out: list[Linear] = []
    d, i = s.d, s.intermediate
    if s.model_type == "bert":
        for n in range(s.layers):
            p = f"bert.encoder.layer.{n}."
            out += [Linear(p + "attention.self.query", d, d), Linear(p + "attention.self.key", d, d),
                    Linear(p + "attention.self.value", d, d), Linear(p + "attention.output.dense", d, d),
                    Linear(p + "intermediate.dense", d, i), Linear(p + "output.dense", i, d)]
        out.append(Linear("bert.pooler.dense", d, d))
    elif s.model_type == "gpt2":
        for n in range(s.layers):
            p = f"transformer.h.{n}."
            out += [Linear(p + "attn.c_attn", d, 3 * d), Linear(p + "attn.c_proj", d, d),
                    Linear(p + "mlp.c_fc", d, i), Linear(p + "mlp.c_proj", i, d)]
    elif s.model_type == "llama":
        q = s.heads * s.head_dim
        for n in range(s.layers):
            p = f"model.layers.{n}."
            out += [Linear(p + "self_attn.q_proj", d, q, False), Linear(p + "self_attn.k_proj", d, s.kv_width, False),
                    Linear(p + "self_attn.v_proj", d, s.kv_width, False), Linear(p + "self_attn.o_proj", q, d, False),
                    Linear(p + "mlp.gate_proj", d, i, False), Linear(p + "mlp.up_proj", d, i, False),
                    Linear(p + "mlp.down_proj", i, d, False)]
    if task == "causal_lm" and s.model_type in DECODERS:
        out.append(Linear("lm_head", d, s.vocab, False))
    return out


def matches(module: str, target: str) -> bool:
    """peft's rule for a target name: the full module path, or its last dotted parts."""
    return module == target or module.endswith("." + target)


def module_names(s: ModelShape, task: str) -> list[str]:
    """Distinct last name parts of the linear layers ("query", "c_attn", "q_proj", …)."""
    return sorted({layer.name.rsplit(".", 1)[-1] for layer in linear_layers(s, task)})


def head_params(s: ModelShape, task: str, num_labels: int) -> int:
    if task != "classification":
        return 0
    bias = 0 if s.model_type in DECODERS else num_labels  # GPT-2 / Llama `score` has no bias
    return s.d * num_labels + bias


def base_params(s: ModelShape, task: str) -> int:
    """The checkpoint's weights that the task model keeps (a classifier drops an untied LM head)."""
    if s.num_parameters is None:
        raise ShapeError("The server does not know this model's parameter count.")
    if task == "classification" and s.model_type in DECODERS and not s.tied:
        return s.num_parameters - s.vocab * s.d
    return s.num_parameters
