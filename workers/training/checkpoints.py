"""Saving what a run produced: the method's weights (a standard PEFT directory for peft methods,
the whole model for full fine-tuning), the tokenizer, and `peftlab.json` describing the rest, so
the directory is self-describing. Plus `predictions.jsonl` for classification eval rows.
Everything is safetensors or JSON: nothing is ever pickled.
"""
import json
import logging
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from workers.methods import Method, get_method
from workers.model_loading import load_base_model, load_tokenizer

log = logging.getLogger(__name__)

METADATA_FILE = "peftlab.json"
PREDICTIONS_FILE = "predictions.jsonl"
FORMAT_VERSION = 1


def save_adapter(model: nn.Module, method: Method, tokenizer: PreTrainedTokenizerBase, out_dir: Path, *,
                 task: str, base_model: str, method_config: dict, labels: list[str] | None, columns: dict,
                 max_length: int, quantization: str | None = None) -> int:
    """Write the run's result into `out_dir` (created if needed). Returns the bytes of the method's
    own files (the weights a user downloads per run; tokenizer and metadata excluded).
    quantization: training.quantization, so that loading builds the base the adapter was trained on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    method.save(model, out_dir)
    method_bytes = dir_size(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    metadata = {"format_version": FORMAT_VERSION, "task": task, "base_model": base_model,
                "method": method_config, "labels": labels, "columns": columns, "max_length": max_length}
    if quantization:
        metadata["quantization"] = quantization
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return method_bytes


def quantised_base_kwargs(kind: str | None) -> dict:
    """load_base_model's arguments for the base a quantised run trained on: the adapter learned beside
    the quantised weights (on a small model the difference from the unquantised ones is large). Where
    bitsandbytes cannot run that kind, the unquantised base (with a warning)."""
    if not kind:
        return {}
    import torch

    from workers.training.quantization import supported_kinds

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in supported_kinds(device.type):
        log.warning("this run trained on a %s base, which bitsandbytes cannot load here: using the unquantised base "
                    "(answers may differ from the run's evaluation)", kind)
        return {}
    from workers.training.precision import resolve_precision

    return {"quantization": kind, "device": device, "dtype": resolve_precision("auto", device).dtype}


def read_metadata(out_dir: Path) -> dict:
    return json.loads((out_dir / METADATA_FILE).read_text())


def write_predictions(path: Path, predictions: list[dict], labels: list[str]) -> int:
    """One JSON line per eval row: dataset row index, true and predicted label strings, class
    probabilities in label-id order. Returns the file size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for p in predictions:
            f.write(json.dumps({"row": p["row"], "label": labels[p["label_id"]],
                                "prediction": labels[p["pred_id"]], "probs": p["probs"]}) + "\n")
    return path.stat().st_size


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def load_trained(saved_dir: Path, source: str) -> tuple[nn.Module, PreTrainedTokenizerBase, dict]:
    """What a run saved, ready for inference: (model in eval mode, tokenizer, peftlab.json).

    `source` is the base model's directory or hub id (models.service.resolve_source of the
    metadata's base_model); the labels and the method come from peftlab.json.
    """
    metadata = read_metadata(saved_dir)
    tokenizer = load_tokenizer(str(saved_dir))
    base = load_base_model(source, metadata["task"], metadata["labels"], tokenizer,
                           **quantised_base_kwargs(metadata.get("quantization")))
    model = get_method(metadata["method"]["type"]).load(base, saved_dir)
    return model, tokenizer, metadata
