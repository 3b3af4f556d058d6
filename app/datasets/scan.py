"""Checking an uploaded file once, streaming: its format, header, columns, types, row count, preview.

Runs inside the scan sandbox (app.datasets.sandbox): a child process with a memory and CPU cap.
Everything it returns is bounded: column names and count, preview rows, cells and bytes per row.
"""
import csv
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.datasets.reader import (EXTENSIONS, FORMATS, DatasetError, ReadLimits, _chunks, _text_lines,
                                 check_gzip_expansion, iter_rows)

PARQUET_MAGIC = b"PAR1"
# Compressed formats are bounded in what they may expand to: a few KB must not become many GB.
MAX_EXPANSION = 20
SNIFF_LINES = 50
SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class ScanLimits(ReadLimits):
    preview_rows: int = 20
    preview_cell_chars: int = 1000  # a longer cell is cut, with a marker saying how much was left out
    preview_row_chars: int = 32 * 1024  # the cells of one preview row together

    @classmethod
    def from_settings(cls, settings) -> "ScanLimits":
        return cls(**asdict(ReadLimits.from_settings(settings)), preview_cell_chars=settings.preview_cell_chars,
                   preview_row_chars=settings.preview_row_chars)


@dataclass
class ScanResult:
    format: str
    has_header: bool | None
    num_rows: int
    columns: list[dict]
    preview: list[dict] = field(default_factory=list)


def detect_format(path: Path, filename: str | None, declared: str | None) -> str:
    if declared:
        if declared not in FORMATS:
            raise DatasetError(f"Unknown format {declared!r}; use one of {', '.join(FORMATS)}.")
        return declared
    name = Path(filename or "")
    if name.suffix.lower() == ".gz":  # data.jsonl.gz: the format is the inner suffix
        name = name.with_suffix("")
    if name.suffix.lower() in EXTENSIONS:
        return EXTENSIONS[name.suffix.lower()]
    head = next(_chunks(path, 65536), b"")
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    first_line = text.split(b"\n", 1)[0]
    return "tsv" if first_line.count(b"\t") > first_line.count(b",") else "csv"


# Column names NLP datasets use; such a name in the first row, never repeated below it, is a header.
COMMON_NAMES = frozenset("""
text sentence sentence1 sentence2 sentences label labels target targets class category prompt response
question answer answers context input inputs output outputs instruction id idx title description content
body review document summary source premise hypothesis query passage score rating tokens tags ner_tags
completion chosen rejected system user assistant messages name value language lang split topic
""".split())
_NAME_LIKE = re.compile(r"[A-Za-z_][\w.\- ]{0,63}")


def _sample_rows(path: Path, fmt: str, limits: ReadLimits) -> list[list[str]]:
    lines, size = [], 0
    for _, line in _text_lines(path, limits):
        lines.append(line)
        size += len(line)
        if len(lines) >= SNIFF_LINES or size >= SNIFF_BYTES:
            break
    rows = []
    try:
        for row in csv.reader(lines, delimiter="," if fmt == "csv" else "\t"):
            if row and not (len(row) == 1 and not row[0].strip()):
                rows.append(row)
    except csv.Error:
        pass  # a quoted field longer than the sample: guess from the rows before it
    return rows


def sniff_header(path: Path, fmt: str, limits: ReadLimits) -> bool:
    """Guess whether the first row names the columns; a user can override it with has_header.

    With the delimiter known, per column: a first-row value that also appears below it is data; a
    first row that is no number above a column of numbers is a header, and so is a common column
    name (text, label, …); else a short name above values all several times longer, with spaces.
    """
    rows = _sample_rows(path, fmt, limits)
    if len(rows) == 1:  # names alone (then "no rows"), or one row of data: names only if none is a number
        return not any(_dtype_of(f) in ("int", "float") for f in rows[0])
    if len(rows) < 2:
        return False
    first, rest = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    if not rest or not any(f.strip() for f in first):
        return False
    if any(_dtype_of(f) in ("int", "float") or len(f) > 64 for f in first):
        return False
    columns = [[r[i] for r in rest if r[i] != ""] for i in range(len(first))]
    if any(first[i] != "" and first[i] in values for i, values in enumerate(columns)):
        return False  # a header name is not one of its own values
    for name, values in zip(first, columns):
        if not name.strip() or not values:
            continue
        if all(_dtype_of(v) in ("int", "float") for v in values):
            return True
        if name.strip().lower() in COMMON_NAMES:
            return True
    if any(values and _looks_like(name, values) for name, values in zip(first, columns)):
        return False  # some first-row value is shaped like the values below it: data
    for name, values in zip(first, columns):
        if (name.strip() and values and _NAME_LIKE.fullmatch(name.strip()) and " " not in name.strip()
                and all(" " in v and len(v) >= 3 * len(name) for v in values)):
            return True
    return False


def _kinds(text: str) -> set[str]:
    return {"alpha" if c.isalpha() else "digit" if c.isdigit() else "space" if c.isspace() else "other" for c in text}


def _looks_like(first: str, values: list[str]) -> bool:
    """Same length range and the same kinds of characters as the column's values (e.g. pos above neg)."""
    lengths = [len(v) for v in values]
    if not min(lengths) <= len(first) <= max(lengths):
        return False
    return _kinds(first) <= set().union(*(_kinds(v) for v in values[:SNIFF_LINES]))


