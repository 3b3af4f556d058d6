"""Reading uploaded dataset files row by row, never the whole file in memory.

Shared by the server (scanning an upload in its sandbox, paging rows) and the workers (training
data), so it imports neither FastAPI nor torch. Every read is bounded (ReadLimits): a line, a
JSON item, a nesting depth, a column name, a number — so a hostile file fails with a
DatasetError that says what was wrong instead of eating memory or time.
"""
import codecs
import csv
import gzip
import json
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ijson

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
              ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}


class DatasetError(ValueError):
    """A problem with a dataset file, worded for the person who uploaded it."""


@dataclass(frozen=True)
class ReadLimits:
    """What one row of a dataset may be. The defaults are the settings' defaults (app.config)."""

    max_depth: int = 32  # nesting of JSON objects/arrays inside one row
    max_line_bytes: int = 16 * 1024 * 1024  # one JSONL/CSV line, one CSV field, one JSON array item
    max_columns: int = 1000
    max_column_name_chars: int = 256

    @classmethod
    def from_settings(cls, settings) -> "ReadLimits":
        return cls(max_depth=settings.max_nesting_depth, max_line_bytes=settings.max_line_bytes,
                   max_columns=settings.max_columns, max_column_name_chars=settings.max_column_name_chars)


def default_limits() -> "ReadLimits":
    from app.config import get_settings

    return ReadLimits.from_settings(get_settings())


GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# A gzip file may expand to at most this many times its size (and at least to 256 MB): real text
# compresses 3–20×; a "zip bomb" expands thousands of times.
MAX_GZIP_RATIO = 50
MIN_GZIP_ALLOWANCE = 256 * 1024 * 1024
# Python refuses to turn longer digit strings into ints (CVE-2020-10735); say so in our words.
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300
CHUNK = 1 << 20


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def gzip_allowance(path: Path) -> int:
    return max(MIN_GZIP_ALLOWANCE, MAX_GZIP_RATIO * path.stat().st_size)


def _chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    """The file's bytes, decompressed if it is gzip — refusing to expand past the allowance."""
    if not is_gzip(path):
        with open(path, "rb") as f:
            while chunk := f.read(size):
                yield chunk
        return
    allowance = gzip_allowance(path)
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(size):
                total += len(chunk)
                if total > allowance:
                    raise DatasetError(f"This gzip file is too large once decompressed: it expands to more than "
                                       f"{allowance:,} bytes ({MAX_GZIP_RATIO}× its size); refused.")
                yield chunk
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"The gzip file is damaged: {e}.") from None


def check_gzip_expansion(path: Path) -> None:
    """Decompress once without parsing (fast) so a gzip bomb is refused in a second, not after minutes of parsing."""
    if is_gzip(path):
        for _ in _chunks(path, 4 * CHUNK):
            pass


def _is_excel(head: bytes) -> bool:
    """.xlsx is a zip holding xl/…; .xls is an OLE2 compound file."""
    return (head.startswith(b"PK\x03\x04") and b"xl/" in head) or head.startswith(b"\xd0\xcf\x11\xe0")


def _binary_file_message(head: bytes) -> str:
    if _is_excel(head):
        return "Excel files are not supported; export to CSV (File → Save As → CSV UTF-8) and upload that."
    return "This looks like a binary file (it contains NUL bytes), not text."


def _text_chunks(path: Path) -> Iterator[bytes]:
    """Raw chunks of a text file: no NUL bytes, the BOM dropped, CR-only line ends refused."""
    first = True
    for chunk in _chunks(path):
        if first and chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DatasetError("The file is UTF-16 text, which is invalid text here: save it as UTF-8 and upload it again.")
        if b"\x00" in chunk:
            raise DatasetError(_binary_file_message(chunk))
        if first:
            first = False
            chunk = chunk.removeprefix(UTF8_BOM)
            if b"\r" in chunk and b"\n" not in chunk:
                raise DatasetError("The lines of this file end in a lone carriage return (CR, the old Mac OS line end), "
                                   "which is invalid text for a dataset here. Save it with LF or CRLF line ends.")
        yield chunk


