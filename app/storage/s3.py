"""Any S3-compatible object store (AWS S3, MinIO, Ceph, R2, …) through boto3.

Credentials, region and endpoint come from boto3's standard sources: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL (or ~/.aws, or an instance role).
boto3's transfer manager streams: multipart uploads and ranged downloads in 8 MB parts.
"""
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from app.storage.base import MissingObject, ObjectInfo, ObjectStore, StorageUnavailable, check_key

_MISSING = {"404", "NoSuchKey", "NotFound"}


def make_client():
    import boto3
    from botocore.config import Config

    # S3-compatible servers at their own address (MinIO, moto, Ceph) want path-style URLs
    # (http://host/bucket/key); AWS itself decides per bucket.
    style = "path" if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3") else "auto"
    return boto3.client("s3", config=Config(s3={"addressing_style": style}, retries={"mode": "standard"}))


@contextmanager
def _translated(key: str):
    """botocore's errors as ours: a missing key is MissingObject, anything else the store's fault."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code"))
        if code in _MISSING:
            raise MissingObject(key) from None
        raise StorageUnavailable(f"the object store refused the request for {key!r}: {code}") from e
    except BotoCoreError as e:
        raise StorageUnavailable(f"the object store is unavailable: {e}") from e


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str = "", client=None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or make_client()
        self.name = f"s3://{bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, stream: BinaryIO) -> None:
        with _translated(key):
            self.client.upload_fileobj(stream, self.bucket, self._key(key))

    def put_file(self, key: str, path: Path) -> None:
        with _translated(key):
            self.client.upload_file(str(path), self.bucket, self._key(key))

    def open(self, key: str) -> BinaryIO:
        with _translated(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".incoming-store-{uuid.uuid4().hex}"
        try:
            with _translated(key):
                self.client.download_file(self.bucket, self._key(key), str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def stat(self, key: str) -> ObjectInfo:
        with _translated(key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(key=key, size=head["ContentLength"], etag=head["ETag"].strip('"'))

    def list(self, prefix: str) -> list[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        skip = len(self.prefix) + 1 if self.prefix else 0
        found = []
        with _translated(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                found += [ObjectInfo(key=item["Key"][skip:], size=item["Size"], etag=item["ETag"].strip('"'))
                          for item in page.get("Contents", [])]
        return sorted(found, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        with _translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(o.key) for o in self.list(prefix)]
        with _translated(prefix):
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": k} for k in keys[start:start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    def presign(self, key: str, *, expires_s: int, filename: str | None = None) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        with _translated(key):
            return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)
