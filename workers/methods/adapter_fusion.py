"""AdapterFusion (Pfeiffer et al. 2021, arXiv 2005.00247): combine N already trained adapters.

At every adapter location of every layer the N adapters (frozen) all see the sublayer output h,
and a fusion layer attends over what they produce:
    ψ = softmax_n( (Q h) · (K z_n) ),   output = h + Σ_n ψ_n · V z_n
where z_n = up_n(act(down_n(h))) is adapter n's transformation of h (its output without the
residual, which the fusion adds once). V starts as the identity and Q, K small and random, so at
step 0 the fusion is about the mean of the adapters — and with one adapter exactly that adapter.
Only Q, K, V (d×d each, per location) and the classification head train.

The saved directory is self-contained: fusion layers, the N adapters' weights and the head in
the in-house format (docs/ADAPTER_FORMAT.md), so a download needs no other run.
"""
from functools import partial
from pathlib import Path

import torch
from torch import nn

from app.methods.adapter_fusion import AdapterFusionMethod
from workers.methods.adapter import (FORMAT_VERSION, base_facts, check_fits, read_adapter_files,
                                     write_adapter_files)
from workers.methods.base import BuildContext, Method
from workers.methods.bottleneck import VARIANT_LOCATIONS, AdaptedModel, adapter_stack

# Q and K start small, so the first attention scores are near 0 and the softmax near uniform.
QK_INIT_STD = 0.02
# What is kept of each fused adapter's adapter_config.json (enough to rebuild it).
ADAPTER_FIELDS = ("run_id", "variant", "reduction_factor", "non_linearity", "bottleneck_size")


class FusionLayer(nn.Module):
    """Attention of one location's sublayer output (query) over the N adapters' outputs (keys, values)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        # Plain matrices as in the paper's formulas (a key bias would not even change the softmax).
        self.query = nn.Linear(hidden_size, hidden_size, bias=False)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)
        self.value = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.normal_(self.query.weight, std=QK_INIT_STD)
        nn.init.normal_(self.key.weight, std=QK_INIT_STD)
        nn.init.eye_(self.value.weight)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h: (…, d) sublayer output; z: (…, N, d) adapter outputs → (…, d)."""
        scores = (self.key(z) @ self.query(h).unsqueeze(-1)).squeeze(-1)  # (…, N)
        weights = scores.softmax(-1)
        return h + (weights.unsqueeze(-2) @ self.value(z)).squeeze(-2)


class FusionModel(AdaptedModel):
    """Tensors: `adapters.<n>.<layer>.<location>.…` (frozen) and `fusion.<layer>.<location>.{query,key,value}.…`."""

    def __init__(self, base: nn.Module, task: str, adapters: list[dict]):
        super().__init__(base, task)
        self.fused = [{k: a[k] for k in ADAPTER_FIELDS} for a in adapters]
        self.variant = adapters[0]["variant"]
        self.locations = VARIANT_LOCATIONS[self.variant]
        self.adapters = nn.ModuleList(
            adapter_stack(self.num_layers, self.locations, self.hidden_size, a["reduction_factor"], a["non_linearity"])
            for a in adapters)
        self.adapters.requires_grad_(False)
        self.fusion = nn.ModuleList(nn.ModuleDict({loc: FusionLayer(self.hidden_size) for loc in self.locations})
                                    for _ in range(self.num_layers))
        for layer in range(self.num_layers):
            for location in self.locations:
                self.on_output(location, layer, partial(self._fuse, layer, location))

    def _fuse(self, layer: int, location: str, h: torch.Tensor) -> torch.Tensor:
        z = torch.stack([stack[layer][location].delta(h) for stack in self.adapters], dim=-2)
        return self.fusion[layer][location](h, z)

    def describe(self) -> dict:
        return {"peftlab_method": "adapter_fusion", "format_version": FORMAT_VERSION, "variant": self.variant,
                "adapters": self.fused, **base_facts(self)}


class AdapterFusion(Method):
    name = "adapter_fusion"

    def build(self, base_model: nn.Module, method_config: AdapterFusionMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        context = context or BuildContext()
        saved = []
        for run_id in method_config.adapter_run_ids:
            config, tensors = read_adapter_files(context.adapter_dir(run_id), "adapter")
            saved.append(({**config, "run_id": run_id}, tensors))
        check_compatible([config for config, _ in saved])
        model = FusionModel(base_model, task, [config for config, _ in saved])
        check_fits(saved[0][0], model, f"adapter run {saved[0][0]['run_id']}")
        for stack, (_, tensors) in zip(model.adapters, saved):
            stack.load_state_dict({k.removeprefix("adapters."): v for k, v in tensors.items()
                                   if k.startswith("adapters.")})
        return model

    def save(self, model: FusionModel, out_dir: Path) -> None:
        write_adapter_files(out_dir, model.describe(), model.trained_state())

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        config, tensors = read_adapter_files(saved_dir, self.name)
        model = FusionModel(base_model, config["task"], config["adapters"])
        check_fits(config, model, f"the fusion in {saved_dir}")
        model.load_trained_state(tensors)
        return model.eval()


def check_compatible(configs: list[dict]) -> None:
    """Fused adapters must sit at the same places of the same architecture."""
    first = configs[0]
    for other in configs[1:]:
        for key in ("family", "model_type", "hidden_size", "num_layers", "variant"):
            if other[key] != first[key]:
                raise ValueError(f"AdapterFusion needs adapters of one variant on one base architecture: "
                                 f"run {first['run_id']} has {key} {first[key]!r}, "
                                 f"run {other['run_id']} has {key} {other[key]!r}")
