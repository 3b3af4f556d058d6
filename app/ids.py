"""The id type of every table: what a route or a request body accepts as an id.

The tables' ids are INTEGER columns: 32-bit on PostgreSQL (64-bit on SQLite). A larger number is
refused by validation (422) before it reaches the database, where it would fail as an out-of-range
value (PostgreSQL) or an overflow in the driver (SQLite) — a 500 either way.
"""
from typing import Annotated

from annotated_types import Ge, Le

MAX_ID = 2**31 - 1

Id = Annotated[int, Ge(1), Le(MAX_ID)]


def parse_id(raw: str) -> int | None:
    """An id written as text (a form field, one item of a list in a query), or None if it is not one."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None
