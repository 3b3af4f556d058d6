"""BitFit (Ben Zaken et al. 2022), in-house (peft has none): only parameters named `*.bias` train,
plus the classification head. Downloads in the in-house format (workers/methods/own_weights.py)."""
from pathlib import Path

from torch import nn

from app.methods.bitfit import BitFitMethod
from workers.methods.base import BuildContext, Method
from workers.methods.own_weights import load_trained, save_trained, train_only

HEAD_MODULES = ("classifier", "score")


class BitFit(Method):
    name = "bitfit"

    def build(self, base_model: nn.Module, method_config: BitFitMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        return train_only(base_model, lambda n: n.endswith(".bias") or n.split(".")[0] in HEAD_MODULES)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        save_trained(model, out_dir, self.name, {})

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        return load_trained(base_model, saved_dir, self.name)
