"""Tokenized datasets kept on the worker's disk, so a second run on the same data skips tokenization.

The key is a hash of everything `prepare_data` reads: the rows themselves (training and eval), the task,
the columns (with the chat template's text), max_length, the split (eval_fraction, seed) and the
tokenizer (its full serialized vocabulary and rules, special tokens and chat template). A changed
dataset, tokenizer or setting is a different key; nothing is ever served stale.

Each entry is one .npz file (flat int arrays and a JSON header, loaded with allow_pickle=False). Files
are written under a temporary name and renamed into place, so concurrent workers never read half a
file; a hit refreshes the file's mtime and writes evict the least recently used past the byte budget.
"""
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from app.runs.schemas import Columns
from workers.training.chat import is_chat, template_for
from workers.training.data import Example, PreparedData, prepare_data

log = logging.getLogger(__name__)

_HASH_CHUNK = 10_000  # rows serialised at once for the key
FORMAT = 1  # bump when Example or the encoding changes: older files then never match


def cached_prepare_data(rows: Sequence[dict], eval_rows: Sequence[dict] | None, *, task: str, columns: Columns,
                        tokenizer: PreTrainedTokenizerBase, max_length: int, eval_fraction: float, seed: int,
                        directory: Path | None, max_bytes: int) -> tuple[PreparedData, bool]:
    """prepare_data's result, from `directory` when an identical preparation was stored there: (data, hit)."""
    if directory is None or max_bytes <= 0 or not tokenizer.is_fast:
        return prepare_data(rows, eval_rows, task=task, columns=columns, tokenizer=tokenizer, max_length=max_length,
                            eval_fraction=eval_fraction, seed=seed), False
    key = cache_key(rows, eval_rows, task=task, columns=columns, tokenizer=tokenizer, max_length=max_length,
                    eval_fraction=eval_fraction, seed=seed)
    path = directory / f"{key}.npz"
    data = _read(path)
    if data is not None:
        return data, True
    data = prepare_data(rows, eval_rows, task=task, columns=columns, tokenizer=tokenizer, max_length=max_length,
                        eval_fraction=eval_fraction, seed=seed)
    try:
        _write(path, data)
        evict(directory, max_bytes, keep=path)
    except OSError as e:  # a full or read-only disk costs the next run its tokenization, nothing more
        log.warning("tokenized data not cached: %s", e)
    return data, False


def cache_key(rows: Sequence[dict], eval_rows: Sequence[dict] | None, *, task: str, columns: Columns,
              tokenizer: PreTrainedTokenizerBase, max_length: int, eval_fraction: float, seed: int) -> str:
    h = hashlib.sha256()
    template = template_for(tokenizer, columns.chat_template) if task == "causal_lm" and is_chat(columns) else None
    settings = {"format": FORMAT, "task": task, "columns": columns.model_dump(), "template": template,
                "max_length": max_length, "eval_fraction": eval_fraction if eval_rows is None else None,
                "seed": seed, "tokenizer": tokenizer_fingerprint(tokenizer)}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for part in (rows, eval_rows if eval_rows is not None else ()):
        h.update(b"\x00part")
        for start in range(0, len(part), _HASH_CHUNK):  # one json.dumps per chunk: half the time of one per row
            h.update(json.dumps(list(part[start:start + _HASH_CHUNK]), sort_keys=True, default=str,
                                ensure_ascii=False).encode())
    return h.hexdigest()[:40]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    for state in ("truncation", "padding"):  # set by the last call's arguments, not part of the vocabulary
        backend.pop(state, None)
    h = hashlib.sha256(json.dumps(backend, sort_keys=True).encode())
    h.update(json.dumps([type(tokenizer).__name__, tokenizer.special_tokens_map, tokenizer.chat_template,
                         list(tokenizer.model_input_names), tokenizer.padding_side, tokenizer.truncation_side],
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def _write(path: Path, data: PreparedData) -> None:
    examples = data.train + data.eval
    per_token = bool(examples) and isinstance(examples[0].target, list)
    with_types = bool(examples) and examples[0].token_type_ids is not None
    if per_token and any(len(e.target) != len(e.input_ids) for e in examples):
        return  # an encoding this layout cannot hold: not cached
    arrays = {
        "ids": np.fromiter((t for e in examples for t in e.input_ids), dtype=np.int64),
        "lengths": np.array([len(e.input_ids) for e in examples], dtype=np.int64),
        "rows": np.array([e.row for e in examples], dtype=np.int64),
        "num_targets": np.array([e.num_targets for e in examples], dtype=np.int64),
        "targets": (np.fromiter((t for e in examples for t in e.target), dtype=np.int64) if per_token
                    else np.array([e.target for e in examples], dtype=np.int64)),
    }
    if with_types:
        arrays["token_type_ids"] = np.fromiter((t for e in examples for t in e.token_type_ids), dtype=np.int64)
    header = {"n_train": len(data.train), "labels": data.labels, "per_token": per_token}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # atomic: readers see the whole file or none
    finally:
        tmp.unlink(missing_ok=True)


def _read(path: Path) -> PreparedData | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        os.utime(path)  # recently used: evicted last
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 — a damaged file is a miss, and goes
        log.warning("tokenized cache file %s unreadable (%s); tokenizing again", path.name, e)
        path.unlink(missing_ok=True)
        return None
    header = json.loads(arrays["header"].tobytes())
    lengths = arrays["lengths"].tolist()
    ids = arrays["ids"].tolist()
    targets = arrays["targets"].tolist()
    types = arrays["token_type_ids"].tolist() if "token_type_ids" in arrays else None
    rows, num_targets = arrays["rows"].tolist(), arrays["num_targets"].tolist()
    examples, offset = [], 0
    for k, n in enumerate(lengths):
        end = offset + n
        examples.append(Example(input_ids=ids[offset:end], target=targets[offset:end] if header["per_token"]
                                else targets[k], row=rows[k], num_targets=num_targets[k],
                                token_type_ids=types[offset:end] if types is not None else None))
        offset = end
    n_train = header["n_train"]
    return PreparedData(train=examples[:n_train], eval=examples[n_train:], labels=header["labels"])


def evict(directory: Path, max_bytes: int, keep: Path | None = None) -> None:
    """Remove the least recently used entries until the directory holds at most max_bytes (`keep` stays)."""
    entries = []
    for path in directory.glob("*.npz"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # another worker evicted it meanwhile
            continue
        entries.append((stat.st_mtime_ns, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
