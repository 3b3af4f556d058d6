"""The predict task: answer one inference request (a row the server wrote) with a trained run.

Runs on the predict queue, apart from training, so a "Try it" call never waits behind a run.
The last two loaded runs stay in memory: trying a few inputs in a row loads the model once.
"""
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase

from app.artifacts.service import local_copy
from app.artifacts.service import get as get_artifact
from app.config import get_settings
from app.db import session_scope
from app.inference import records as inference
from app.inference.models import InferenceRequest
from app.models.service import resolve_source
from app.queue import PREDICT_TASK
from app.runs.models import Run
from workers.celery_app import celery
from workers.model_loading import load_base_model
from workers.training.quantization import quantised_linear_count
from workers.training.chat import chat_reply, is_chat
from workers.training.checkpoints import load_trained

log = logging.getLogger(__name__)

CACHE_SIZE = 2
CLASSIFY_BATCH = 16
# The plain base model's classification head is new (random); a fixed seed keeps "compare with
# the base model" answering the same for the same inputs.
BASE_HEAD_SEED = 0


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    metadata: dict
    source: str
    device: torch.device
    base: nn.Module | None = None  # the plain base model, loaded on the first compare_base


# Keyed by run id and creation time: a deleted run's id can come back (SQLite reuses the highest
# id), and the new run must never be answered with the old one's weights.
_cache: OrderedDict[tuple[int, str], Loaded] = OrderedDict()


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def serving_dtype(dev: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it: two cached models (and a base for comparison) take half the memory
    beside a training run; fp32 on the CPU, where bf16 is slow."""
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def for_serving(model: nn.Module, dev: torch.device) -> nn.Module:
    """The model on `dev` in the serving dtype, in eval mode. A quantised run's base was loaded quantised on
    this device already, and bitsandbytes layers cannot be cast: it only goes to eval mode."""
    if quantised_linear_count(model):
        return model.eval()
    return model.to(dev, dtype=serving_dtype(dev)).eval()


def loaded_run(run_id: int) -> Loaded:
    """The run's trained model (LRU cache of CACHE_SIZE runs; a run's result never changes)."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} was deleted")
        key = (run_id, run.created_at.isoformat())
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        artifact = get_artifact(session, run_id=run_id, kind="adapter")
        if artifact is None:
            raise LookupError(f"run {run_id} has no saved adapter")
        session.expunge(artifact)
        source = resolve_source(session, run.base_model)
    saved_dir = local_copy(get_settings(), artifact)  # with an object store: this host's cached copy
    while len(_cache) >= CACHE_SIZE:
        _cache.popitem(last=False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    model, tokenizer, metadata = load_trained(Path(saved_dir), source)
    dev = device()
    _cache[key] = Loaded(model=for_serving(model, dev), tokenizer=tokenizer, metadata=metadata, source=source, device=dev)
    return _cache[key]


def plain_base(entry: Loaded) -> nn.Module:
    """The base model without what the run trained, for methods peft cannot switch off."""
    if entry.base is None:
        torch.manual_seed(BASE_HEAD_SEED)
        meta = entry.metadata
        entry.base = load_base_model(entry.source, meta["task"], meta["labels"], entry.tokenizer).to(
            entry.device, dtype=serving_dtype(entry.device)).eval()
    return entry.base


@celery.task(name=PREDICT_TASK)
def predict(request_id: int) -> None:
    with session_scope() as session:
        if not inference.claim(session, request_id):
            log.info("prediction %s expired or was taken; skipping", request_id)
            return
        row = session.get(InferenceRequest, request_id)
        run_id, inputs, params = row.run_id, list(row.inputs), dict(row.params)
    try:
        outputs, base_outputs = answer(run_id, inputs, **params)
    except Exception as e:  # noqa: BLE001 — every failure goes back to the waiting request
        log.exception("prediction %s for run %s failed", request_id, run_id)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        with session_scope() as session:
            inference.answer(session, request_id, error=reason[:500])
        return
    with session_scope() as session:
        inference.answer(session, request_id, outputs=outputs, base_outputs=base_outputs)


@torch.inference_mode()
def answer(run_id: int, inputs: list[str | list[dict]], *, compare_base: bool = False, max_new_tokens: int = 32,
           temperature: float = 0.0) -> tuple[list[dict], list[dict] | None]:
    """(outputs, base outputs or None) for the inputs, with the run's model."""
    entry = loaded_run(run_id)
    task = entry.metadata["task"]

    def run_with(model: nn.Module) -> list[dict]:
        if task == "classification":
            return classify(model, entry, inputs)
        if is_chat(entry.metadata.get("columns") or {}):
            return generate_chat(model, entry, inputs, max_new_tokens, temperature)
        return generate(model, entry, [i if isinstance(i, str) else _last_text(i) for i in inputs],
                        max_new_tokens, temperature)

    outputs = run_with(entry.model)
    base_outputs = None
    if compare_base:
        if isinstance(entry.model, PeftModel) and not entry.model.active_peft_config.is_prompt_learning:
            # LoRA: switches off the LoRA layers and the trained copy of the head in place.
            with entry.model.disable_adapter():
                base_outputs = run_with(entry.model)
        else:
            # peft's switch leaves prompt-learning methods' trained head on, and the in-house
            # methods have none: answer with a separately loaded plain base model.
            base_outputs = run_with(plain_base(entry))
    return outputs, base_outputs


def classify(model: nn.Module, entry: Loaded, texts: list[str]) -> list[dict]:
    """Label and class probabilities per text, tokenized as in training (max_length, pairs)."""
    meta, tokenizer = entry.metadata, entry.tokenizer
    labels = meta["labels"]
    pair = bool((meta.get("columns") or {}).get("text_pair"))
    use_types = pair and "token_type_ids" in tokenizer.model_input_names
    results = []
    for start in range(0, len(texts), CLASSIFY_BATCH):
        chunk = texts[start:start + CLASSIFY_BATCH]
        firsts, seconds = (zip(*(split_pair(t) for t in chunk)) if pair else (chunk, None))
        enc = tokenizer(list(firsts), list(seconds) if seconds else None, truncation=True,
                        max_length=meta["max_length"], padding=True, return_tensors="pt",
                        return_token_type_ids=use_types).to(entry.device)
        probs = model(**enc).logits.float().softmax(-1).cpu()
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"label": labels[best], "probs": {label: round(p, 6) for label, p in zip(labels, row)}})
    return results


