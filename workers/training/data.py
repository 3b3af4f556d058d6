"""From dataset rows to padded tensor batches.

classification: `text` (+ optional `text_pair`) → one label id; labels are the sorted unique
string values of the label column, so predictions map back to the original strings.
causal_lm: `prompt` + `response` with the loss on the response tokens only (labels are
IGNORE_INDEX on the prompt and on padding), or plain `text` with the loss on every token.
Batches pad to their longest example, never to max_length.
"""
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from app.runs.checks import column_problems, eval_rows, split_problems
from app.runs.label_names import name_map
from app.runs.schemas import Columns
from workers.training.chat import assistant_spans, is_chat, row_turns, template_for, token_labels

IGNORE_INDEX = -100  # the label torch's cross_entropy skips
_TOKENIZE_CHUNK = 1024  # rows per call into the fast tokenizer (it parallelises within a call)


@dataclass(frozen=True, slots=True)
class Example:
    input_ids: list[int]
    target: int | list[int]  # a class id, or one label per token (IGNORE_INDEX: no loss there)
    row: int  # index of the row in its dataset file
    num_targets: int  # predictions the loss averages over (tokens after the causal shift, or 1)
    token_type_ids: list[int] | None = None


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # what the model's forward takes: input_ids, attention_mask, …
    labels: torch.Tensor
    rows: list[int]
    num_tokens: int  # real (non-padding) tokens, counted on the CPU so throughput needs no sync
    num_targets: int

    def to(self, device: torch.device) -> "Batch":
        if device.type == "cpu":
            return self
        inputs = {k: v.to(device, non_blocking=True) for k, v in self.inputs.items()}
        return Batch(inputs, self.labels.to(device, non_blocking=True), self.rows, self.num_tokens, self.num_targets)


@dataclass
class PreparedData:
    train: list[Example]
    eval: list[Example]
    labels: list[str] | None  # classification: label strings in id order


def prepare_data(rows: Sequence[dict], eval_rows: Sequence[dict] | None, *, task: str, columns: Columns,
                 tokenizer: PreTrainedTokenizerBase, max_length: int, eval_fraction: float,
                 seed: int) -> PreparedData:
    """Validate the columns, split (unless an eval dataset is given), and tokenize both parts."""
    if task not in ("classification", "causal_lm"):
        raise ValueError(f"unknown task {task!r}")
    if not rows:
        raise ValueError("the training dataset has no rows")
    needed = _needed_columns(task, columns)
    check_columns(rows, needed, "training dataset")
    if eval_rows is not None:
        check_columns(eval_rows, needed, "eval dataset")
        train_part, eval_part = list(enumerate(rows)), list(enumerate(eval_rows))
    else:
        train_idx, eval_idx = split_indices(len(rows), eval_fraction, seed)
        train_part, eval_part = [(i, rows[i]) for i in train_idx], [(i, rows[i]) for i in eval_idx]

    if task == "causal_lm" and is_chat(columns):
        return PreparedData(train=encode_chat(train_part, columns, tokenizer, max_length),
                            eval=encode_chat(eval_part, columns, tokenizer, max_length), labels=None)
    if task == "causal_lm":
        return PreparedData(train=encode_causal_lm(train_part, columns, tokenizer, max_length),
                            eval=encode_causal_lm(eval_part, columns, tokenizer, max_length), labels=None)
    # Labels come from the whole training file: a rare class the split put only in eval still gets an id.
    labels = label_list(rows, columns.label)
    if eval_rows is not None:
        unseen = sorted({_label(r, columns.label, i) for i, r in eval_part} - set(labels))
        if unseen:
            raise ValueError(f"the eval dataset has labels the training dataset never shows: {_preview(unseen)}")
    label2id = {label: i for i, label in enumerate(labels)}
    # Ids stay the values' order; what the run shows and saves (metrics, predictions, id2label) are the names.
    shown = labels if columns.label_names is None else [name_map(columns.label_names, labels)[v] for v in labels]
    return PreparedData(train=encode_classification(train_part, columns, tokenizer, label2id, max_length),
                        eval=encode_classification(eval_part, columns, tokenizer, label2id, max_length), labels=shown)


