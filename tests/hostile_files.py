"""The hostile dataset corpus: small files committed in tests/data/bad/, large ones made here at test time.

Each case is (file name, what the 422's message must contain). A large file is written to a temp
dir by its maker, so the repository holds no megabytes (a 250 MB line is 250 KB of gzip).
"""
import gzip
from collections.abc import Callable
from pathlib import Path

BAD_DIR = Path(__file__).resolve().parent / "data" / "bad"

# The committed files and the words their refusal must use.
COMMITTED = {
    "empty.csv": "empty",
    "broken-line.jsonl": "Line 2 is not valid JSON",
    "array-line.jsonl": "Line 2 is not a JSON object",
    "string-line.jsonl": "Line 2 is not a JSON object",
    "truncated.json": "not valid JSON",
    "object.json": "array of objects",
    "bare-number.json": "array of objects",
    "scalar-items.json": "Item 1 of the JSON array is not an object",
    "trailing-garbage.json": "not valid JSON",
    "binary-junk.csv": "binary",
    "png-renamed.csv": "binary",
    "nul-in-text.jsonl": "binary",
    "latin1.csv": "not valid UTF-8",
    "invalid-utf8-line3.jsonl": "not valid UTF-8 text (line 3",
    "utf8-encoded-surrogate.jsonl": "not valid UTF-8",
    "utf16.csv": "UTF-16",
    "header-only.csv": "only a header row",
    "empty-array.json": "no rows",
    "ragged.csv": "Line 3 has 1 fields",
    "ragged.tsv": "Line 3 has 3 fields",
    "unclosed-quote.csv": "never closed",
    "duplicate-header.csv": "twice",
    "fake.parquet": "Parquet",
    "lone-surrogate.jsonl": "Line 2: it holds invalid text",
    "lone-surrogate-key.jsonl": "surrogate",
    "cr-only.csv": "carriage return",
    "cr-only.jsonl": "carriage return",
    "bigint-5000.jsonl": "Line 2: a number is too large",
    "bigint-negative.jsonl": "number is too large",
    "bigint-5000.json": "number too large",
    "deep-40.jsonl": "nested too deeply",
    "deep-40.json": "nested too deeply",
    "deep-1000.jsonl": "nested too deeply",
    "gzip-damaged.csv.gz": "damaged",
    "gzip-junk.jsonl.gz": "damaged",
    "gzip-of-binary.csv.gz": "binary",
}

MB = 1024 * 1024


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _gzip_stream(path: Path, piece: bytes, repeat: int, head: bytes = b"", tail: bytes = b"") -> Path:
    """A gzip file of head + piece*repeat + tail, compressed as it goes (never all in memory)."""
    with gzip.open(path, "wb", compresslevel=6) as f:
        f.write(head)
        block = piece * max(1, MB // len(piece))
        written = 0
        while written + len(block) <= len(piece) * repeat:
            f.write(block)
            written += len(block)
        f.write(piece * ((len(piece) * repeat - written) // len(piece)))
        f.write(tail)
    return path


def _nested(open_: bytes, close: bytes, depth: int, head: bytes, tail: bytes) -> bytes:
    return head + open_ * depth + b"1" + close * depth + tail


def _parquet(path: Path, columns: dict, **options) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, **options)
    return path


def _parquet_truncated(path: Path) -> Path:
    _parquet(path, {"text": [f"row {i}" for i in range(1000)]})
    data = path.read_bytes()
    return _write(path, data[: len(data) // 2])


def _parquet_bomb(path: Path) -> Path:
    # 100 distinct 1 MB strings of one letter: 100 MB of cells in a few hundred KB of zstd.
    return _parquet(path, {"text": ["a" * MB + str(i) for i in range(100)]}, compression="zstd", use_dictionary=False)


# name → (maker writing the file at the given path, what the message must contain)
GENERATED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "deep-100k.json": (lambda p: _write(p, _nested(b"[", b"]", 100_000, b'[{"t": ', b"}]")), "nested too deeply"),
    "deep-100k.jsonl": (lambda p: _write(p, _nested(b"[", b"]", 100_000, b'{"t": ', b"}\n")), "nested too deeply"),
    "deep-100k-objects.jsonl": (lambda p: _write(p, _nested(b'{"a": ', b"}", 100_000, b'{"t": ', b"}\n")),
                                "nested too deeply"),
    "deep-3000.json": (lambda p: _write(p, _nested(b"[", b"]", 3000, b'[{"t": ', b"}]")), "nested too deeply"),
    "deep-5000-objects.json": (lambda p: _write(p, _nested(b'{"a": ', b"}", 5000, b'[{"t": ', b"}]")),
                               "nested too deeply"),
    "gzip-bomb.jsonl.gz": (lambda p: _gzip_stream(p, b'{"a": 0}\n', 40 * MB), "too large once decompressed"),
    "one-250mb-line.jsonl.gz": (lambda p: _gzip_stream(p, b"x", 250 * 1000 * 1000, b'{"t": "', b'"}\n'),
                                "Line 1 is too large"),
    "one-17mb-line.csv.gz": (lambda p: _gzip_stream(p, b"y", 17 * MB, b"text\n", b"\n"), "Line 2 is too large"),
    "item-17mb.json.gz": (lambda p: _gzip_stream(p, b"z", 17 * MB, b'[{"t": "', b'"}]'), "too large"),
    "unclosed-quote-20mb.csv": (lambda p: _write(p, b'text,label\n"' + b"abc,def\n" * (20 * MB // 8)), "never closed"),
    "duplicate-headers-10k.csv": (lambda p: _write(p, b",".join([b"x"] * 10_000) + b"\n" + b",".join([b"1"] * 10_000) + b"\n"),
                                  "10,000 columns"),
    "duplicate-headers-1000.csv": (lambda p: _write(p, b",".join([b"x"] * 1000) + b"\n" + b",".join([b"1"] * 1000) + b"\n"),
                                   "twice"),
    "column-name-1m.jsonl": (lambda p: _write(p, b'{"' + b"k" * 1_000_000 + b'": 1}\n'), "column name is too large"),
    "column-name-1m.csv": (lambda p: _write(p, b"text," + b"k" * 1_000_000 + b"\nhello,1\n"), "name is too large"),
    # (uploaded with has_header=true: see FIELDS)
    "columns-1001.csv": (lambda p: _write(p, b",".join(b"c%d" % i for i in range(1001)) + b"\n"
                                          + b",".join([b"1"] * 1001) + b"\n"), "columns"),
    "keys-1001.jsonl": (lambda p: _write(p, b"".join(b'{"k%d": 1}\n' % i for i in range(1001))), "different columns"),
    "parquet-truncated.parquet": (_parquet_truncated, "Parquet"),
    "parquet-1001-columns.parquet": (lambda p: _parquet(p, {f"c{i}": [1] for i in range(1001)}), "columns"),
    "parquet-long-name.parquet": (lambda p: _parquet(p, {"n" * 100_000: [1]}), "name is too large"),
    "parquet-bomb.parquet": (_parquet_bomb, "too large once decompressed"),
}


# Form fields sent with a case's upload (default: none, everything detected).
FIELDS = {"column-name-1m.csv": {"has_header": "true"}}


def make(name: str, tmp: Path) -> Path:
    """The file of case `name`: the committed one, or one generated into tmp."""
    if name in COMMITTED:
        return BAD_DIR / name
    maker, _ = GENERATED[name]
    return maker(tmp / name)


def expected_message(name: str) -> str:
    return COMMITTED[name] if name in COMMITTED else GENERATED[name][1]


ALL = sorted(COMMITTED) + sorted(GENERATED)
