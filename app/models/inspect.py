"""Reading a model directory's facts without torch: config.json and safetensors headers."""
import json
import struct
from pathlib import Path

# config.json keys differ by architecture (GPT-2 says n_embd / n_layer).
_ALIASES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head"),
    "vocab_size": ("vocab_size",),
    "intermediate_size": ("intermediate_size", "n_inner"),
    # Grouped-query attention (Llama): k_proj / v_proj are num_key_value_heads · head_dim wide.
    "num_key_value_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    # How many token positions the model holds (virtual tokens take some of them).
    "max_positions": ("max_position_embeddings", "n_positions"),
}


class ModelSourceError(ValueError):
    pass


def read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelSourceError(f"{model_dir} has no config.json; is it a transformers model directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelSourceError(f"{path} is not valid JSON: {e}") from None


def safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        if any(Path(n).name != n or n in ("", ".", "..") for n in names):  # only files beside the index
            raise ModelSourceError(f"{index.name} names weight files outside {model_dir}; refused.")
        return [model_dir / n for n in sorted(names)]
    single = model_dir / "model.safetensors"
    return [single] if single.is_file() else []


def count_parameters(files: list[Path]) -> int:
    """Sum of tensor sizes from the safetensors headers (8-byte length + JSON), no weights read.
    Integer tensors are buffers some checkpoints carry (BERT's position_ids), not parameters."""
    total = 0
    for path in files:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                raise ModelSourceError(f"{path.name} has an implausible safetensors header.")
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name == "__metadata__" or not str(info.get("dtype", "F")).startswith(("F", "BF")):
                continue
            n = 1
            for dim in info["shape"]:
                n *= dim
            total += n
    return total


def model_facts(model_dir: Path) -> dict:
    config = read_config(model_dir)
    files = safetensors_files(model_dir)
    if not files:
        raise ModelSourceError(f"{model_dir} has no model.safetensors; peftlab loads safetensors weights only (never pickle).")
    facts = config_facts(config)
    facts["num_parameters"] = count_parameters(files)
    return facts


def config_facts(config: dict) -> dict:
    """The shape facts a config.json (as a dict) gives, without the parameter count."""
    facts = {"model_type": config.get("model_type")}
    for key, names in _ALIASES.items():
        facts[key] = next((config[n] for n in names if isinstance(config.get(n), int)), None)
    # Attention dropout: on a CPU, SDPA with dropout keeps each layer's attention matrix (the memory estimate).
    facts["attention_dropout"] = next((float(config[n]) for n in ("attention_probs_dropout_prob", "attn_pdrop",
                                                                 "attention_dropout")
                                       if isinstance(config.get(n), (int, float))), None)
    # An untied output layer is a weight of its own (it is dropped when a classifier is built).
    facts["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", True))
    # A checkpoint saved already quantised (GPTQ, AWQ, bitsandbytes…): its weights cannot be quantised again.
    quantization_config = config.get("quantization_config")
    if isinstance(quantization_config, dict):
        facts["quantized"] = str(quantization_config.get("quant_method") or "unknown")
    archs = config.get("architectures") or []
    facts["architecture"] = archs[0] if archs else config.get("model_type")
    return facts
