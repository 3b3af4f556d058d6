"""The worker's last base model, kept loaded so the next run on the same base starts within seconds.

Each run gets a deep copy of the pristine model as `load_base_model` returned it: methods build on
(and full fine-tuning, BitFit or LN-tuning train) the copy, never the kept one, so no run ever sees
another run's trained weights. PEFTLAB_BASE_MODEL_CACHE says where the kept copy lives: `cpu`
(host memory), `gpu` (device memory: no host-to-device copy either, at the price of a second copy of
the weights there) or `off`; models above PEFTLAB_BASE_MODEL_CACHE_MAX_BYTES are not kept.

A classifier's new head is initialised by the global RNG at load time, and what the method builds
next draws from the same RNG. So the key holds the seed whenever loading drew random numbers, and a
hit puts the RNG where the cold load left it: a run trains the same whether it found the model kept
or not.
"""
import copy
import logging
import random
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from workers.model_loading import load_base_model

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    key: tuple
    model: PreTrainedModel
    torch_rng: torch.Tensor | None  # the CPU RNG state right after the cold load (None: loading drew nothing)
    python_rng: object


class BaseModelCache:
    """One kept model per process (a worker trains one run at a time)."""

    def __init__(self) -> None:
        self._entry: _Entry | None = None
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entry = None

    def load(self, source: str, task: str, labels: list[str] | None, tokenizer: PreTrainedTokenizerBase | None, *,
             dtype: torch.dtype, attn_implementation: str | None, seed: int, where: str, max_bytes: int,
             device: torch.device) -> tuple[PreTrainedModel, str]:
        """(a fresh base model for one run, "hit" | "miss" | "off"). The caller has seeded the RNGs with `seed`."""
        if where == "off":
            self.clear()
            return load_base_model(source, task, labels, tokenizer, dtype=dtype,
                                   attn_implementation=attn_implementation), "off"
        base_key = (source, _files_stamp(source), task, tuple(labels or ()), str(dtype), attn_implementation,
                    tokenizer.pad_token_id if tokenizer is not None else None)
        with self._lock:
            entry = self._entry
            if entry is not None and entry.key in (base_key, base_key + (seed,)):
                if entry.torch_rng is not None:
                    torch.set_rng_state(entry.torch_rng)
                    random.setstate(entry.python_rng)
                return copy.deepcopy(entry.model), "hit"
            self._entry = None  # the old model goes before the new one loads: one kept model at most
        before = torch.get_rng_state()
        model = load_base_model(source, task, labels, tokenizer, dtype=dtype, attn_implementation=attn_implementation)
        after = torch.get_rng_state()
        drew = not torch.equal(before, after)
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        if size > max_bytes:
            log.info("base model not kept: %d bytes is above PEFTLAB_BASE_MODEL_CACHE_MAX_BYTES", size)
            return model, "miss"
        kept = copy.deepcopy(model)
        if where == "gpu" and device.type == "cuda":
            kept.to(device)
        with self._lock:
            self._entry = _Entry(key=base_key + (seed,) if drew else base_key, model=kept,
                                 torch_rng=after if drew else None, python_rng=random.getstate() if drew else None)
        return model, "miss"


def _files_stamp(source: str) -> tuple:
    """(name, size, mtime) of a local model directory's files: a model re-saved in place is loaded afresh."""
    path = Path(source)
    if not path.is_dir():
        return ()
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))


BASE_MODELS = BaseModelCache()
