"""A run's config as a YAML file: exported from a run, read back to start the same run (POST /api/runs/yaml)."""
import pytest
import yaml


@pytest.fixture
def dataset(client):
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    ds = client.post("/api/datasets", files={"file": ("yaml-reviews.csv", csv.encode())}).json()
    yield ds
    for run in client.get("/api/runs", params={"dataset_id": ds["id"]}).json():
        client.post(f"/api/runs/{run['id']}/cancel")
        client.delete(f"/api/runs/{run['id']}")
    client.delete(f"/api/datasets/{ds['id']}")


def _body(dataset_id: int) -> dict:
    return {"name": "yaml round trip", "dataset_id": dataset_id, "base_model": "minilm-l6", "task": "classification",
            "columns": {"text": "sentence", "label": "label"}, "method": {"type": "lora", "r": 4},
            "training": {"learning_rate": 0.001, "max_steps": 3, "batch_size": 4}}


def test_export_and_start_again_gives_the_same_config(client, dataset):
    run = client.post("/api/runs", json=_body(dataset["id"])).json()
    res = client.get(f"/api/runs/{run['id']}/config.yaml")
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/yaml")
    assert f'filename="peftlab-run-{run["id"]}.yaml"' in res.headers["content-disposition"]
    assert res.text.startswith(f"# peftlab run {run['id']}")
    assert yaml.safe_load(res.text) == run["config"]
    again = client.post("/api/runs/yaml", content=res.content, headers={"Content-Type": "application/yaml"})
    assert again.status_code == 201, again.text
    assert again.json()["config"] == run["config"] and again.json()["id"] != run["id"]


@pytest.mark.parametrize("text, needle", [
    ("name: x\nmethod: {type: lora\n", "not valid YAML at line"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("", "must hold a mapping"),
])
def test_a_file_that_is_not_a_config_is_refused_with_a_message(client, text, needle):
    res = client.post("/api/runs/yaml", content=text.encode(), headers={"Content-Type": "application/yaml"})
    assert res.status_code == 422 and needle in res.json()["detail"], res.text


def test_a_config_file_is_validated_like_a_run(client, dataset):
    body = _body(dataset["id"])
    body["training"]["batch_size"] = 0
    body["columns"]["label"] = "nope"
    res = client.post("/api/runs/yaml", content=yaml.safe_dump(body).encode(),
                      headers={"Content-Type": "application/yaml"})
    assert res.status_code == 422
    assert ["body", "training", "batch_size"] in [e["loc"] for e in res.json()["detail"]]
    body["training"]["batch_size"] = 4
    res = client.post("/api/runs/yaml", content=yaml.safe_dump(body).encode())
    assert res.status_code == 422 and "'nope' is not in the dataset" in res.text


def test_another_users_run_config_is_not_found(client, client_as, dataset):
    run = client.post("/api/runs", json=_body(dataset["id"])).json()
    assert client_as("yaml-bob").get(f"/api/runs/{run['id']}/config.yaml").status_code == 404