def _needed_columns(task: str, columns: Columns) -> list[str]:
    if task == "classification":
        return [c for c in (columns.text, columns.text_pair, columns.label) if c]
    if columns.messages:
        return [columns.messages]
    if columns.prompt and columns.response:
        return [c for c in (columns.prompt, columns.response, columns.input) if c]
    return [columns.text]


def check_columns(rows: Sequence[dict], needed: list[str], what: str) -> None:
    """A clear error naming the missing column and the ones the data has (the first row decides);
    the same words as the server's check (app/runs/checks.py)."""
    available = list(rows[0].keys()) if rows else []
    missing = [c for c in needed if c not in available]
    if missing:
        raise ValueError(column_problems(Columns(text=missing[0]), available, what)[0].msg)


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/eval split of range(n): the same seed always holds out the same rows.
    The held-out count is the server's (app/runs/checks.py), which refuses splits that leave a side empty."""
    problems = split_problems(n, eval_fraction)
    if problems:
        raise ValueError(problems[0].msg)
    n_eval = eval_rows(n, eval_fraction)
    order = list(range(n))
    random.Random(seed).shuffle(order)  # Python's RNG: identical on every platform and torch version
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def label_list(rows: Sequence[dict], column: str) -> list[str]:
    """Sorted distinct label strings: the label ids of the run."""
    labels = sorted({_label(row, column, i) for i, row in enumerate(rows)})
    if len(labels) < 2:
        raise ValueError(f"the label column {column!r} has {len(labels)} distinct value(s) "
                         f"{_preview(labels)}; classification needs at least two")
    if len(rows) >= 20 and len(labels) > len(rows) // 2:
        raise ValueError(f"the label column {column!r} has {len(labels)} distinct values in {len(rows)} rows; "
                         "it looks like a text column, not class labels")
    return labels


def _label(row: dict, column: str, index: int) -> str:
    value = row.get(column)
    if value is None or value == "":
        raise ValueError(f"row {index} has no value in the label column {column!r}")
    return str(value)


def _text(row: dict, column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value)


def _preview(values: Sequence, limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    return f"[{shown}{', …' if len(values) > limit else ''}]"


def encode_classification(part: Sequence[tuple[int, dict]], columns: Columns, tokenizer: PreTrainedTokenizerBase,
                          label2id: dict[str, int], max_length: int) -> list[Example]:
    # Segment ids only matter for pairs, and only for models whose tokenizer produces them (BERT).
    use_types = bool(columns.text_pair) and "token_type_ids" in tokenizer.model_input_names
    examples = []
    for start in range(0, len(part), _TOKENIZE_CHUNK):
        chunk = part[start:start + _TOKENIZE_CHUNK]
        texts = [_text(r, columns.text) for _, r in chunk]
        pairs = [_text(r, columns.text_pair) for _, r in chunk] if columns.text_pair else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, return_token_type_ids=use_types)
        for j, (index, row) in enumerate(chunk):
            examples.append(Example(input_ids=enc["input_ids"][j], target=label2id[_label(row, columns.label, index)],
                                    row=index, num_targets=1,
                                    token_type_ids=enc["token_type_ids"][j] if use_types else None))
    return examples


def encode_causal_lm(part: Sequence[tuple[int, dict]], columns: Columns, tokenizer: PreTrainedTokenizerBase,
                     max_length: int) -> list[Example]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("causal_lm needs a tokenizer with an end-of-sequence token")
    with_prompt = bool(columns.prompt and columns.response)
    examples = []
    for start in range(0, len(part), _TOKENIZE_CHUNK):
        chunk = part[start:start + _TOKENIZE_CHUNK]
        if with_prompt:
            examples += _encode_prompt_response(chunk, columns, tokenizer, max_length, eos)
        else:
            enc = tokenizer([_text(r, columns.text) for _, r in chunk], truncation=True, max_length=max_length - 1)
            for ids, (index, _) in zip(enc["input_ids"], chunk):
                if not ids or ids[-1] != eos:
                    ids = ids + [eos]  # so the model learns where a text ends
                examples.append(Example(input_ids=ids, target=list(ids), row=index, num_targets=len(ids) - 1))
    return examples


