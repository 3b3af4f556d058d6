"""Checking an uploaded file once, streaming: its format, header, columns, types, row count, preview."""
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from app.datasets.reader import EXTENSIONS, FORMATS, DatasetError, _chunks, _text_lines, iter_rows

PREVIEW_ROWS = 20
MAX_COLUMNS = 1000
PARQUET_MAGIC = b"PAR1"
# Compressed formats are bounded in what they may expand to: a few KB must not become many GB.
MAX_EXPANSION = 20


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


def sniff_header(path: Path, fmt: str) -> bool:
    """Guess whether the first row names the columns; a user can override it with has_header.

    csv.Sniffer alone misses text datasets (every column a string), so a first row is also taken
    as a header when its fields are distinct, short, non-numeric labels and some column's values
    are clearly different: numbers below a word, or sentences below a name.
    """
    sample_lines = []
    for _, line in _text_lines(path):
        sample_lines.append(line)
        if len(sample_lines) >= 50:
            break
    sample = "\n".join(sample_lines)
    if not sample.strip():
        return True
    try:
        if csv.Sniffer().has_header(sample):
            return True
    except csv.Error:
        pass
    rows = [r for r in csv.reader(sample_lines, delimiter="," if fmt == "csv" else "\t") if r]
    if len(rows) < 2:
        return False
    first, rest = rows[0], rows[1:]
    if len(set(first)) != len(first) or any(not f.strip() or len(f) > 64 or _dtype_of(f) in ("int", "float") for f in first):
        return False
    for i, name in enumerate(first):
        values = [r[i] for r in rest if i < len(r) and r[i] != ""]
        if not values:
            continue
        if all(_dtype_of(v) in ("int", "float") for v in values):
            return True
        lengths = sorted(len(v) for v in values)
        if len(name) * 3 < lengths[len(lengths) // 2]:
            return True
    return False


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
        try:
            int(value)
            return "int"
        except ValueError:
            pass
        try:
            float(value)
            return "float"
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
        raise DatasetError(f"This Parquet file would expand to {expanded:,} bytes, more than {MAX_EXPANSION}× its size; refused.")


def scan(path: Path, filename: str | None, declared_format: str | None, has_header: bool | None) -> ScanResult:
    size = path.stat().st_size
    if size == 0:
        raise DatasetError("The file is empty.")
    fmt = detect_format(path, filename, declared_format)
    if fmt == "parquet":
        _check_parquet_expansion(path, size)
    elif fmt in ("csv", "tsv") and has_header is None:
        has_header = sniff_header(path, fmt)
    if fmt not in ("csv", "tsv"):
        has_header = None
    dtypes: dict[str, str] = {}
    preview: list[dict] = []
    num_rows = 0
    for row in iter_rows(path, fmt, has_header):
        num_rows += 1
        for key, value in row.items():
            if key not in dtypes:
                if len(dtypes) >= MAX_COLUMNS:
                    raise DatasetError(f"More than {MAX_COLUMNS} columns; is this really a table?")
                dtypes[key] = "null"
            dtypes[key] = _merge(dtypes[key], _dtype_of(value))
        if len(preview) < PREVIEW_ROWS:
            preview.append({k: _jsonable(v) for k, v in row.items()})
    if num_rows == 0:
        raise DatasetError("The file has no rows.")
    columns = [{"name": name, "dtype": "string" if dtype == "null" else dtype} for name, dtype in dtypes.items()]
    return ScanResult(format=fmt, has_header=has_header, num_rows=num_rows, columns=columns, preview=preview)


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN/inf are not JSON (PostgreSQL's json type refuses them)
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)