def _too_long(line_no: int, limits: ReadLimits) -> DatasetError:
    return DatasetError(f"Line {line_no} is too large: longer than {limits.max_line_bytes:,} bytes "
                        f"(the longest line allowed).")


def _decode(raw: bytes, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"The file is not valid UTF-8 text (line {line_no}, byte {e.start + 1}). "
                           "Save it as UTF-8 and upload it again.") from None


def _raw_lines(path: Path, limits: ReadLimits) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) — a line never grows past max_line_bytes in memory."""
    line_no = 0
    pending = b""
    for chunk in _text_chunks(path):
        parts = chunk.split(b"\n")
        parts[0] = pending + parts[0]
        pending = parts.pop()
        for raw in parts:
            line_no += 1
            if len(raw) > limits.max_line_bytes:
                raise _too_long(line_no, limits)
            yield line_no, raw
        if len(pending) > limits.max_line_bytes:
            raise _too_long(line_no + 1, limits)
    if pending:
        yield line_no + 1, pending


def _text_lines(path: Path, limits: ReadLimits) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file; wrong encodings say where they are."""
    for line_no, raw in _raw_lines(path, limits):
        yield line_no, _decode(raw, line_no)


class _LineStream:
    """csv.reader's input: checked lines, and the number of the last one read (for messages)."""

    def __init__(self, path: Path, limits: ReadLimits):
        self._lines = _text_lines(path, limits)
        self.line_no = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.line_no, line = next(self._lines)
        return line + "\n"


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_int(text: str) -> int:
    if len(text) - text.startswith("-") > MAX_INT_DIGITS:
        raise DatasetError(f"a number is too large: it has {len(text):,} digits (at most {MAX_INT_DIGITS:,} are read)")
    return int(text)


def _depth_and_text(value: object, max_depth: int, depth: int = 1) -> None:
    """Refuse nesting deeper than max_depth and strings that are not valid text (lone surrogates)."""
    if depth > max_depth:
        raise DatasetError(f"it is nested too deeply (more than {max_depth} levels of objects/arrays)")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str) and _SURROGATE.search(key):
            raise DatasetError("it holds invalid text: a lone UTF-16 surrogate escape (such as \\ud800) in a key")
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise DatasetError("it holds invalid text: a lone UTF-16 surrogate escape (such as \\ud800) "
                                   f"in {str(key)[:60]!r}; it is no character, so the row cannot be stored")
        elif isinstance(item, (dict, list)):
            _depth_and_text(item, max_depth, depth + 1)


def _iter_jsonl(path: Path, limits: ReadLimits, skip: int = 0) -> Iterator[dict]:
    for line_no, raw in _raw_lines(path, limits):
        if not raw.strip():
            continue
        if skip:  # paging: count rows without parsing them
            skip -= 1
            continue
        line = _decode(raw, line_no)
        try:
            row = json.loads(line, parse_int=_check_int)
        except json.JSONDecodeError as e:
            raise DatasetError(f"Line {line_no} is not valid JSON: {e.msg}.") from None
        except RecursionError:
            raise DatasetError(f"Line {line_no} is nested too deeply (more than {limits.max_depth} levels of "
                               "objects/arrays).") from None
        except DatasetError as e:
            raise DatasetError(f"Line {line_no}: {e}.") from None
        if not isinstance(row, dict):
            raise DatasetError(f"Line {line_no} is not a JSON object; JSONL needs one object per line.")
        # Only escapes can make a lone surrogate; only nested values can be too deep.
        if "\\" in line or any(isinstance(v, (dict, list)) for v in row.values()):
            try:
                _depth_and_text(row, limits.max_depth)
            except DatasetError as e:
                raise DatasetError(f"Line {line_no}: {e}.") from None
        yield row


