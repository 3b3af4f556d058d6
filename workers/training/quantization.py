"""training.quantization: the frozen base's linear layers load quantised by bitsandbytes.

`4bit` is QLoRA's recipe (Dettmers et al. 2023, arXiv 2305.14314): NF4 weights, double quantisation
(the block scales are quantised too), matmuls in the run's precision (bf16 on a GPU under `auto`;
fp32 on a CPU). `8bit` is LLM.int8() (Linear8bitLt). The trainable weights the method adds stay
fp32 (upcast_trainable), as without quantisation.

Before the method wraps the base, `peft.prepare_model_for_kbit_training` freezes it and casts its
remaining half-precision tensors (norms, embeddings, the head) to fp32 — peft's practice for stable
k-bit training. The classification head (`classifier` / `score`) is never quantised: it trains.

bitsandbytes' CPU backend runs 4-bit and 8-bit layers on this project's CPU torch build, so CPU
workers train quantised runs too (slowly; the point there is memory). Each worker probes what its
device can do once (`supported_kinds`) and reports it with its device (GET /api/workers
`device.quantization`); a run asking for a kind its worker cannot run fails with that reason.
"""
import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

KINDS = ("4bit", "8bit")
# Heads of *ForSequenceClassification (BERT: classifier; GPT-2, Llama: score) and the LM head: never
# quantised (the classification head trains; transformers keeps lm_head unquantised anyway).
UNQUANTISED_MODULES = ["classifier", "score", "lm_head"]


@functools.cache
def supported_kinds(device_type: str) -> tuple[str, ...]:
    """The kinds bitsandbytes can run on this process's `device_type` (cpu, cuda): each is tried on a
    small tensor once. () when bitsandbytes is not installed or has no backend for the device."""
    try:
        import bitsandbytes.functional as bnbf
    except Exception as e:  # noqa: BLE001 — a broken native library raises OSError/RuntimeError, not ImportError
        log.info("bitsandbytes is not usable here (%s): no quantised runs on this worker", str(e).splitlines()[0][:200])
        return ()
    # Not torch.randn: the probe may run after a run seeded its RNG, and must not shift the run's initialisation.
    probe = torch.linspace(-1, 1, 64 * 64, device=device_type,
                           dtype=torch.float16 if device_type == "cuda" else torch.float32).reshape(64, 64)
    kinds = []
    try:
        packed, state = bnbf.quantize_4bit(probe, quant_type="nf4", compress_statistics=True)
        bnbf.dequantize_4bit(packed, state)
        kinds.append("4bit")
    except Exception as e:  # noqa: BLE001 — no kernel for this device
        log.info("bitsandbytes cannot run 4-bit layers on %s: %s", device_type, str(e).splitlines()[0][:200])
    try:
        bnbf.int8_vectorwise_quant(probe.half())
        kinds.append("8bit")
    except Exception as e:  # noqa: BLE001
        log.info("bitsandbytes cannot run 8-bit layers on %s: %s", device_type, str(e).splitlines()[0][:200])
    return tuple(kinds)


def check_supported(kind: str, device: torch.device) -> None:
    """Raise a ValueError the run's failure reason can show when this worker cannot run `kind`."""
    if kind not in KINDS:
        raise ValueError(f"unknown training.quantization {kind!r}; choose 4bit, 8bit or null")
    available = supported_kinds(device.type)
    if kind not in available:
        can = ", ".join(available) if available else "no quantisation (bitsandbytes is missing or has no backend here)"
        raise ValueError(f"training.quantization {kind}: this worker's {device.type} device can run {can}; "
                         "install bitsandbytes on the worker (pip install bitsandbytes) or leave quantization empty")


def bnb_config(kind: str, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for `kind`, matmuls in `compute_dtype` (the run's precision)."""
    from transformers import BitsAndBytesConfig

    if kind == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=UNQUANTISED_MODULES)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=UNQUANTISED_MODULES)
    raise ValueError(f"unknown training.quantization {kind!r}; choose 4bit, 8bit or null")


def keep_cpu_layout(model: nn.Module) -> None:
    """Turn off bitsandbytes' CPU inference repacking of 4-bit weights. On CPUs with AVX512-BF16,
    bitsandbytes 0.50 repacks a Linear4bit's weight in place the first time it runs without gradients
    (an evaluation); the next training step, dequantisation or save then reads the repacked bytes with
    the original shape and fails ("shape '[32, 0]' is invalid"). A run alternates the two, so it keeps
    the plain layout."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def prepare_for_training(base: nn.Module, gradient_checkpointing: bool) -> nn.Module:
    """peft's k-bit preparation: frozen base, its non-quantised tensors in fp32. Checkpointing itself is
    turned on by enable_gradient_checkpointing (non-reentrant, as for unquantised runs)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(base, use_gradient_checkpointing=gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False})


def quantised_linear_count(model: nn.Module) -> int:
    """How many bitsandbytes layers the model holds (the run summary and the tests read it)."""
    try:
        import bitsandbytes as bnb
    except Exception:  # noqa: BLE001
        return 0
    return sum(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def dequantised_weights(base: nn.Module) -> dict[str, torch.Tensor]:
    """{linear module name: its weight dequantised} of a quantised transformers model (method wrappers'
    `.base_layer` left out of the names): the weights the run's adapter was trained beside."""
    from transformers.integrations.bitsandbytes import dequantize_bnb_weight

    import bitsandbytes as bnb

    out = {}
    for name, module in base.named_modules():
        if isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
            state = getattr(module, "state", None)
            out[name.removesuffix(".base_layer")] = dequantize_bnb_weight(module.weight, state).detach().cpu()
    return out


def load_dequantised(plain: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy `weights` into the same-named layers of the unquantised `plain` model (GPT-2's Conv1D keeps
    its weight transposed)."""
    from transformers.pytorch_utils import Conv1D

    modules = dict(plain.named_modules())
    with torch.no_grad():
        for name, weight in weights.items():
            module = modules[name]
            if isinstance(module, Conv1D):  # quantised as a Linear, (out, in); Conv1D keeps (in, out)
                weight = weight.T
            module.weight.copy_(weight.to(module.weight.dtype))

