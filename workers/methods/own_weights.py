"""Methods that train some of the base model's own weights (BitFit, layer freezing) and nothing new:
the model is the base model with `requires_grad` set; the download is the in-house format of
docs/ADAPTER_FORMAT.md — `adapter_config.json` naming the method and the trained tensors, and those
tensors in `adapter_model.safetensors` — which `load` puts back into a fresh base model."""
import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1


def train_only(model: nn.Module, trains) -> nn.Module:
    """Freeze every parameter but those `trains(name)` picks."""
    for name, p in model.named_parameters():
        p.requires_grad_(bool(trains(name)))
    return model


def save_trained(model: nn.Module, out_dir: Path, method: str, settings: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    config = {"peftlab_method": method, "format_version": FORMAT_VERSION, **settings,
              "model_type": model.config.model_type, "base_model_class": type(model).__name__,
              "parameters": sorted(tensors)}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt", "peftlab_method": method})


def load_trained(base_model: nn.Module, saved_dir: Path, method: str) -> nn.Module:
    config = json.loads((Path(saved_dir) / CONFIG_FILE).read_text())
    if config.get("peftlab_method") != method or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{saved_dir} is not a {method} result of format version {FORMAT_VERSION}")
    tensors = load_file(str(Path(saved_dir) / WEIGHTS_FILE))
    own = dict(base_model.named_parameters())
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise ValueError(f"the base model has no {', '.join(unknown[:5])}: this {method} result was trained on "
                         f"a {config.get('base_model_class')}")
    wrong = [n for n, t in tensors.items() if own[n].shape != t.shape]
    if wrong:
        raise ValueError(f"{wrong[0]} has shape {tuple(tensors[wrong[0]].shape)} in {saved_dir}, "
                         f"{tuple(own[wrong[0]].shape)} in the base model given")
    base_model.load_state_dict(tensors, strict=False)
    return base_model.eval()