class _JsonBytes:
    """ijson's input: checked UTF-8 bytes, at most `size` per read, so its buffered events stay few."""

    def __init__(self, path: Path):
        self._chunks = _text_chunks(path)
        self._buf = b""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self.line_no = 1

    def read(self, size: int = -1) -> bytes:
        if size == 0:
            return b""
        if not self._buf:
            self._buf = next(self._chunks, b"")
            try:
                self._decoder.decode(self._buf, final=not self._buf)
            except UnicodeDecodeError:
                raise DatasetError(f"The file is not valid UTF-8 text (near line {self.line_no}). "
                                   "Save it as UTF-8 and upload it again.") from None
        size = 65536 if size < 0 else min(size, 65536)
        out, self._buf = self._buf[:size], self._buf[size:]
        self.line_no += out.count(b"\n")
        return out


class _ItemError(DatasetError):
    """A problem inside one item of a JSON array (the caller says which item)."""


_OPEN = {"start_map", "start_array"}
_CLOSE = {"end_map", "end_array"}


def _json_items(events, limits: ReadLimits) -> Iterator[object]:
    """The items of the top-level array, built from ijson's flat events with the depth and size bounded.

    ijson.items would build them in C, faster — but it keeps a prefix string per level, so memory grows
    with the square of the depth before any check of ours could run.
    """
    stack: list = []
    keys: list = []
    size = 0
    for event, value in events:
        if event == "map_key":
            keys[-1] = value
            size += len(value)
            continue
        if event in _OPEN:
            if not stack and event == "start_map":
                raise DatasetError("A JSON dataset must be an array of objects: [{...}, {...}].")
            if len(stack) > limits.max_depth:
                raise _ItemError(f"it is nested too deeply (more than {limits.max_depth} levels of objects/arrays)")
            new = {} if event == "start_map" else []
            if len(stack) > 1:
                top = stack[-1]
                if type(top) is dict:
                    top[keys[-1]] = new
                else:
                    top.append(new)
            stack.append(new)
            keys.append(None)
            if len(stack) == 2:
                size = 0
            continue
        if event in _CLOSE:
            done = stack.pop()
            keys.pop()
            if len(stack) == 1:
                yield done
            continue
        if not stack:
            raise DatasetError("A JSON dataset must be an array of objects: [{...}, {...}].")
        if len(stack) == 1:  # a bare value in the top-level array
            yield value
            continue
        size += len(value) if type(value) is str else 8
        if size > limits.max_line_bytes:
            raise _ItemError(f"it is too large (more than {limits.max_line_bytes:,} bytes)")
        top = stack[-1]
        if type(top) is dict:
            top[keys[-1]] = value
        else:
            top.append(value)


def _iter_json(path: Path, limits: ReadLimits) -> Iterator[dict]:
    stream = _JsonBytes(path)
    count = 0
    try:
        for count, row in enumerate(_json_items(ijson.basic_parse(stream, use_float=True), limits), 1):
            if not isinstance(row, dict):
                raise DatasetError(f"Item {count} of the JSON array is not an object.")
            yield row
    except ijson.JSONError as e:
        if "integer overflow" in str(e):
            raise DatasetError(f"Item {count + 1} of the JSON array holds a number too large to read "
                               "(integers must fit in 64 bits).") from None
        raise DatasetError(f"The file is not valid JSON (near line {stream.line_no}): {str(e).splitlines()[0]}.") from None
    except _ItemError as e:
        raise DatasetError(f"Item {count + 1} of the JSON array: {e}.") from None


def csv_header_columns(first_row: list[str], has_header: bool, limits: ReadLimits) -> list[str]:
    if len(first_row) > limits.max_columns:
        raise DatasetError(f"The first row has {len(first_row):,} columns; at most {limits.max_columns:,} are allowed.")
    if not has_header:
        return [f"column_{i + 1}" for i in range(len(first_row))]
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(first_row):
        name = raw.strip() or f"column_{i + 1}"
        if len(name) > limits.max_column_name_chars:
            raise DatasetError(f"Column {i + 1}'s name is too large: {len(name):,} characters "
                               f"(at most {limits.max_column_name_chars:,}).")
        if name in seen:  # duplicate headers would silently overwrite each other
            raise DatasetError(f"The header names column {name[:80]!r} twice (columns {seen[name] + 1} and {i + 1}); "
                               "rename one of them.")
        seen[name] = i
        names.append(name)
    return names


