"""Layer freezing, in-house: the top `trainable_layers` transformer layers train fully, with every
parameter registered after them (pooler, final norm, untied LM head, the classification head); the
embeddings and the lower layers stay frozen. Downloads in the in-house format (own_weights.py)."""
from pathlib import Path

from torch import nn

from app.methods.freeze import FreezeMethod
from workers.methods.base import BuildContext, Method
from workers.methods.own_weights import load_trained, save_trained, train_only


def layer_stack(model: nn.Module) -> tuple[str, int]:
    """(dotted name of the ModuleList holding the transformer layers, its length)."""
    depth = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return name, depth
    raise ValueError(f"layer freezing found no stack of {depth} transformer layers in {type(model).__name__}")


class Freeze(Method):
    name = "freeze"

    def build(self, base_model: nn.Module, method_config: FreezeMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        stack, depth = layer_stack(base_model)
        k = method_config.trainable_layers
        if k > depth:
            raise ValueError(f"the model has {depth} layers; trainable_layers {k} would train them all")
        # named_parameters() follows registration order: embeddings, the layers, then what sits above them.
        names = [n for n, _ in base_model.named_parameters()]
        in_stack = [i for i, n in enumerate(names) if n.startswith(stack + ".")]
        last = in_stack[-1]

        def trains(name: str) -> bool:
            if name.startswith(stack + "."):
                return int(name[len(stack) + 1:].split(".")[0]) >= depth - k
            return names.index(name) > last

        return train_only(base_model, trains)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        save_trained(model, out_dir, self.name, {})

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        return load_trained(base_model, saved_dir, self.name)
