"""A run whose outputs do not fit on the artifact storage fails with a reason a person can act on, and
leaves no half-written adapter behind. A real worker process writes to a small tmpfs that is full."""
import json
from pathlib import Path

import pytest

from tests import standalone
from tests.conftest import wait_for_status

pytestmark = pytest.mark.integration


@pytest.fixture
def full_artifact_disk(tmp_path):
    disk = tmp_path / "artifacts"
    if not standalone.mount_small_disk(disk, "1m"):
        pytest.skip("mounting a small tmpfs is not permitted here (needs root)")
    yield disk
    standalone.unmount(disk)


def test_failed_run_leaves_no_partial_artifacts(full_artifact_disk, tmp_path, tiny_bert_source):
    stack = standalone.start(tmp_path / "logs", worker=True, PEFTLAB_DATA_DIR=str(tmp_path / "data"),
                             PEFTLAB_ARTIFACT_DIR=str(full_artifact_disk),
                             PEFTLAB_MODEL_DIRS=json.dumps([str(Path(tiny_bert_source).parent)]))
    try:
        with stack.client() as c:
            model = c.post("/api/models", json={"name": "tiny bert disk", "source": tiny_bert_source})
            assert model.status_code == 201, model.text
            csv = "text,label\n" + "".join(f"good fine {i},pos\nbad awful {i},neg\n" for i in range(16))
            dataset = c.post("/api/datasets", files={"file": ("small.csv", csv.encode())}).json()
            # Room for the adapter's config and a page or two of weights: the save fails part-way.
            standalone.fill_disk(full_artifact_disk, leave=8192)
            body = {"dataset_id": dataset["id"], "base_model": model.json()["id"], "eval_fraction": 0.25,
                    "columns": {"text": "text", "label": "label"}, "method": {"type": "lora", "r": 8},
                    "training": {"max_steps": 2, "batch_size": 8, "eval_every": 100}}
            run = c.post("/api/runs", json=body)
            assert run.status_code == 201, run.text
            run_id = run.json()["id"]
            final = wait_for_status(lambda: c.get(f"/api/runs/{run_id}").json(), ("succeeded", "failed"), timeout=300)
            assert final["status"] == "failed", final
            assert final["error"].startswith("out of disk space"), final["error"]
            assert c.get(f"/api/runs/{run_id}/artifacts").json() == []
            leftovers = [p for p in (full_artifact_disk / "runs").rglob("*")] if (full_artifact_disk / "runs").exists() else []
            assert leftovers == [], leftovers
    except AssertionError:
        print(stack.log_tail())
        raise
    finally:
        stack.stop()
