"""Prefix-tuning (Li & Liang 2021; without the MLP reparameterisation it is P-tuning v2): every
layer's self-attention attends over n trainable key/value vectors before the real tokens.

Two engines behind one method:
- decoders (GPT-2, Llama, …): `peft.PrefixTuningConfig`, which hands the prefixes to the model as
  a KV cache. Saved as a standard PEFT directory.
- BERT-family encoders: in-house. peft's encoder path under transformers 5 feeds the prefix as a
  cache, so BERT's embeddings number the real tokens from n instead of 0 (shifted position
  embeddings, and an error once n + length exceeds max_position_embeddings). Here each
  self-attention gets its layer's prefix concatenated to its keys and values, and the attention
  mask gets n always-visible columns; positions stay untouched. Saved as safetensors + JSON,
  described in docs/PREFIX_FORMAT.md.

Trainable: n·L·2·d without projection (d = the key/value width: hidden size, or
kv_heads·head_dim under grouped-query attention); with it, n·d + (d·h+h) + (h·L·2·d + L·2·d).
Plus the classification head.
"""
import json
from pathlib import Path

import torch
from peft import PeftModel, PrefixTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from app.methods.prefix import PrefixMethod
from workers.methods.base import BuildContext, Method
from workers.methods.prompt import TASK_TYPES

CONFIG_FILE = "adapter_config.json"  # the names a PEFT directory uses, so the download looks familiar
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1
HEAD_MODULES = ("classifier", "score")  # what peft's modules_to_save trains for classification


