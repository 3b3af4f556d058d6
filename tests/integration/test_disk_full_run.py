"""Artifact storage that fills up: a run whose outputs do not fit fails with a reason a person can act
on and leaves no half-written adapter behind, while an earlier run's artifacts stay; a download that
cannot be zipped answers 503 and leaves no partial zip. A real worker process writes to a small tmpfs."""
import json
from pathlib import Path

import pytest

from app.errors import DISK_FULL
from tests import standalone
from tests.conftest import wait_for_status

pytestmark = [pytest.mark.integration, pytest.mark.backend_neutral]


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not standalone.mount_small_disk(disk, "4m"):
        pytest.skip("mounting a small tmpfs is not permitted here (needs root)")
    yield disk
    standalone.unmount(disk)


def _train(c, dataset_id: int, model_id: str) -> dict:
    body = {"dataset_id": dataset_id, "base_model": model_id, "eval_fraction": 0.25,
            "columns": {"text": "text", "label": "label"}, "method": {"type": "lora", "r": 8},
            "training": {"max_steps": 2, "batch_size": 8, "eval_every": 100}}
    run = c.post("/api/runs", json=body)
    assert run.status_code == 201, run.text
    return wait_for_status(lambda: c.get(f"/api/runs/{run.json()['id']}").json(), ("succeeded", "failed"), timeout=300)


def test_full_artifact_disk(small_disk, tmp_path, tiny_bert_source):
    data = tmp_path / "data"
    data.mkdir()
    (small_disk / "tmp").mkdir()
    (data / "tmp").symlink_to(small_disk / "tmp")  # where downloads are zipped, on the small disk too
    stack = standalone.start(tmp_path / "logs", worker=True, PEFTLAB_DATA_DIR=str(data),
                             PEFTLAB_ARTIFACT_DIR=str(small_disk / "artifacts"),
                             PEFTLAB_MODEL_DIRS=json.dumps([str(Path(tiny_bert_source).parent)]))
    try:
        with stack.client() as c:
            model = c.post("/api/models", json={"name": "tiny bert disk", "source": tiny_bert_source})
            assert model.status_code == 201, model.text
            csv = "text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(16))
            dataset = c.post("/api/datasets", files={"file": ("small.csv", csv.encode())}).json()
            first = _train(c, dataset["id"], model.json()["id"])
            assert first["status"] == "succeeded", first
            kept = sorted(p for p in (small_disk / "artifacts" / "runs" / str(first["id"])).rglob("*"))
            assert kept

            # Room for the adapter's config and a page or two of weights: the save fails part-way.
            standalone.fill_disk(small_disk, leave=8192)
            download = c.get(f"/api/runs/{first['id']}/adapter")
            assert download.status_code == 503 and download.json() == {"detail": DISK_FULL}
            assert list((small_disk / "tmp").iterdir()) == []

            second = _train(c, dataset["id"], model.json()["id"])
            assert second["status"] == "failed", second
            assert second["error"].startswith("out of disk space"), second["error"]
            assert c.get(f"/api/runs/{second['id']}/artifacts").json() == []
            assert not (small_disk / "artifacts" / "runs" / str(second["id"])).exists()
            assert sorted(p for p in (small_disk / "artifacts" / "runs" / str(first["id"])).rglob("*")) == kept
    except AssertionError:
        print(stack.log_tail())
        raise
    finally:
        stack.stop()
