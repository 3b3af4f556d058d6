"""A real S3-compatible server for the tests: moto's, in a thread of the test process, on a free port.

`s3_server` (session fixture) starts it and gives its endpoint and credentials as the standard AWS_*
variables; `s3_bucket` makes a fresh bucket per test. Import both into a test module to use them.
"""
import socket
import uuid
from dataclasses import dataclass

import pytest


@dataclass
class S3Server:
    endpoint: str
    env: dict  # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def new_bucket(self) -> str:
        name = f"peftlab-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield S3Server(endpoint=endpoint, env={"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "peftlab-test",
                                           "AWS_SECRET_ACCESS_KEY": "peftlab-test-secret",
                                           "AWS_DEFAULT_REGION": "us-east-1"})
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    return s3_server.new_bucket()