def split_pair(text: str) -> tuple[str, str]:
    """'first<TAB>second' for runs trained on text pairs (no tab: an empty second text)."""
    first, _, second = text.partition("\t")
    return first, second


def generate(model: nn.Module, entry: Loaded, prompts: list[str], max_new_tokens: int,
             temperature: float) -> list[dict]:
    """The continuation of each prompt, one at a time (no padding: prompt-learning methods and
    left padding do not mix)."""
    tokenizer = entry.tokenizer
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    results = []
    for prompt in prompts:
        enc = tokenizer(prompt, truncation=True, max_length=entry.metadata["max_length"],
                        return_tensors="pt").to(entry.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, **sampling)
        new_tokens = out[0, enc["input_ids"].shape[1]:]
        results.append({"text": tokenizer.decode(new_tokens, skip_special_tokens=True).strip()})
    return results


def _last_text(turns: list[dict]) -> str:
    """A conversation sent to a run that was not trained on chat: the text of its last turn."""
    return turns[-1]["content"] if turns else ""


def generate_chat(model: nn.Module, entry: Loaded, inputs: list, max_new_tokens: int,
                  temperature: float) -> list[dict]:
    """The next assistant turn of each conversation (a plain text is one user turn), in the chat
    template the run trained with (workers/training/chat.py)."""
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    return [{"text": chat_reply(model, entry.tokenizer, entry.metadata, conversation, device=entry.device,
                                max_new_tokens=max_new_tokens, **sampling)} for conversation in inputs]
