"""Loading a base model and its tokenizer from a local directory or a hub id.

Safe by construction: `trust_remote_code` is never set (only architectures transformers
ships run) and only safetensors weights load (a pickle in a model repo is never executed).
"""
import logging

import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          PreTrainedModel, PreTrainedTokenizerBase)
from transformers.utils import logging as hf_logging

# Loading a bare encoder into a classifier always "reports" the new head; that is expected.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
log = logging.getLogger(__name__)


def attention_implementation(device: torch.device, dtype: torch.dtype) -> str:
    """flash_attention_2 on a GPU with the flash-attn package and half-precision weights (its kernels
    take nothing else); PyTorch's scaled-dot-product attention everywhere else."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        try:
            import flash_attn  # noqa: F401 — only whether it imports (its CUDA build matches this torch)
        except Exception:  # noqa: BLE001 — a broken build raises OSError or RuntimeError, not just ImportError
            return "sdpa"
        return "flash_attention_2"
    return "sdpa"


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        # GPT-2 and Llama ship without one; padded positions are masked out anyway.
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {source} has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(source: str, task: str, labels: list[str] | None = None,
                    tokenizer: PreTrainedTokenizerBase | None = None,
                    dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
                    quantization: str | None = None, device: torch.device | None = None) -> PreTrainedModel:
    """The base model for `task`, its weights in `dtype` (training.precision), with its pad token id set.
    `attn_implementation` (sdpa, flash_attention_2): an architecture without it gets transformers' default.
    `quantization` (training.quantization: 4bit, 8bit): its linear layers load quantised by bitsandbytes,
    placed on `device` as they load (a quantised model cannot be cast afterwards).

    classification: a sequence-classification head with one output per label, freshly
    initialised when the checkpoint's head has another size.
    """
    if task == "classification":
        if not labels:
            raise ValueError("classification needs the list of labels")
        auto_class, kwargs = AutoModelForSequenceClassification, dict(
            num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, ignore_mismatched_sizes=True)
    elif task == "causal_lm":
        auto_class, kwargs = AutoModelForCausalLM, {}
    else:
        raise ValueError(f"unknown task {task!r}")
    if quantization:
        from workers.training.quantization import bnb_config, keep_cpu_layout

        kwargs |= dict(quantization_config=bnb_config(quantization, dtype),
                       device_map={"": str(device or torch.device("cpu"))})
    try:
        model = auto_class.from_pretrained(source, use_safetensors=True, dtype=dtype,
                                           attn_implementation=attn_implementation, **kwargs)
    except (ValueError, ImportError) as e:
        if attn_implementation is None or ("attn" not in str(e).lower() and "attention" not in str(e).lower()):
            raise
        log.warning("%s attention is not available for this model (%s); using transformers' default",
                    attn_implementation, str(e).splitlines()[0][:200])
        model = auto_class.from_pretrained(source, use_safetensors=True, dtype=dtype, **kwargs)
    if quantization:
        keep_cpu_layout(model)
    if tokenizer is not None and model.config.pad_token_id is None:
        # Sequence classifiers find the last real token through pad_token_id (GPT-2, Llama).
        model.config.pad_token_id = tokenizer.pad_token_id
    return model
