"""LoRA (Hu et al. 2021): trainable low-rank A·B beside frozen linear layers, B = 0 at init.
Options through peft: DoRA (Liu et al. 2024, weight-decomposed: a trainable magnitude per output
feature), rsLoRA (Kalajdzievski 2023: scale alpha/√r instead of alpha/r), and the initialisations
gaussian, PiSSA (Meng et al. 2024: A, B from the top singular vectors, the base keeps the residual)
and OLoRA (Büyükakyüz 2024: from a QR decomposition).

Trainable: r·(fan_in + fan_out) per adapted linear layer (2·L·2·d·r on BERT's query and value),
plus fan_out per layer with DoRA.
"""
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from app.methods.registry import Count, MethodConfig, MethodSpec, register
from app.methods.shape import DEFAULT_LORA_TARGETS, ModelShape, linear_layers, matches, module_names


class LoraMethod(MethodConfig):
    """LoRA (Hu et al. 2021): trainable low-rank A·B beside frozen linear layers, B = 0 at init."""

    type: Literal["lora"]
    r: int = Field(8, ge=1, le=1024, title="Rank r", description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, le=4096, title="Alpha", description="Scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, title="Dropout", description="Dropout on the LoRA input.")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=64, title="Target modules",
        description="Module names to adapt; null = the default for the architecture (BERT: query, value; "
        "GPT-2: c_attn; Llama: q_proj, v_proj).",
    )
    use_dora: bool = Field(False, title="DoRA", description="Weight-decomposed LoRA (Liu et al. 2024): also train a "
                           "magnitude per output feature; the update changes only the direction of W.")
    use_rslora: bool = Field(False, title="rsLoRA", description="Scale the update by alpha / √r instead of alpha / r "
                             "(Kalajdzievski 2023), so high ranks keep learning.")
    init: Literal["gaussian", "pissa", "olora"] | None = Field(
        None, title="Initialisation",
        description="null = A Kaiming-uniform, B = 0 (the reference); gaussian = A Gaussian; pissa = A, B from the "
                    "weight's top singular vectors (the base keeps the residual); olora = from its QR decomposition. "
                    "PiSSA and OLoRA downloads are converted to a plain LoRA adapter (rank 2r) of the original weights.",
        json_schema_extra={"x-labels": {"null": "Default (A Kaiming, B = 0)", "gaussian": "Gaussian", "pissa": "PiSSA",
                                         "olora": "OLoRA"}})

    @field_validator("init")
    @classmethod
    def _init_fits_dora(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in ("pissa", "olora") and info.data.get("use_dora"):
            raise ValueError(f"init = {value} cannot be combined with use_dora: a {value} download is converted to a "
                             "plain LoRA adapter of the original weights, and DoRA's magnitudes (taken from the "
                             "residual weights) do not survive that conversion")
        return value


def targets(shape: ModelShape, config: LoraMethod) -> list[str]:
    return config.target_modules or DEFAULT_LORA_TARGETS.get(shape.model_type, [])


def count(shape: ModelShape, config: LoraMethod, task: str, extra: dict) -> Count:
    r = config.r
    if not shape.known:
        # as if two d×d projections per layer, like BERT's query and value
        n = 2 * shape.layers * (2 * shape.d * r + (shape.d if config.use_dora else 0))
        return Count(n, n, False, f"estimated for an unknown architecture ({shape.model_type}) "
                                  "as two d×d projections per layer")
    names = targets(shape, config)
    layers = [layer for layer in linear_layers(shape, task) if any(matches(layer.name, t) for t in names)]
    n = sum(r * (layer.fan_in + layer.fan_out) + (layer.fan_out if config.use_dora else 0) for layer in layers)
    problems = check(shape, config, task)
    if problems:  # the estimate still answers (the form shows it); POST /api/runs refuses the run
        return Count(n, n, False, problems[0][1])
    return Count(n, n, True, f"LoRA on {len(layers)} layers ({', '.join(names)})")


def check(shape: ModelShape, config: LoraMethod, task: str) -> list[tuple[str, str]]:
    """Each target must name at least one linear layer, matched the way peft matches names; OLoRA
    needs nn.Linear layers (peft 0.21's OLoRA shapes GPT-2's transposed Conv1D weights wrongly)."""
    if config.init == "olora" and shape.model_type == "gpt2":
        return [("init", "init = olora does not work on GPT-2: peft initialises its transposed Conv1D layers with "
                         "the wrong shapes; use pissa or gaussian there")]
    if not shape.known or not config.target_modules:
        return []
    layers = linear_layers(shape, task)
    missing = [t for t in config.target_modules if not any(matches(layer.name, t) for layer in layers)]
    if not missing:
        return []
    available = module_names(shape, task)
    return [("target_modules", f"LoRA target module(s) {', '.join(missing)} not found in the model; its linear "
                               f"layers are named: {', '.join(available[:20])}{' …' if len(available) > 20 else ''}")]


SPEC = register(MethodSpec(
    name="lora", config=LoraMethod, title="LoRA", order=10,
    description="Trains low-rank update matrices A·B beside the frozen attention weights; the base model stays frozen.",
    paper="Hu et al. 2021, arXiv 2106.09685; DoRA: Liu et al. 2024, arXiv 2402.09353; rsLoRA: Kalajdzievski 2023, "
          "arXiv 2312.03732; PiSSA: Meng et al. 2024, arXiv 2404.02948", learning_rate=2e-3, count=count, check=check, quantized_base=True,
    settings_note="r 8, alpha 16, dropout 0.1",
))
