"""Reading uploaded dataset files row by row, never the whole file in memory.

Shared by the server (scanning an upload, paging rows) and the workers (training data),
so it imports neither FastAPI nor torch.
"""
import codecs
import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import ijson

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
              ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
csv.field_size_limit(16 * 1024 * 1024)  # long text fields are normal in NLP data


class DatasetError(ValueError):
    """A problem with a dataset file, worded for the person who uploaded it."""


GZIP_MAGIC = b"\x1f\x8b"
# A gzip file may expand to at most this many times its size (and at least to 256 MB): real text
# compresses 3–20×; a "zip bomb" expands thousands of times.
MAX_GZIP_RATIO = 50
MIN_GZIP_ALLOWANCE = 256 * 1024 * 1024


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes, decompressed if it is gzip — refusing to expand past the allowance."""
    if not is_gzip(path):
        with open(path, "rb") as f:
            while chunk := f.read(size):
                yield chunk
        return
    allowance = max(MIN_GZIP_ALLOWANCE, MAX_GZIP_RATIO * path.stat().st_size)
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(size):
                total += len(chunk)
                if total > allowance:
                    raise DatasetError(f"This gzip file expands to more than {allowance:,} bytes "
                                       f"({MAX_GZIP_RATIO}× its size); refused.")
                yield chunk
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"The gzip file is damaged: {e}.") from None


def _is_excel(head: bytes) -> bool:
    """.xlsx is a zip holding xl/…; .xls is an OLE2 compound file."""
    return (head.startswith(b"PK\x03\x04") and b"xl/" in head) or head.startswith(b"\xd0\xcf\x11\xe0")


def _binary_file_message(head: bytes) -> str:
    if _is_excel(head):
        return "Excel files are not supported; export to CSV (File → Save As → CSV UTF-8) and upload that."
    return "This looks like a binary file (it contains NUL bytes), not text."


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file (a BOM is allowed); wrong encodings say where they are."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    line_no = 0
    pending = ""
    for chunk in _chunks(path):
        if b"\x00" in chunk:
            raise DatasetError(_binary_file_message(chunk))
        try:
            text = pending + decoder.decode(chunk)
        except UnicodeDecodeError:
            raise DatasetError(f"The file is not valid UTF-8 text (near line {line_no + pending.count(chr(10)) + 1}). "
                               "Save it as UTF-8 and upload it again.") from None
        lines = text.split("\n")
        pending = lines.pop()
        for line in lines:
            line_no += 1
            yield line_no, line
    tail = pending + decoder.decode(b"", final=True)
    if tail:
        yield line_no + 1, tail


class _LineStream(io.TextIOBase):
    """A text stream over _text_lines, so csv and ijson get the same encoding checks."""

    def __init__(self, path: Path):
        self._lines = _text_lines(path)
        self.line_no = 0

    def readable(self) -> bool:
        return True

    def __iter__(self):
        return self

    def __next__(self) -> str:
        self.line_no, line = next(self._lines)
        return line + "\n"

    def read(self, size: int = -1) -> str:
        if size == 0:  # a probe for the stream's type (ijson does this); consume nothing
            return ""
        try:
            return next(self)
        except StopIteration:
            return ""


def _iter_jsonl(path: Path) -> Iterator[dict]:
    for line_no, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"Line {line_no} is not valid JSON: {e.msg}.") from None
        if not isinstance(row, dict):
            raise DatasetError(f"Line {line_no} is not a JSON object; JSONL needs one object per line.")
        yield row


class _Utf8Stream(_LineStream):
    """The same checked lines as bytes: ijson parses bytes natively (text costs a conversion)."""

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        return super().read(size).encode("utf-8")


def _iter_json(path: Path) -> Iterator[dict]:
    stream = _Utf8Stream(path)
    first = _first_char(path)
    if first != "[":
        raise DatasetError("A JSON dataset must be an array of objects: [{...}, {...}].")
    try:
        for i, row in enumerate(ijson.items(stream, "item", use_float=True)):
            if not isinstance(row, dict):
                raise DatasetError(f"Item {i + 1} of the JSON array is not an object.")
            yield row
    except ijson.JSONError as e:
        raise DatasetError(f"The file is not valid JSON (near line {stream.line_no}): {e}.") from None


def _first_char(path: Path) -> str:
    for _, line in _text_lines(path):
        stripped = line.strip()
        if stripped:
            return stripped[0]
    return ""


def csv_header_columns(first_row: list[str], has_header: bool) -> list[str]:
    if not has_header:
        return [f"column_{i + 1}" for i in range(len(first_row))]
    names, seen = [], set()
    for i, raw in enumerate(first_row):
        name = raw.strip() or f"column_{i + 1}"
        while name in seen:  # duplicate headers would silently overwrite each other
            name += "_"
        seen.add(name)
        names.append(name)
    return names


def _iter_delimited(path: Path, delimiter: str, has_header: bool) -> Iterator[dict]:
    stream = _LineStream(path)
    reader = csv.reader(stream, delimiter=delimiter)
    columns: list[str] | None = None
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if columns is None:
                columns = csv_header_columns(fields, has_header)
                if has_header:
                    continue
            if len(fields) != len(columns):
                raise DatasetError(f"Line {stream.line_no} has {len(fields)} fields; the first row has {len(columns)}.")
            yield dict(zip(columns, fields, strict=True))
    except csv.Error as e:
        raise DatasetError(f"The file is not valid {'TSV' if delimiter == chr(9) else 'CSV'} (line {stream.line_no}): {e}.") from None


def _iter_parquet(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq  # heavy; only parquet users pay for it

    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    except (OSError, ValueError) as e:  # pyarrow raises ArrowInvalid (a ValueError) or OSError
        raise DatasetError(f"The file is not a readable Parquet file: {e}.") from None


def iter_rows(path: Path, fmt: str, has_header: bool | None = True) -> Iterator[dict[str, object]]:
    """Every row of a stored dataset file as a dict column → value."""
    if fmt == "jsonl":
        return _iter_jsonl(path)
    if fmt == "json":
        return _iter_json(path)
    if fmt in ("csv", "tsv"):
        return _iter_delimited(path, "," if fmt == "csv" else "\t", True if has_header is None else has_header)
    if fmt == "parquet":
        return _iter_parquet(path)
    raise DatasetError(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
