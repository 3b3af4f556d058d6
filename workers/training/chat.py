"""Chat rows → token ids with the loss on the assistant turns only.

A conversation is rendered with the base model's chat template (`tokenizer.apply_chat_template`),
or ChatML when the tokenizer has none (or `columns.chat_template` is "chatml"). The assistant spans
are found in characters by rendering the conversation prefix by prefix: the text an assistant turn
adds after the generation prompt of the turns before it is that turn (its content and its
end-of-turn marker). Templates that rewrite earlier turns (so a prefix is not a prefix) fall back
to finding each assistant content in the full text. The full text is tokenized once with offsets;
a token carries loss when its characters overlap an assistant span.
"""
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from app.runs.conversations import alpaca_turns, parse_turns
from app.runs.schemas import Columns

IGNORE_INDEX = -100

# ChatML (OpenAI's format, Qwen's template): the fallback for tokenizers without a chat template.
# Its markers stay plain text where the vocabulary lacks them: no new embeddings to train.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_END = "<|im_end|>"


def is_chat(columns: Columns | dict) -> bool:
    """Whether a run trains on conversations (its predictions then answer in the same template)."""
    c = columns if isinstance(columns, dict) else columns.model_dump(exclude_none=True)
    return bool(c.get("messages") or c.get("chat_template"))


def template_for(tokenizer: PreTrainedTokenizerBase, choice: str | None) -> str:
    """The Jinja chat template a run uses: the tokenizer's own for "auto" (the default), else ChatML."""
    own = getattr(tokenizer, "chat_template", None)
    if (choice or "auto") == "auto" and isinstance(own, str) and own:
        return own
    return CHATML_TEMPLATE


def end_of_turn(tokenizer: PreTrainedTokenizerBase, template: str) -> str | None:
    """The text that ends an assistant turn under this template (for cutting generated answers)."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "\x00"}]
    try:
        text = render(tokenizer, probe, template)
    except Exception:  # noqa: BLE001 — a template that refuses the probe: stop at EOS only
        return None
    tail = text.split("\x00", 1)[-1].strip()
    return tail or None


def render(tokenizer: PreTrainedTokenizerBase, turns: Sequence[dict], template: str,
           generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(list(turns), chat_template=template, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def row_turns(row: dict, columns: Columns, index: int) -> list[dict]:
    """The conversation of one dataset row (messages, ShareGPT or Alpaca columns)."""
    try:
        if columns.messages:
            return parse_turns(row.get(columns.messages), columns.messages)
        return alpaca_turns(row, columns.prompt, columns.response, columns.input)
    except ValueError as e:
        raise ValueError(f"row {index}: {e}") from None


def assistant_spans(tokenizer: PreTrainedTokenizerBase, turns: Sequence[dict],
                    template: str) -> tuple[str, list[tuple[int, int]]]:
    """(the rendered conversation, [start, end) character spans of each assistant turn with its
    end-of-turn marker; trailing whitespace after the marker is not part of it)."""
    full = render(tokenizer, turns, template)
    spans = []
    try:
        for i, turn in enumerate(turns):
            if turn["role"] != "assistant":
                continue
            before = render(tokenizer, turns[:i], template, generation_prompt=True) if i else ""
            through = render(tokenizer, turns[:i + 1], template)
            if not (through.startswith(before) and full.startswith(through)):
                raise _NotPrefix
            end = len(through.rstrip())
            if end > len(before):
                spans.append((len(before), end))
        return full, spans
    except _NotPrefix:
        return full, _spans_by_search(tokenizer, turns, full)


class _NotPrefix(Exception):
    pass


def _spans_by_search(tokenizer: PreTrainedTokenizerBase, turns: Sequence[dict], full: str) -> list[tuple[int, int]]:
    """Each assistant content found in order in the full text, extended over a special token
    (the end-of-turn marker) that follows it directly."""
    markers = sorted({t for t in tokenizer.all_special_tokens if t} | {CHATML_END}, key=len, reverse=True)
    spans, cursor = [], 0
    for turn in turns:
        content = turn["content"]
        at = full.find(content, cursor) if content else -1
        if at < 0:
            continue
        end = at + len(content)
        marker = next((m for m in markers if full.startswith(m, end)), "")
        end += len(marker)
        cursor = end
        if turn["role"] == "assistant":
            spans.append((at, end))
    return spans


def encode_conversation(tokenizer: PreTrainedTokenizerBase, turns: Sequence[dict], template: str,
                        max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation: see token_labels."""
    text, spans = assistant_spans(tokenizer, turns, template)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return token_labels(enc["input_ids"], enc["offset_mapping"], spans, max_length)


def token_labels(ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]],
                 max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): labels are the ids on tokens whose characters overlap an assistant span
    and IGNORE_INDEX elsewhere. Over max_length the conversation keeps its start, unless that would
    drop every assistant token: then it keeps the max_length tokens that end with the first assistant turn."""
    ids = list(ids)
    learn = _overlaps(offsets, spans)
    labels = [t if on else IGNORE_INDEX for t, on in zip(ids, learn)]
    if len(ids) > max_length:
        start = 0
        if not any(learn[:max_length]) and any(learn):
            first = learn.index(True)
            last = first + next((k for k, on in enumerate(learn[first:]) if not on), len(learn) - first)
            start = max(0, last - max_length)
        ids, labels = ids[start:start + max_length], labels[start:start + max_length]
    return ids, labels


def _overlaps(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """For each (non-empty) token offset, whether it overlaps a span: one sweep, as both run left to right."""
    out, k = [], 0
    for s, e in offsets:
        while k < len(spans) and spans[k][1] <= s:
            k += 1  # spans that end before this token can hold no later token either
        out.append(e > s and k < len(spans) and spans[k][0] < e)
    return out


def chat_reply(model, tokenizer: PreTrainedTokenizerBase, metadata: dict, conversation: str | Sequence[dict], *,
               device, max_new_tokens: int, **sampling) -> str:
    """The next assistant turn of a conversation (a plain text is one user turn) from a chat run's
    model, in the template it trained with; the answer ends at the template's end-of-turn marker."""
    import torch  # here, not at the top: the data path above needs no torch

    template = template_for(tokenizer, (metadata.get("columns") or {}).get("chat_template"))
    marker = end_of_turn(tokenizer, template)
    stop = [tokenizer.eos_token_id]
    if marker:
        marker_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(marker_ids) == 1:
            stop.append(marker_ids[0])  # a marker that is one token (ChatML's in Qwen, Llama 3's) ends generation
    turns = [{"role": "user", "content": conversation}] if isinstance(conversation, str) else list(conversation)
    text = render(tokenizer, turns, template, generation_prompt=True)
    # The end of a long conversation matters most: keep its last max_length tokens.
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][-metadata["max_length"]:]
    input_ids = torch.tensor([ids], device=device)
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=[t for t in stop if t is not None],
                         **sampling)
    reply = tokenizer.decode(out[0, len(ids):], skip_special_tokens=False)
    if marker and marker in reply:
        reply = reply[:reply.index(marker)]
    for special in tokenizer.all_special_tokens:  # EOS and padding where a model stops without the marker
        reply = reply.replace(special, "")
    return reply.strip()
