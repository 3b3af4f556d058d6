"""Bottleneck adapters (Houlsby et al. 2019) and where they go in a transformer.

An adapter is down-projection d → m, a non-linearity, up-projection m → d, plus a residual:
    adapter(h) = h + up(act(down(h)))
It sits on a sublayer's output after that sublayer's projection back to d, before the block's own
residual + LayerNorm. The up-projection starts at zero, so a freshly adapted model computes
exactly what the base model computes.

Adapters are attached with forward hooks on the frozen projection modules, not by replacing
them: the base model's module tree and state-dict names stay untouched, so its weights can be
compared and saved by their usual names. The hooked-on modules live in `AdaptedModel`, which
wraps the base model, freezes it, and keeps only the classification head trainable.
"""
from collections.abc import Callable

import torch
from torch import nn

NON_LINEARITIES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}

# Where adapters go per variant: Houlsby after both sublayers, Pfeiffer after the FFN only.
VARIANT_LOCATIONS: dict[str, tuple[str, ...]] = {"houlsby": ("attention", "ffn"), "pfeiffer": ("ffn",)}

# Per architecture family: the projection (inside one transformer block) whose output each
# location adapts. A family matches a model when some ModuleList's blocks all have both paths.
LAYOUTS: dict[str, dict[str, str]] = {
    # BertSelfOutput.dense / BertOutput.dense; RoBERTa, MiniLM, ELECTRA… share the layout.
    "bert": {"attention": "attention.output.dense", "ffn": "output.dense"},
    "gpt2": {"attention": "attn.c_proj", "ffn": "mlp.c_proj"},
    # Llama, and the decoders that copied its layout (Mistral, Qwen2, …).
    "llama": {"attention": "self_attn.o_proj", "ffn": "mlp.down_proj"},
}
SUPPORTED = ("BERT-family encoders (attention.output.dense, output.dense), GPT-2 (attn.c_proj, mlp.c_proj), "
             "Llama-family decoders (self_attn.o_proj, mlp.down_proj)")

# The classification heads of *ForSequenceClassification: `classifier` (BERT), `score` (GPT-2, Llama).
HEAD_NAMES = ("classifier", "score")


class Bottleneck(nn.Module):
    """down d → m, non-linearity, up m → d; `forward` adds the residual, `delta` is without it."""

    def __init__(self, hidden_size: int, reduction_factor: int, non_linearity: str):
        super().__init__()
        bottleneck = hidden_size // reduction_factor
        if bottleneck < 1:
            raise ValueError(f"reduction_factor {reduction_factor} leaves no bottleneck for hidden size {hidden_size}")
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = NON_LINEARITIES[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden_size)
        # Zero up-projection: the adapter starts as the identity. The down-projection keeps
        # nn.Linear's default (not near-zero) init, so the bottleneck features carry signal and
        # the up-projection's first gradients are not vanishingly small.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def delta(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.delta(h)


def adapter_stack(num_layers: int, locations: tuple[str, ...], hidden_size: int, reduction_factor: int,
                  non_linearity: str) -> nn.ModuleList:
    """One {location: Bottleneck} per layer; state-dict names `<layer>.<location>.down.weight` …"""
    return nn.ModuleList(
        nn.ModuleDict({loc: Bottleneck(hidden_size, reduction_factor, non_linearity) for loc in locations})
        for _ in range(num_layers))


def find_sublayers(model: nn.Module) -> tuple[str, list[dict[str, nn.Module]]]:
    """(family, per layer {location: projection module}) by walking the model's module tree."""
    for family, paths in LAYOUTS.items():
        for stack in model.modules():
            if isinstance(stack, nn.ModuleList) and len(stack) and all(_has_paths(b, paths.values()) for b in stack):
                return family, [{loc: block.get_submodule(path) for loc, path in paths.items()} for block in stack]
    raise ValueError(f"adapters do not support {type(model).__name__}; supported architectures: {SUPPORTED}")


def _has_paths(block: nn.Module, paths) -> bool:
    for path in paths:
        try:
            block.get_submodule(path)
        except AttributeError:
            return False
    return True


class AdaptedModel(nn.Module):
    """A frozen base model plus modules that hook onto its sublayer outputs.

    Calls go straight to the base model (same inputs, same output object). Only what the method
    registers afterwards and, for classification, the head (`classifier` / `score`) train.
    """

    def __init__(self, base: nn.Module, task: str):
        super().__init__()
        self.base = base
        self.task = task
        self.family, self.sublayers = find_sublayers(base)
        self.hidden_size = base.config.hidden_size
        heads = [n for n in HEAD_NAMES if isinstance(getattr(base, n, None), nn.Module)]
        if task == "classification" and not heads:
            raise ValueError(f"no classification head ({' or '.join(HEAD_NAMES)}) on {type(base).__name__}")
        # A causal LM's output layer stays frozen (it is often tied to the input embeddings).
        self.head_names = heads if task == "classification" else []
        for p in base.parameters():
            p.requires_grad_(False)
        for name in self.head_names:
            for p in getattr(base, name).parameters():
                p.requires_grad_(True)

    @property
    def config(self):
        return self.base.config

    @property
    def num_layers(self) -> int:
        return len(self.sublayers)

    def on_output(self, location: str, layer: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace the output of `location`'s projection in `layer` with fn(output)."""
        self.sublayers[layer][location].register_forward_hook(lambda _module, _args, output: fn(output))

    def forward(self, **inputs):
        return self.base(**inputs)

    def generate(self, *args, **kwargs):
        return self.base.generate(*args, **kwargs)  # the hooks are on the base's modules: generation is adapted too

    def head_state(self) -> dict[str, torch.Tensor]:
        """The head's tensors named `head.<module>.<param>` (e.g. head.classifier.weight)."""
        return {f"head.{name}.{key}": value for name in self.head_names
                for key, value in getattr(self.base, name).state_dict().items()}

    def load_head_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for name in self.head_names:
            prefix = f"head.{name}."
            getattr(self.base, name).load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                                      if k.startswith(prefix)})

    def trained_state(self) -> dict[str, torch.Tensor]:
        """Everything that is not the frozen base (adapters, fusion layers…) plus the head."""
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("base.")}
        return {**own, **self.head_state()}

    def load_trained_state(self, tensors: dict[str, torch.Tensor]) -> None:
        own = {k: v for k, v in tensors.items() if not k.startswith("head.")}
        missing, unexpected = self.load_state_dict(own, strict=False)
        missing = [k for k in missing if not k.startswith("base.")]
        if missing or unexpected:
            raise ValueError(f"saved tensors do not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.load_head_state(tensors)
