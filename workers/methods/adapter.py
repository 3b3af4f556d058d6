"""Bottleneck adapters (Houlsby et al. 2019; the Pfeiffer variant) — in-house, peft has none.

Houlsby puts an adapter after the attention and after the FFN sublayer of every layer, Pfeiffer
after the FFN only. The base model is frozen; the adapters and a classification head train:
2·L·(2·d·m + m + d) parameters for Houlsby, half of that for Pfeiffer (m = d // reduction_factor).

Saved in the in-house format (docs/ADAPTER_FORMAT.md): `adapter_config.json` + the trained
tensors in `adapter_model.safetensors`. AdapterFusion reads the same files.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from app.methods.adapter import AdapterMethod
from workers.methods.base import BuildContext, Method
from workers.methods.bottleneck import LAYOUTS, VARIANT_LOCATIONS, AdaptedModel, adapter_stack

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1


class AdapterModel(AdaptedModel):
    """The base model with one bottleneck adapter per (layer, location); tensors `adapters.<layer>.<location>.…`."""

    def __init__(self, base: nn.Module, config: AdapterMethod, task: str):
        super().__init__(base, task)
        self.method_config = config
        self.locations = VARIANT_LOCATIONS[config.variant]
        self.adapters = adapter_stack(self.num_layers, self.locations, self.hidden_size, config.reduction_factor,
                                      config.non_linearity)
        for layer, block in enumerate(self.adapters):
            for location, adapter in block.items():
                self.on_output(location, layer, adapter)

    def describe(self) -> dict:
        return {"peftlab_method": "adapter", "format_version": FORMAT_VERSION,
                "variant": self.method_config.variant, "reduction_factor": self.method_config.reduction_factor,
                "non_linearity": self.method_config.non_linearity,
                "bottleneck_size": self.hidden_size // self.method_config.reduction_factor,
                **base_facts(self)}


def base_facts(model: AdaptedModel) -> dict:
    """The config fields that tie saved tensors to a base architecture (shared with AdapterFusion)."""
    return {"hidden_size": model.hidden_size, "num_layers": model.num_layers, "locations": list(model.locations),
            "family": model.family, "sublayers": {loc: LAYOUTS[model.family][loc] for loc in model.locations},
            "model_type": model.config.model_type, "architecture": type(model.base).__name__,
            "task": model.task, "head_modules": model.head_names}


def write_adapter_files(out_dir: Path, config: dict, tensors: dict[str, torch.Tensor]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(out_dir / WEIGHTS_FILE),
              metadata={"format": "pt", "peftlab_method": config["peftlab_method"]})


def read_adapter_files(saved_dir: Path, method: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config.json, tensors) of an in-house directory written by `method`."""
    path = Path(saved_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{saved_dir} has no {CONFIG_FILE}: not a peftlab adapter directory")
    config = json.loads(path.read_text())
    if config.get("peftlab_method") != method:
        raise ValueError(f"{saved_dir} holds a {config.get('peftlab_method') or 'non-peftlab'} result, "
                         f"not an {method} one")
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{saved_dir} has format_version {config.get('format_version')}; "
                         f"this peftlab reads version {FORMAT_VERSION}")
    return config, load_file(str(Path(saved_dir) / WEIGHTS_FILE))


def check_fits(config: dict, model: AdaptedModel, what: str) -> None:
    """Saved tensors only fit a base model of the same family, width and depth."""
    facts = base_facts(model)
    for key in ("family", "hidden_size", "num_layers"):
        if config[key] != facts[key]:
            raise ValueError(f"{what} was trained on a base model with {key} {config[key]!r}; "
                             f"this one has {facts[key]!r}")


class Adapter(Method):
    name = "adapter"

    def build(self, base_model: nn.Module, method_config: AdapterMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        return AdapterModel(base_model, method_config, task)

    def save(self, model: AdapterModel, out_dir: Path) -> None:
        write_adapter_files(out_dir, model.describe(), model.trained_state())

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        config, tensors = read_adapter_files(saved_dir, self.name)
        method_config = AdapterMethod(type="adapter", variant=config["variant"],
                                      reduction_factor=config["reduction_factor"],
                                      non_linearity=config["non_linearity"])
        model = AdapterModel(base_model, method_config, config["task"])
        check_fits(config, model, f"the adapter in {saved_dir}")
        model.load_trained_state(tensors)
        return model.eval()
