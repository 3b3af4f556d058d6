"""Checkpoints in the object store: written on one host's disk and copied up, found and restored by an
attempt on another host (another directory), pruned there too; a half-uploaded one never counts."""
import io

import torch

from app.storage.s3 import S3Store
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 — fixtures
from tests.unit.test_resume import save_step, small_model_and_optimizer
from workers.training.mirrored_checkpoints import MirroredCheckpointStore
from workers.training.resume import STATE_FILE

PREFIX = "runs/7/checkpoints"


def _store(s3_server, s3_bucket) -> S3Store:
    return S3Store(s3_bucket, "peftlab/artifacts", client=s3_server.client())


def test_a_checkpoint_written_on_one_host_resumes_on_another(s3_server, s3_bucket, tmp_path):
    store = _store(s3_server, s3_bucket)
    model, optimizer = small_model_and_optimizer()
    first_host = MirroredCheckpointStore(tmp_path / "host-a", store=store, prefix=PREFIX)
    for step in (1, 2, 3):
        assert save_step(first_host, model, optimizer, step, best_step=1)
    steps = {k.split("/")[-2] for k in s3_server.keys(s3_bucket, f"peftlab/artifacts/{PREFIX}/")}
    assert steps == {"step-00000001", "step-00000003"}  # the best and the last, as on disk

    second_host = MirroredCheckpointStore(tmp_path / "host-b", store=store, prefix=PREFIX)
    assert second_host.latest() is None  # nothing on this disk …
    second_host.pull()  # … until it looks in the store
    assert [c.step for c in second_host.all()] == [1, 3]
    twin, twin_optimizer = small_model_and_optimizer(steps=0)
    state = second_host.restore(second_host.latest(), twin, twin_optimizer)
    assert state.step == 3 and state.best_step == 1
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert twin_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_a_half_uploaded_checkpoint_is_not_pulled_and_a_first_attempt_clears_the_store(s3_server, s3_bucket, tmp_path):
    store = _store(s3_server, s3_bucket)
    model, optimizer = small_model_and_optimizer()
    writer = MirroredCheckpointStore(tmp_path / "a", store=store, prefix=PREFIX)
    assert save_step(writer, model, optimizer, 4)
    # A worker killed mid-upload: the weights of step 9 are there, its state.json (uploaded last) is not.
    store.put(f"{PREFIX}/step-00000009/weights.safetensors", io.BytesIO(b"partial"))
    reader = MirroredCheckpointStore(tmp_path / "b", store=store, prefix=PREFIX)
    reader.pull()
    assert [c.step for c in reader.all()] == [4]
    assert (reader.latest().path / STATE_FILE).is_file()

    reader.prune(keep=set())  # what a first attempt does with a reused run id
    assert s3_server.keys(s3_bucket, f"peftlab/artifacts/{PREFIX}/") == []