def _encode_prompt_response(chunk, columns: Columns, tokenizer, max_length: int, eos: int) -> list[Example]:
    """Tokenize prompt and response as one string (so the tokenizer sees the real boundary) and
    find the first response token by character offset; only response tokens (and EOS) get labels."""
    texts, starts = [], []
    for _, row in chunk:
        prompt, response = _text(row, columns.prompt), _text(row, columns.response)
        sep = "" if (not prompt or prompt[-1].isspace() or not response or response[0].isspace()) else " "
        texts.append(prompt + sep + response)
        starts.append(len(prompt) + len(sep))
    enc = tokenizer(texts, return_offsets_mapping=True)
    room = max_length - 1  # the EOS always fits
    examples = []
    for ids, offsets, start, (index, _) in zip(enc["input_ids"], enc["offset_mapping"], starts, chunk):
        # The first token that reaches past the response start: byte-level BPE (GPT-2) and SentencePiece
        # (Llama) give " word" an offset that includes its leading space, i.e. starts before `start`.
        # Special tokens (BOS) have empty offsets at 0 and stay on the prompt side.
        b = next((k for k, (s, e) in enumerate(offsets) if e > s and e > start), len(ids))
        if ids and ids[-1] == eos:
            ids = ids[:-1]  # tokenizers that append EOS themselves: it is added once below
        n_resp = max(0, len(ids) - b)
        # When it does not all fit, the response keeps what the prompt leaves, and at least half.
        resp_keep = min(n_resp, max(room - b, room // 2))
        prompt_keep = min(b, room - resp_keep)
        input_ids = ids[:prompt_keep] + ids[b:b + resp_keep] + [eos]
        target = [IGNORE_INDEX] * prompt_keep + input_ids[prompt_keep:]
        examples.append(Example(input_ids=input_ids, target=target, row=index,
                                num_targets=sum(1 for t in target[1:] if t != IGNORE_INDEX)))
    return examples


def encode_chat(part: Sequence[tuple[int, dict]], columns: Columns, tokenizer: PreTrainedTokenizerBase,
                max_length: int) -> list[Example]:
    """Conversations (messages, ShareGPT or Alpaca columns) in the run's chat template, with the
    loss on the assistant turns and their end-of-turn markers only (workers/training/chat.py)."""
    template = template_for(tokenizer, columns.chat_template)
    examples = []
    for start in range(0, len(part), _TOKENIZE_CHUNK):
        chunk = part[start:start + _TOKENIZE_CHUNK]
        rendered = [_rendered_chat(tokenizer, row, columns, index, template) for index, row in chunk]
        enc = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
        for (index, _), (_, spans), ids, offsets in zip(chunk, rendered, enc["input_ids"], enc["offset_mapping"]):
            ids, target = token_labels(ids, offsets, spans, max_length)
            examples.append(Example(input_ids=ids, target=target, row=index,
                                    num_targets=sum(1 for t in target[1:] if t != IGNORE_INDEX)))
    return examples


def _rendered_chat(tokenizer, row: dict, columns: Columns, index: int, template: str):
    turns = row_turns(row, columns, index)
    try:
        return assistant_spans(tokenizer, turns, template)
    except Exception as e:  # noqa: BLE001 — a template's own refusal (e.g. roles that do not alternate)
        raise ValueError(f"row {index}: the chat template could not render this conversation: {e}") from None


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Right-pad to the longest example in the batch; padding gets attention 0 and no label."""
    longest = max(len(e.input_ids) for e in examples)
    fill = [longest - len(e.input_ids) for e in examples]
    # One tensor built from padded lists: far cheaper than a slice assignment per row.
    inputs = {
        "input_ids": torch.tensor([e.input_ids + [pad_id] * f for e, f in zip(examples, fill)]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * f for e, f in zip(examples, fill)]),
    }
    if examples[0].token_type_ids is not None:
        inputs["token_type_ids"] = torch.tensor([e.token_type_ids + [0] * f for e, f in zip(examples, fill)])
    if isinstance(examples[0].target, list):
        labels = torch.tensor([e.target + [IGNORE_INDEX] * f for e, f in zip(examples, fill)])
    else:
        labels = torch.tensor([e.target for e in examples])
    return Batch(inputs=inputs, labels=labels, rows=[e.row for e in examples],
                 num_tokens=sum(len(e.input_ids) for e in examples), num_targets=sum(e.num_targets for e in examples))
