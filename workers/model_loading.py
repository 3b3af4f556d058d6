"""Loading a base model and its tokenizer from a local directory or a hub id.

Safe by construction: `trust_remote_code` is never set (only architectures transformers
ships run) and only safetensors weights load (a pickle in a model repo is never executed).
"""
import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          PreTrainedModel, PreTrainedTokenizerBase)
from transformers.utils import logging as hf_logging

# Loading a bare encoder into a classifier always "reports" the new head; that is expected.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


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
                    dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The base model for `task`, its weights in `dtype` (training.precision), with its pad token id set.

    classification: a sequence-classification head with one output per label, freshly
    initialised when the checkpoint's head has another size.
    """
    if task == "classification":
        if not labels:
            raise ValueError("classification needs the list of labels")
        model = AutoModelForSequenceClassification.from_pretrained(
            source, use_safetensors=True, dtype=dtype, num_labels=len(labels),
            id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True)
    elif task == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, dtype=dtype)
    else:
        raise ValueError(f"unknown task {task!r}")
    if tokenizer is not None and model.config.pad_token_id is None:
        # Sequence classifiers find the last real token through pad_token_id (GPT-2, Llama).
        model.config.pad_token_id = tokenizer.pad_token_id
    return model
