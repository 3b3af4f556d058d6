"""Chat rows as one shape: a list of {role, content} turns.

Three shapes of instruction data reach the same path:
- messages: `[{"role": "system"|"user"|"assistant", "content": str}, …]` (OpenAI / Hugging Face chat);
- ShareGPT: `[{"from": "system"|"human"|"gpt", "value": str}, …]` in the column `columns.messages` names;
- Alpaca: `columns.prompt` = instruction, optional `columns.input`, `columns.response` = output, with
  `columns.chat_template` set (a prompt/response pair otherwise trains as plain text, as before).

Pure Python (no torch): the server checks the stored preview rows with it at POST /api/runs and
the worker converts every row with it, so both refuse the same rows with the same words.
"""
import json
import re
from collections.abc import Sequence

ROLES = ("system", "user", "assistant")
# ShareGPT's speaker names (and the variants seen in the wild) → chat roles.
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
# The marker app/datasets/scan.py puts on a preview cell cut for length: such a cell cannot be judged.
_CUT_MARKER = re.compile(r"… \[[\d,]+ more characters\]$")


class ConversationError(ValueError):
    """A row whose chat column is not a usable conversation; the message says why."""


def parse_turns(value: object, column: str) -> list[dict]:
    """The turns of one chat cell as [{role, content}], from messages or ShareGPT form; a JSON
    string (a CSV cell) is read first. Raises ConversationError naming the column and the fault."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConversationError(f"column {column!r} holds text, not a list of {{role, content}} turns") from None
    if not isinstance(value, list) or not value:
        kind = "an empty list" if value == [] else type(value).__name__
        raise ConversationError(f"column {column!r} must hold a list of {{role, content}} turns, not {kind}")
    turns = []
    for n, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise ConversationError(f"column {column!r}: turn {n} is a {type(turn).__name__}, not a "
                                    "{role, content} object")
        if "role" in turn:
            role, content = turn.get("role"), turn.get("content")
        elif "from" in turn:  # ShareGPT
            role, content = SHAREGPT_ROLES.get(str(turn.get("from")).lower(), turn.get("from")), turn.get("value")
        else:
            raise ConversationError(f"column {column!r}: turn {n} has no 'role' (or ShareGPT 'from'); its keys: "
                                    f"{sorted(map(str, turn))[:10]}")
        if role not in ROLES:
            raise ConversationError(f"column {column!r}: turn {n} has the role {role!r}; roles are "
                                    f"{', '.join(ROLES)} (ShareGPT: system, human, gpt)")
        if not isinstance(content, str):
            raise ConversationError(f"column {column!r}: turn {n} ({role}) has no text content")
        turns.append({"role": role, "content": content})
    if not any(t["role"] == "assistant" for t in turns):
        raise ConversationError(f"column {column!r}: a conversation has no assistant turn, so nothing to learn")
    return turns


def alpaca_turns(row: dict, prompt: str, response: str, input_column: str | None) -> list[dict]:
    """An Alpaca row as a user turn (the instruction, then the input after a blank line) and an assistant turn."""
    instruction = _text(row.get(prompt))
    extra = _text(row.get(input_column)) if input_column else ""
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row.get(response))}]


def _text(value: object) -> str:
    return "" if value is None else str(value)


def preview_problem(rows: Sequence[dict], column: str) -> str | None:
    """Why the chat column of these (preview) rows is not a list of role/content turns, or None.
    Cells cut for length in the preview are skipped: the worker checks every full row."""
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or column not in row:
            continue
        value = row[column]
        if isinstance(value, str) and _CUT_MARKER.search(value):
            continue
        try:
            parse_turns(value, column)
        except ConversationError as e:
            return f"row {n}: {e}"
    return None
