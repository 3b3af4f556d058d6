"""The storage interface, the same checks against the local directory and a real S3-compatible server."""
import io
import os

import httpx
import pytest

from app.storage.base import CHUNK, MissingObject, ObjectStore, StorageUnavailable
from app.storage.cache import ObjectCache
from app.storage.local import LocalStore
from app.storage.s3 import S3Store
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 — fixtures

BIG = 9 * 1024 * 1024 + 123  # past boto3's 8 MB multipart threshold: uploaded in parts


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    return S3Store(request.getfixturevalue("s3_bucket"), "some/prefix", client=server.client())


class ChunkedReader(io.RawIOBase):
    """A stream of `size` bytes that refuses to be read whole (read() / read(-1)) and remembers the largest read."""

    def __init__(self, size: int):
        self.data, self.pos, self.largest = os.urandom(size), 0, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        assert n is not None and n > 0, "the store read the whole stream at once"
        self.largest = max(self.largest, n)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out

    def readinto(self, buffer) -> int:
        out = self.read(len(buffer))
        buffer[:len(out)] = out
        return len(out)


def test_put_streams_and_get_streams_back(store):
    source = ChunkedReader(BIG)
    store.put("datasets/big.bin", source)
    assert source.largest <= 16 * 1024 * 1024 < BIG * 2  # read in parts, never all of it at once
    assert store.stat("datasets/big.bin").size == BIG
    chunks = list(store.iter_bytes("datasets/big.bin"))
    assert len(chunks) > 1 and max(map(len, chunks)) <= CHUNK
    assert b"".join(chunks) == source.data
    with store.open("datasets/big.bin") as f:
        assert f.read(10) == source.data[:10]


def test_put_file_and_get_file(store, tmp_path):
    src = tmp_path / "adapter_model.safetensors"
    src.write_bytes(b"weights" * 1000)
    store.put_file("runs/1/adapter/adapter_model.safetensors", src)
    dest = tmp_path / "copy" / "weights.bin"
    store.get_file("runs/1/adapter/adapter_model.safetensors", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert not [p for p in dest.parent.iterdir() if p != dest]  # no temporary file left beside it


def test_list_by_prefix_and_delete(store):
    for key in ("runs/1/adapter/a.json", "runs/1/adapter/b.bin", "runs/1/predictions/p.jsonl", "runs/10/adapter/a.json"):
        store.put(key, io.BytesIO(key.encode()))
    assert [o.key for o in store.list("runs/1/")] == ["runs/1/adapter/a.json", "runs/1/adapter/b.bin",
                                                      "runs/1/predictions/p.jsonl"]
    assert [o.key for o in store.list("runs/1/adapter/")] == ["runs/1/adapter/a.json", "runs/1/adapter/b.bin"]
    assert {o.size for o in store.list("runs/1/adapter/a")} == {len("runs/1/adapter/a.json")}
    assert store.list("runs/2/") == []
    store.delete("runs/1/adapter/b.bin")
    store.delete("runs/1/adapter/never-there")  # no error
    assert [o.key for o in store.list("runs/1/adapter/")] == ["runs/1/adapter/a.json"]
    assert store.delete_prefix("runs/1/") == 2
    assert [o.key for o in store.list("runs/")] == ["runs/10/adapter/a.json"]  # runs/1/ is not runs/10/


def test_etag_follows_the_content(store):
    store.put("d.csv", io.BytesIO(b"a,b\n1,2\n"))
    first = store.stat("d.csv").etag
    store.put("d.csv", io.BytesIO(b"a,b\n1,2\n3,4\n"))
    assert store.stat("d.csv").etag != first
    assert store.stat("d.csv").size == 12


def test_presigned_url_serves_the_object(store):
    store.put("runs/3/adapter.zip", io.BytesIO(b"PK zip bytes"))
    url = store.presign("runs/3/adapter.zip", expires_s=60, filename="peftlab-run-3-adapter.zip")
    if isinstance(store, LocalStore):
        assert url is None  # no URLs for a directory: the server streams it
        return
    res = httpx.get(url)
    assert res.status_code == 200 and res.content == b"PK zip bytes"
    assert "peftlab-run-3-adapter.zip" in res.headers["content-disposition"]
    assert httpx.get(url.split("?")[0]).status_code == 403  # the signature is what lets it through


def test_missing_key_is_missing_object(store, tmp_path):
    for call in (lambda: store.open("nope"), lambda: store.stat("nope"),
                 lambda: store.get_file("nope", tmp_path / "x"), lambda: list(store.iter_bytes("nope"))):
        with pytest.raises(MissingObject):
            call()
    assert issubclass(MissingObject, FileNotFoundError)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/../../b", "a\\b", ""])
def test_keys_cannot_leave_the_store(store, key):
    with pytest.raises(ValueError):
        store.put(key, io.BytesIO(b"x"))


def test_cache_downloads_an_object_once_per_version(store, tmp_path):
    cache = ObjectCache(tmp_path / "cache", max_bytes=10**9)
    store.put("d.csv", io.BytesIO(b"v1"))
    calls = []
    real = store.get_file
    store.get_file = lambda key, dest: (calls.append(key), real(key, dest))
    first = cache.file(store, "d.csv")
    assert cache.file(store, "d.csv") == first and first.read_bytes() == b"v1"
    assert calls == ["d.csv"]  # the second read came from the cache
    store.put("d.csv", io.BytesIO(b"version 2"))
    assert cache.file(store, "d.csv").read_bytes() == b"version 2"  # never served stale
    assert calls == ["d.csv", "d.csv"]


def test_cache_copies_a_folder_and_evicts_past_its_budget(store, tmp_path):
    cache = ObjectCache(tmp_path / "cache", max_bytes=1500)
    for name in ("adapter_config.json", "sub/weights.bin"):
        store.put(f"runs/4/adapter/{name}", io.BytesIO(name.encode() * 50))
    folder = cache.tree(store, "runs/4/adapter")
    assert (folder / "sub" / "weights.bin").read_bytes() == b"sub/weights.bin" * 50
    assert cache.tree(store, "runs/4/adapter") == folder
    store.put("big.bin", io.BytesIO(b"x" * 1400))
    cache.file(store, "big.bin")  # over the budget together: the folder (least recently used) goes
    assert not folder.exists()
    with pytest.raises(MissingObject):
        cache.tree(store, "runs/5/adapter")


def test_an_unreachable_store_is_unavailable_not_missing(s3_server):
    import boto3
    from botocore.config import Config

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="y",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    with pytest.raises(StorageUnavailable):
        S3Store("bucket", client=client).stat("any")