class Prefix(Method):
    name = "prefix"

    def build(self, base_model: nn.Module, method_config: PrefixMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        if encoder_self_attentions(base_model):
            prefix = PrefixParameters(layers=base_model.config.num_hidden_layers,
                                      virtual_tokens=method_config.num_virtual_tokens,
                                      hidden=base_model.config.hidden_size,
                                      projection_hidden=method_config.encoder_hidden_size if method_config.projection
                                      else None)
            return PrefixedEncoder(base_model, prefix)
        config = PrefixTuningConfig(task_type=TASK_TYPES[task], num_virtual_tokens=method_config.num_virtual_tokens,
                                    prefix_projection=method_config.projection,
                                    encoder_hidden_size=method_config.encoder_hidden_size)
        return get_peft_model(base_model, config)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        if isinstance(model, PrefixedEncoder):
            model.save(out_dir)
        else:
            model.save_pretrained(str(out_dir), safe_serialization=True)

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        config = json.loads((saved_dir / CONFIG_FILE).read_text())
        if config.get("peftlab_method") == "prefix":
            return PrefixedEncoder.load(base_model, saved_dir, config).eval()
        return PeftModel.from_pretrained(base_model, str(saved_dir)).eval()


def encoder_self_attentions(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules of a BERT-family encoder (query/key/value projections, keys and
    values passed through `past_key_values.update`), in layer order; [] for anything else."""
    if getattr(model.config, "is_decoder", False) or getattr(model.config, "is_encoder_decoder", False):
        return []
    found = [m for m in model.modules() if type(m).__name__.endswith("SelfAttention")
             and all(isinstance(getattr(m, p, None), nn.Linear) for p in ("query", "key", "value"))
             and hasattr(m, "attention_head_size")]
    return found if len(found) == model.config.num_hidden_layers else []


class PrefixParameters(nn.Module):
    """The trainable prefixes: forward() gives them as (layers, 2 [key, value], n, hidden).

    Without projection they are that tensor itself; with projection (the paper's
    reparameterisation) an (n, hidden) embedding goes through Linear → tanh → Linear to all
    layers' keys and values at once, like peft's PrefixEncoder."""

    def __init__(self, layers: int, virtual_tokens: int, hidden: int, projection_hidden: int | None = None):
        super().__init__()
        self.shape = (layers, 2, virtual_tokens, hidden)
        # Standard-normal, as peft's and P-tuning v2's nn.Embedding start.
        if projection_hidden is None:
            self.embedding = nn.Parameter(torch.randn(self.shape))
            self.mlp = None
        else:
            self.embedding = nn.Parameter(torch.randn(virtual_tokens, hidden))
            self.mlp = nn.Sequential(nn.Linear(hidden, projection_hidden), nn.Tanh(),
                                     nn.Linear(projection_hidden, layers * 2 * hidden))

    def forward(self) -> torch.Tensor:
        if self.mlp is None:
            return self.embedding
        layers, _, n, hidden = self.shape
        return self.mlp(self.embedding).view(n, layers, 2, hidden).permute(1, 2, 0, 3)


class _LayerPrefix:
    """Stands in for the KV cache during one self-attention call. BERT-style attention hands its
    fresh keys and values (batch, heads, length, head_dim) to `update` and attends over what
    comes back, so returning [prefix; fresh] prepends the prefix without touching the attention
    code (eager, sdpa or flash alike)."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor):
        self.key, self.value, self.used = key, value, False

    def update(self, key: torch.Tensor, value: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        self.used = True
        batch = key.shape[0]
        return (torch.cat((self.key.to(key.dtype).expand(batch, -1, -1, -1), key), dim=2),
                torch.cat((self.value.to(value.dtype).expand(batch, -1, -1, -1), value), dim=2))


def _extend_mask(mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Prepend n key columns every query may attend to. transformers builds a boolean mask
    (True = attend) for sdpa, an additive float mask for eager, and None when nothing is padded."""
    if mask is None:
        return None
    visible = torch.ones if mask.dtype == torch.bool else torch.zeros
    return torch.cat((visible(*mask.shape[:-1], n, dtype=mask.dtype, device=mask.device), mask), dim=-1)


class PrefixedEncoder(nn.Module):
    """A frozen BERT-family classifier whose self-attentions see trainable key/value prefixes.

    The prefixes are computed once per forward and picked up by a pre-hook on every layer's
    self-attention; outside this module's forward the base model runs unchanged."""

    def __init__(self, base_model: nn.Module, prefix: PrefixParameters):
        super().__init__()
        self.base_model = base_model
        self.prefix = prefix
        self.head_modules = [name for name, _ in base_model.named_children() if name in HEAD_MODULES]
        for name, p in base_model.named_parameters():
            p.requires_grad_(name.split(".")[0] in self.head_modules)
        self._prefixes: torch.Tensor | None = None
        for layer, attention in enumerate(encoder_self_attentions(base_model)):
            attention.register_forward_pre_hook(self._inject_hook(layer), with_kwargs=True)
            attention.register_forward_hook(self._check_hook(), with_kwargs=True)

    def forward(self, *args, **kwargs):
        self._prefixes = self.prefix()
        try:
            return self.base_model(*args, **kwargs)
        finally:
            self._prefixes = None

    def _inject_hook(self, layer: int):
        def inject(attention: nn.Module, args: tuple, kwargs: dict):
            if self._prefixes is None:
                return None
            if "attention_mask" not in kwargs:
                raise RuntimeError(f"{type(attention).__name__} took its attention mask positionally; "
                                   "Prefix-tuning cannot extend it")
            key, value = (self._to_heads(t, attention) for t in self._prefixes[layer])
            kwargs["past_key_values"] = _LayerPrefix(key, value)
            kwargs["attention_mask"] = _extend_mask(kwargs["attention_mask"], key.shape[2])
            return args, kwargs
        return inject

    def _check_hook(self):
        def check(attention: nn.Module, args: tuple, kwargs: dict, output):
            stand_in = kwargs.get("past_key_values")
            if isinstance(stand_in, _LayerPrefix) and not stand_in.used:
                raise RuntimeError(f"{type(attention).__name__} ignored its key/value prefix; "
                                   "Prefix-tuning does not support this encoder")
        return check

    @staticmethod
    def _to_heads(prefix: torch.Tensor, attention: nn.Module) -> torch.Tensor:
        """(n, hidden) → (1, heads, n, head_dim), the layout of the attention's keys and values."""
        n = prefix.shape[0]
        return prefix.view(n, -1, attention.attention_head_size).transpose(0, 1).unsqueeze(0)

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        layers, _, n, hidden = self.prefix.shape
        # The MLP only reparameterises training: like peft, keep just what it produces.
        with torch.no_grad():
            tensors = {"prefix": self.prefix()}
        tensors |= {f"head.{k}": v for k, v in self.base_model.state_dict().items()
                    if k.split(".")[0] in self.head_modules}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(out_dir / WEIGHTS_FILE))
        projection = self.prefix.mlp is not None
        config = {"peftlab_method": "prefix", "format_version": FORMAT_VERSION, "num_virtual_tokens": n,
                  "num_layers": layers, "hidden_size": hidden, "projection": projection,
                  "encoder_hidden_size": self.prefix.mlp[0].out_features if projection else None,
                  "head_modules": self.head_modules,
                  "base_model_class": type(self.base_model).__name__}
        (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, base_model: nn.Module, saved_dir: Path, config: dict) -> "PrefixedEncoder":
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported prefix format version {config.get('format_version')!r}")
        if not encoder_self_attentions(base_model) or (
                base_model.config.num_hidden_layers, base_model.config.hidden_size) != (
                config["num_layers"], config["hidden_size"]):
            raise ValueError(f"this prefix was trained for a {config['num_layers']}-layer encoder of width "
                             f"{config['hidden_size']}; the base model given does not match")
        prefix = PrefixParameters(config["num_layers"], config["num_virtual_tokens"], config["hidden_size"])
        tensors = load_file(str(saved_dir / WEIGHTS_FILE))
        prefix.load_state_dict({"embedding": tensors["prefix"]})
        model = cls(base_model, prefix)
        head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
        missing = set(head) - set(base_model.state_dict())
        if missing:
            raise ValueError(f"the base model has no {', '.join(sorted(missing))} for the saved head")
        base_model.load_state_dict(head, strict=False)
        return model