def _dtype_of(value: object) -> str:
    if value is None or value == "":
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "null"
    if isinstance(value, (dict, list)):
        return "json"
    if isinstance(value, str):
        if len(value) > 100:  # no number a model reads is that long; int() of it would be slow
            return "string"
        try:
            int(value)
            return "int"
        except ValueError:
            pass
        try:
            return "float" if math.isfinite(float(value)) else "string"
        except ValueError:
            return "string"
    return "string"  # dates, bytes and other parquet types are shown as text


def _merge(a: str, b: str) -> str:
    if a == b or b == "null":
        return a
    if a == "null":
        return b
    if {a, b} == {"int", "float"}:
        return "float"
    return "string"


def _check_parquet_expansion(path: Path, size_bytes: int) -> None:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as e:
        raise DatasetError(f"The file is not a readable Parquet file: {e}.") from None
    expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if expanded > max(size_bytes * MAX_EXPANSION, 64 * 1024 * 1024):
        raise DatasetError(f"This Parquet file is too large once decompressed: it would expand to {expanded:,} "
                           f"bytes, more than {MAX_EXPANSION}× its size; refused.")


def _check_column(name: object, count: int, limits: ReadLimits) -> None:
    if count >= limits.max_columns:
        raise DatasetError(f"The rows have more than {limits.max_columns:,} different columns; "
                           "is this really a table?")
    if isinstance(name, str) and len(name) > limits.max_column_name_chars:
        raise DatasetError(f"A column name is too large: {len(name):,} characters "
                           f"(at most {limits.max_column_name_chars:,}).")


def scan(path: Path, filename: str | None, declared_format: str | None, has_header: bool | None,
         limits: ScanLimits | None = None) -> ScanResult:
    limits = limits or ScanLimits()
    size = path.stat().st_size
    if size == 0:
        raise DatasetError("The file is empty.")
    check_gzip_expansion(path)
    fmt = detect_format(path, filename, declared_format)
    if fmt == "parquet":
        _check_parquet_expansion(path, size)
    elif fmt in ("csv", "tsv") and has_header is None:
        has_header = sniff_header(path, fmt, limits)
    if fmt not in ("csv", "tsv"):
        has_header = None
    dtypes: dict[str, str] = {}
    preview: list[dict] = []
    num_rows = 0
    for row in iter_rows(path, fmt, has_header, limits):
        num_rows += 1
        for key, value in row.items():
            if key not in dtypes:
                _check_column(key, len(dtypes), limits)
                dtypes[key] = "null"
            dtypes[key] = _merge(dtypes[key], _dtype_of(value))
        if len(preview) < limits.preview_rows:
            preview.append(preview_row(row, limits))
    if num_rows == 0:
        raise DatasetError("The file has no rows" + (" (only a header row)." if has_header else "."))
    columns = [{"name": str(name), "dtype": "string" if dtype == "null" else dtype} for name, dtype in dtypes.items()]
    return ScanResult(format=fmt, has_header=has_header, num_rows=num_rows, columns=columns, preview=preview)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf are not JSON (PostgreSQL's json type refuses them)
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)


def cut(text: str, chars: int) -> str:
    """The text, or its start with a marker saying how much was left out."""
    if len(text) <= chars:
        return text
    return f"{text[:chars]}… [{len(text) - chars:,} more characters]"


def _cell(value: object, chars: int) -> object:
    value = _jsonable(value)
    if isinstance(value, str):
        return cut(value, chars)
    if isinstance(value, (dict, list)):
        try:
            text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError:  # NaN inside: shown as text (PostgreSQL's json type refuses NaN)
            return cut(json.dumps(value, ensure_ascii=False, default=str), chars)
        return value if len(text) <= chars else cut(text, chars)
    return value


def preview_row(row: dict, limits: ScanLimits) -> dict:
    """One row as shown on the page: each cell at most preview_cell_chars, the row about preview_row_chars."""
    share = max(32, min(limits.preview_cell_chars, limits.preview_row_chars // max(1, len(row))))
    return {str(k): _cell(v, share) for k, v in row.items()}


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
SAFE_DEPTH = 8


def clean_text(text: str) -> str:
    """Text that can always be encoded: lone surrogates (not characters) become U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def _clean(value: object, chars: int, depth: int = 0) -> object:
    if isinstance(value, str):
        return cut(clean_text(value), chars)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (dict, list)):
        if depth >= SAFE_DEPTH:
            return "… [nested too deeply to show]"
        if isinstance(value, dict):
            return {cut(clean_text(str(k)), 256): _clean(v, chars, depth + 1) for k, v in list(value.items())[:1000]}
        return [_clean(v, chars, depth + 1) for v in value[:1000]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return cut(clean_text(str(value)), chars)


def safe_preview(rows: object, limits: ScanLimits | None = None) -> list[dict]:
    """A stored preview made safe to serialise, whatever an older version stored: bounded, valid text, not deep."""
    limits = limits or ScanLimits()
    if not isinstance(rows, list):
        return []
    out = []
    for row in rows[:limits.preview_rows]:
        if isinstance(row, dict):
            share = max(32, min(limits.preview_cell_chars, limits.preview_row_chars // max(1, len(row))))
            out.append(_clean(row, share + 40))  # + room for the marker of a cell cut at upload
    return out
