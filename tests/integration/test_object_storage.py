"""The whole stack on an S3-compatible object store (moto's server, started here): a server and a worker
that share no storage folder (the worker has its own artifact and cache dirs), a dataset uploaded to the
store, a run trained from it, its adapter downloaded streamed and presigned, Try it answered from the
worker's copy of the adapter, and the run's and the dataset's objects gone once they are deleted."""
import io
import subprocess
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for_status, wait_worker_ready
from tests.integration.private_stack import free_port, start_stack, wait_until_answering
from tests.integration.test_end_to_end import sentiment_csv
from tests.s3_server import s3_server  # noqa: F401 — fixture

# What goes to the object store does not depend on the database or broker: CI runs this once, on SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.backend_neutral]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def s3_stack(s3_server, tmp_path_factory, tiny_bert_source, monkeypatch):
    bucket = s3_server.new_bucket()
    for key, value in {**s3_server.env, "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)  # the stack's processes take the AWS_* variables from here
    root = tmp_path_factory.mktemp("object-storage")
    stack = start_stack(root / "server", [str(Path(tiny_bert_source).parent)], workers=0,
                        storage_url=f"s3://{bucket}/peftlab", heartbeat_seconds=1, lease_seconds=20)
    stack.bucket, stack.worker_dir = bucket, root / "worker"
    try:
        # The embedded broker lives in the data dir, so the worker shares that; its artifacts (working area)
        # and its copies of stored objects are its own, and the server's dataset and artifact folders stay empty.
        worker_env = {**stack.env, "PEFTLAB_ARTIFACT_DIR": str(stack.worker_dir / "artifacts"),
                      "PEFTLAB_STORAGE_CACHE_DIR": str(stack.worker_dir / "cache")}
        worker = stack.spawn("worker-0", "worker", "--loglevel", "INFO", env=worker_env)  # train and predict queues
        stack.workers.append(worker)
        wait_worker_ready(worker, timeout=300)  # torch imports slowly on a busy machine
        yield stack
    finally:
        print(stack.logs())
        stack.close()


def test_datasets_and_runs_live_in_the_object_store(s3_stack, s3_server, tiny_bert_source, tmp_path):
    stack, bucket = s3_stack, s3_stack.bucket
    server_dir = stack.data_dir
    with stack.client() as c:
        model = c.post("/api/models", json={"name": "tiny bert s3", "source": tiny_bert_source})
        assert model.status_code == 201, model.text
        ds = c.post("/api/datasets", files={"file": ("reviews.csv", sentiment_csv(80))})
        assert ds.status_code == 201, ds.text
        ds = ds.json()
        dataset_keys = s3_server.keys(bucket, "peftlab/datasets/")
        assert len(dataset_keys) == 1 and dataset_keys[0].endswith(".csv")
        assert s3_server.client().get_object(Bucket=bucket, Key=dataset_keys[0])["Body"].read() == sentiment_csv(80)
        assert not [p for p in _files(server_dir / "datasets") if not p.name.startswith(".")]  # not on the server's disk
        rows = c.get(f"/api/datasets/{ds['id']}/rows", params={"limit": 5})
        assert rows.status_code == 200 and len(rows.json()["rows"]) == 5

        body = {"name": "lora on s3", "dataset_id": ds["id"], "base_model": model.json()["id"],
                "task": "classification", "eval_fraction": 0.25, "columns": {"text": "review", "label": "sentiment"},
                "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
                "training": {"learning_rate": 0.01, "batch_size": 16, "max_steps": 6, "eval_every": 3, "seed": 1,
                             "checkpoint_every": 3}}
        run = c.post("/api/runs", json=body)
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        run = wait_for_status(lambda: c.get(f"/api/runs/{run_id}").json(), ("succeeded", "failed", "cancelled"))
        assert run["status"] == "succeeded", run

        prefix = f"peftlab/artifacts/runs/{run_id}/"
        keys = [k[len(prefix):] for k in s3_server.keys(bucket, prefix)]
        for expected in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/README.md",
                         "adapter.zip", "merged.zip", "predictions/predictions.jsonl"):
            assert expected in keys, keys
        assert any(k.startswith("checkpoints/step-") and k.endswith("/state.json") for k in keys), keys
        # The worker read the dataset through its own cache and left no working copy; the server wrote nothing.
        assert [p for p in _files(stack.worker_dir / "cache") if p.suffix == ".csv"]
        assert _files(stack.worker_dir / "artifacts" / "runs") == []
        assert _files(server_dir / "artifacts") == []

        streamed = c.get(f"/api/runs/{run_id}/adapter")
        assert streamed.status_code == 200, streamed.text
        assert streamed.headers["content-type"] == "application/zip"
        assert f"peftlab-run-{run_id}-adapter.zip" in streamed.headers["content-disposition"]
        names = zipfile.ZipFile(io.BytesIO(streamed.content)).namelist()
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "peftlab.json"} <= set(names)
        assert c.get(f"/api/runs/{run_id}/merged").status_code == 200
        predictions = c.get(f"/api/runs/{run_id}/predictions")
        assert predictions.status_code == 200 and len(predictions.json()["rows"]) == 20

        answer = c.post(f"/api/runs/{run_id}/predict", json={"inputs": ["great wonderful film"]})
        assert answer.status_code == 200, answer.text  # the worker loaded the adapter from the store
        assert answer.json()["outputs"][0]["label"] in ("pos", "neg")

        presigned = _presigning_server(stack)
        try:
            with httpx.Client(base_url=presigned[1], headers=stack.headers, timeout=60) as p:
                res = p.get(f"/api/runs/{run_id}/adapter", follow_redirects=False)
                assert res.status_code == 307, res.text
                location = res.headers["location"]
                assert location.startswith(s3_server.endpoint) and "Signature" in location
                direct = httpx.get(location)
                assert direct.status_code == 200 and direct.content == streamed.content
            from peftlab.client import Client  # `peftlab runs download` follows the redirect

            token = stack.headers["Authorization"].split()[1]
            saved = Client(presigned[1], token).download(run_id, tmp_path / "adapter.zip")
            assert saved.read_bytes() == streamed.content
        finally:
            presigned[0].terminate()
            presigned[0].wait(timeout=20)

        assert c.delete(f"/api/runs/{run_id}").status_code == 204
        assert s3_server.keys(bucket, prefix) == []
        assert c.get(f"/api/runs/{run_id}/adapter").status_code == 404
        assert c.delete(f"/api/datasets/{ds['id']}").status_code == 204
        assert s3_server.keys(bucket, "peftlab/datasets/") == []


def _presigning_server(stack) -> tuple[subprocess.Popen, str]:
    """A second server replica on the same database and store, set to answer downloads with presigned URLs."""
    port = free_port()
    env = {**stack.env, "PEFTLAB_STORAGE_PRESIGNED_DOWNLOADS": "true"}
    proc = stack.spawn("server-presigned", "serve", "--port", str(port), env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(url, proc)
    return proc, url
