"""Early stopping and checkpoint settings are checked at submit: a clear 422 for what cannot work."""
import pytest

from tests.api.test_runs_api import config, created, dataset  # noqa: F401 — shared fixtures


@pytest.mark.parametrize("over, message", [
    ({"training": {"early_stopping_patience": 3}}, "early_stopping_patience needs training.metric_for_best"),
    ({"training": {"metric_for_best": "eval/perplexity"}}, "eval/perplexity is only measured for causal_lm runs; this is a classification run"),
    ({"task": "causal_lm", "columns": {"text": "sentence"}, "training": {"metric_for_best": "eval/accuracy"}},
     "eval/accuracy is only measured for classification runs"),
    ({"task": "causal_lm", "columns": {"text": "sentence"}, "training": {"metric_for_best": "eval/f1"}},
     "eval/f1 is only measured for classification runs"),
    ({"eval_fraction": 0, "training": {"metric_for_best": "eval/loss"}}, "needs evaluation data"),
    ({"training": {"metric_for_best": "train/loss"}}, "eval/loss"),
    ({"training": {"checkpoint_every": -1}}, "greater than or equal to 0"),
    ({"training": {"metric_for_best": "eval/loss", "early_stopping_patience": 0}}, "greater than or equal to 1"),
])
def test_bad_early_stopping_settings_are_422(client, dataset, over, message):  # noqa: F811
    res = client.post("/api/runs", json=config(dataset["id"], **over))
    assert res.status_code == 422 and message in res.text, res.text
    assert any(e["loc"][:2] == ["body", "training"] and len(e["loc"]) == 3 for e in res.json()["detail"]), res.text


def test_early_stopping_settings_are_kept(client, dataset, created):  # noqa: F811
    res = client.post("/api/runs", json=config(dataset["id"], training={
        "metric_for_best": "eval/f1", "early_stopping_patience": 2, "checkpoint_every": 0}))
    assert res.status_code == 201, res.text
    created.append(res.json()["id"])
    training = res.json()["config"]["training"]
    assert (training["metric_for_best"], training["early_stopping_patience"], training["checkpoint_every"]) == ("eval/f1", 2, 0)
    defaults = client.post("/api/runs", json=config(dataset["id"])).json()
    created.append(defaults["id"])
    assert defaults["config"]["training"]["checkpoint_every"] is None  # about every 5 minutes
    assert defaults["config"]["training"]["metric_for_best"] is None
    assert client.get(f"/api/runs/{defaults['id']}/adapter", params={"which": "best"}).status_code == 404
    assert client.get(f"/api/runs/{defaults['id']}/adapter", params={"which": "bogus"}).status_code == 422