def _iter_delimited(path: Path, delimiter: str, has_header: bool, limits: ReadLimits, skip: int = 0) -> Iterator[dict]:
    kind = "TSV" if delimiter == "\t" else "CSV"
    stream = _LineStream(path, limits)
    reader = csv.reader(stream, delimiter=delimiter)
    columns: list[str] | None = None
    csv.field_size_limit(limits.max_line_bytes)  # per process; every reader here sets its own
    record_start = 1
    try:
        for fields in reader:
            line_no, record_start = record_start, stream.line_no + 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if columns is None:
                columns = csv_header_columns(fields, has_header, limits)
                if has_header:
                    continue
            if len(fields) != len(columns):
                hint = ""
                if stream.line_no > line_no and any("\n" in f for f in fields):
                    hint = (f" Its quoted field runs on to line {stream.line_no}: probably a quote (\") that is "
                            "never closed.")
                raise DatasetError(f"Line {line_no} has {len(fields)} fields; the first row has {len(columns)}.{hint}")
            if skip:
                skip -= 1
                continue
            yield dict(zip(columns, fields, strict=True))
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise DatasetError(f"The {kind} field that starts on line {record_start} is too large: longer than "
                               f"{limits.max_line_bytes:,} characters. Often a quote (\") that is never closed.") from None
        if "unexpected end of data" in str(e) or "EOF" in str(e):
            raise DatasetError(f"The {kind} file ends inside a quoted field that starts on line {record_start}: "
                               "a quote (\") is never closed.") from None
        raise DatasetError(f"The file is not valid {kind} (line {stream.line_no}): {e}.") from None


def _iter_parquet(path: Path, limits: ReadLimits) -> Iterator[dict]:
    import pyarrow.parquet as pq  # heavy; only parquet users pay for it

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if len(names) > limits.max_columns:
            raise DatasetError(f"The file has {len(names):,} columns; at most {limits.max_columns:,} are allowed.")
        for i, name in enumerate(names):
            if len(name) > limits.max_column_name_chars:
                raise DatasetError(f"Column {i + 1}'s name is too large: {len(name):,} characters "
                                   f"(at most {limits.max_column_name_chars:,}).")
        for batch in pf.iter_batches(batch_size=256, use_threads=False):
            for row in batch.to_pylist():
                if any(isinstance(v, (dict, list)) for v in row.values()):
                    try:
                        _depth_and_text(row, limits.max_depth)
                    except DatasetError as e:
                        raise DatasetError(f"A row of the Parquet file: {e}.") from None
                yield row
    except (OSError, ValueError) as e:  # pyarrow raises ArrowInvalid (a ValueError) or OSError
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"The file is not a readable Parquet file: {e}.") from None


def iter_rows(path: Path, fmt: str, has_header: bool | None = True, limits: ReadLimits | None = None,
              skip: int = 0, *, column_names: dict[str, str] | None = None) -> Iterator[dict[str, object]]:
    """Every row of a stored dataset file as a dict column → value (after `skip` rows, skipped cheaply);
    `column_names` renames the file's columns ({name in the file: name to use}, Dataset.column_names)."""
    if column_names:
        return _renamed(iter_rows(path, fmt, has_header, limits, skip), column_names)
    limits = limits or default_limits()
    if fmt == "jsonl":
        return _iter_jsonl(path, limits, skip)
    if fmt in ("csv", "tsv"):
        return _iter_delimited(path, "," if fmt == "csv" else "\t", True if has_header is None else has_header,
                               limits, skip)
    if fmt == "json":
        rows = _iter_json(path, limits)
    elif fmt == "parquet":
        rows = _iter_parquet(path, limits)
    else:
        raise DatasetError(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if skip:
        import itertools

        return itertools.islice(rows, skip, None)
    return rows


def _renamed(rows: Iterator[dict], column_names: dict[str, str]) -> Iterator[dict]:
    for row in rows:
        yield {column_names.get(name, name): value for name, value in row.items()}
