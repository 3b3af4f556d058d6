"""Repeats (k seeds per configuration), budgets in experiments, and GET /api/compare's groups and
differences on runs written straight into the database (no training)."""
from datetime import timedelta

import pytest
from scipy import stats as scipy_stats

from app.datasets.models import Dataset
from app.db import session_scope, utcnow
from app.metrics.service import record_points
from app.runs.models import Run
from tests.api.conftest import upload_reviews


@pytest.fixture
def dataset(client):
    ds = upload_reviews(client, "repeat-reviews.csv")
    with session_scope() as s:
        ds["project_id"] = s.get(Dataset, ds["id"]).project_id
    return ds


def _create(client, made, body) -> dict:
    res = client.post("/api/experiments", json=body)
    assert res.status_code == 201, res.text
    made.append(res.json()["id"])
    return res.json()


def methods_body(dataset_id, **over):
    return {"kind": "methods", "name": "seeds", "dataset_id": dataset_id, "base_model": "minilm-l6",
            "columns": {"text": "sentence", "label": "label"}, "methods": ["lora", "prompt"],
            "training": {"max_steps": 5, "batch_size": 4}, **over}


def base_config(dataset_id, **training):
    return {"name": "lora base", "dataset_id": dataset_id, "base_model": "minilm-l6",
            "columns": {"text": "sentence", "label": "label"}, "method": {"type": "lora"},
            "training": {"max_steps": 5, **training}}


# ---- repeats ------------------------------------------------------------------------------------

def test_repeats_run_every_method_with_k_seeds_on_the_same_eval_rows(client, dataset, made):
    x = _create(client, made, methods_body(dataset["id"], repeats=3))
    assert x["run_count"] == 6 and x["spec"]["repeats"] == 3
    by_method: dict[str, list] = {}
    for run in x["runs"]:
        by_method.setdefault(run["method"], []).append(run)
    for method, runs in by_method.items():
        assert [r["config"]["training"]["seed"] for r in runs] == [0, 1, 2]
        assert {r["config"]["eval_split_seed"] for r in runs} == {0}  # one held-out set for every seed
        assert [r["name"] for r in runs] == [f"seeds · {method} · seed {i}" for i in range(3)]

    compared = client.get(f"/api/compare?runs={','.join(str(r['id']) for r in x['runs'])}").json()
    assert [sorted(g["run_ids"]) for g in compared["groups"]] == [sorted(r["id"] for r in by_method[m])
                                                                    for m in ("lora", "prompt")]
    assert [g["label"] for g in compared["groups"]] == ["seeds · lora", "seeds · prompt"]
    assert compared["groups"][0]["seeds"] == [0, 1, 2]
    assert compared["groups"][0]["metrics"] == {}  # queued runs have no numbers yet
    assert compared["differences"] == []


def test_a_grid_repeats_each_combination_from_its_base_seed(client, dataset, made):
    body = {"kind": "grid", "name": "r", "base": base_config(dataset["id"], seed=7), "grid": {"method.r": [4, 8]},
            "repeats": 2}
    x = _create(client, made, body)
    assert [(r["config"]["method"]["r"], r["config"]["training"]["seed"]) for r in x["runs"]] == \
        [(4, 7), (4, 8), (8, 7), (8, 8)]
    assert {r["config"]["eval_split_seed"] for r in x["runs"]} == {7}
    assert x["runs"][1]["name"] == "r · method.r=4 · seed 8"


def test_an_empty_grid_with_repeats_is_the_new_run_forms_repeat(client, dataset, made):
    x = _create(client, made, {"kind": "grid", "name": "lora base", "base": base_config(dataset["id"]), "grid": {},
                               "repeats": 4})
    assert [r["name"] for r in x["runs"]] == [f"lora base · seed {i}" for i in range(4)]
    configs = [dict(r["config"], name=None, training={**r["config"]["training"], "seed": None}) for r in x["runs"]]
    assert all(c == configs[0] for c in configs)  # nothing but the seed differs


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"repeats": 11}, "repeats", "less than or equal to 10"),
    ({"repeats": 0}, "repeats", "greater than or equal to 1"),
    ({"methods": ["lora", "prompt", "full", "adapter", "ia3", "bitfit", "vera", "ln_tuning"], "repeats": 9},
     None, "at most 64"),
])
def test_bad_repeats_are_refused_at_submit(client, dataset, body, field, words):
    before = len(client.get("/api/runs").json())
    res = client.post("/api/experiments", json=methods_body(dataset["id"], **body))
    assert res.status_code == 422
    assert words in str(res.json()["detail"])
    assert len(client.get("/api/runs").json()) == before


def test_an_empty_grid_needs_repeats_and_a_seed_grid_excludes_them(client, dataset):
    res = client.post("/api/experiments", json={"kind": "grid", "name": "x", "base": base_config(dataset["id"]), "grid": {}})
    assert res.status_code == 422 and "empty grid makes one run" in res.text
    res = client.post("/api/experiments", json={"kind": "grid", "name": "x", "base": base_config(dataset["id"]),
                                                "grid": {"training.seed": [1, 2]}, "repeats": 2})
    assert res.status_code == 422 and "not both" in res.text
    res = client.post("/api/experiments", json={"kind": "grid", "name": "x", "grid": {}, "repeats": 2,
                                                "base": base_config(dataset["id"], seed="seven")})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "base", "training", "seed"]


# ---- budgets ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "field"), [("tokens", "max_tokens"), ("seconds", "max_seconds"), ("steps", "max_steps")])
def test_a_budget_gives_every_method_the_same_limit(client, dataset, made, kind, field):
    x = _create(client, made, methods_body(dataset["id"], training={"batch_size": 4},
                                           budget={"kind": kind, "amount": 5000}))
    for run in x["runs"]:
        training = run["config"]["training"]
        assert training[field] == 5000
        # tokens / seconds: the budget, not the first epoch's end, stops the run
        assert training["epochs"] == (1 if kind == "steps" else 1000)
    assert x["spec"]["budget"] == {"kind": kind, "amount": 5000}


def test_a_budget_and_a_limit_in_training_are_refused(client, dataset):
    res = client.post("/api/experiments", json=methods_body(dataset["id"], budget={"kind": "tokens", "amount": 100}))
    assert res.status_code == 422 and "max_steps" in res.text  # methods_body's training sets max_steps
    res = client.post("/api/experiments", json=methods_body(dataset["id"], budget={"kind": "flops", "amount": 100}))
    assert res.status_code == 422


def test_run_budgets_are_validated(client, dataset):
    res = client.post("/api/runs", json=base_config(dataset["id"], max_tokens=0))
    assert res.status_code == 422 and "max_tokens" in res.text
    res = client.post("/api/runs", json=base_config(dataset["id"], max_seconds=-5))
    assert res.status_code == 422 and "max_seconds" in res.text


# ---- groups and differences in GET /api/compare --------------------------------------------------

LORA = [0.84, 0.86, 0.83, 0.87, 0.85]
PROMPT = [0.80, 0.83, 0.79, 0.84, 0.81]  # seed by seed 0.02–0.04 behind LoRA


@pytest.fixture
def seeded_runs(client, dataset):
    """make(method, seed, accuracy, eval_split_seed=0, r=8) → a succeeded run whose eval/accuracy series ends
    at `accuracy` after peaking 0.01 higher."""
    made: list[int] = []

    def make(method, seed, accuracy, *, eval_split_seed=0, r=8, loss=None):
        config = {"name": f"{method} · seed {seed}", "dataset_id": dataset["id"], "eval_dataset_id": None,
                  "eval_fraction": 0.25, "eval_split_seed": eval_split_seed, "base_model": "minilm-l6",
                  "task": "classification", "columns": {"text": "sentence", "label": "label"},
                  "method": {"type": method, **({"r": r} if method == "lora" else {})},
                  "training": {"learning_rate": 0.001, "epochs": 1, "seed": seed}}
        started = utcnow() - timedelta(hours=1)
        with session_scope() as s:
            run = Run(name=config["name"], status="succeeded", config=config, dataset_id=dataset["id"],
                      summary={"trainable_params": 1000 if method == "lora" else 100,
                               "eval": {"accuracy": accuracy, "loss": loss}},
                      base_model="minilm-l6", method=method, task="classification", project_id=dataset["project_id"],
                      started_at=started, finished_at=started + timedelta(seconds=30))
            s.add(run)
            s.flush()
            record_points(s, run.id, [("eval/accuracy", 10, accuracy + 0.01, 1.0), ("eval/accuracy", 20, accuracy, 2.0)])
            made.append(run.id)
            return run.id

    yield make
    for run_id in made:
        client.delete(f"/api/runs/{run_id}")


def _compare(client, ids, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    res = client.get(f"/api/compare?runs={','.join(map(str, ids))}{'&' + query if query else ''}")
    assert res.status_code == 200, res.text
    return res.json()


def test_groups_carry_the_mean_and_95_interval_of_final_and_best_metrics(client, seeded_runs):
    lora = [seeded_runs("lora", seed, acc) for seed, acc in enumerate(LORA)]
    prompt = [seeded_runs("prompt", seed, acc) for seed, acc in enumerate(PROMPT)]
    body = _compare(client, lora + prompt)
    assert len(body["runs"]) == 10 and set(body["series"]) == {str(i) for i in lora + prompt}  # today's fields stay
    lora_group, prompt_group = body["groups"]
    assert lora_group["run_ids"] == lora and prompt_group["run_ids"] == prompt
    assert lora_group["label"] == "lora" and lora_group["trainable_params"] == 1000
    acc = lora_group["metrics"]["eval/accuracy"]
    lo, hi = scipy_stats.t.interval(0.95, 4, loc=sum(LORA) / 5, scale=scipy_stats.sem(LORA))
    assert acc["n"] == 5 and acc["mean"] == pytest.approx(0.85)
    assert (acc["ci_low"], acc["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert (acc["min"], acc["max"]) == (0.83, 0.87)
    assert lora_group["best_metrics"]["eval/accuracy"]["mean"] == pytest.approx(0.86)  # each seed peaked 0.01 higher
    assert "eval/loss" not in lora_group["metrics"]  # no run has it


def test_a_difference_between_groups_with_shared_seeds_is_paired(client, seeded_runs):
    lora = [seeded_runs("lora", seed, acc) for seed, acc in enumerate(LORA)]
    prompt = [seeded_runs("prompt", seed, acc) for seed, acc in enumerate(PROMPT)]
    body = _compare(client, prompt + lora)  # the worse group first: a difference names the better one first
    assert body["metric"] == "eval/accuracy"
    [d] = body["differences"]
    expected = scipy_stats.ttest_rel(LORA, PROMPT)
    assert d["test"] == "paired" and (d["a"], d["b"]) == (1, 0)
    assert (d["a_label"], d["b_label"]) == ("lora", "prompt")
    assert d["difference"] == pytest.approx(0.036) and d["p_value"] == pytest.approx(expected.pvalue)
    lo, hi = expected.confidence_interval(0.95)
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    assert d["distinguishable"] is True and d["n_a"] == d["n_b"] == 5
    assert d["text"].startswith("lora is 3.6 ± ") and "points better than prompt in eval accuracy" in d["text"]
    assert "paired t-test, 5 seeds each" in d["text"]


def test_groups_on_different_eval_rows_get_welchs_test(client, seeded_runs):
    lora = [seeded_runs("lora", seed, acc, eval_split_seed=1) for seed, acc in enumerate(LORA)]
    prompt = [seeded_runs("prompt", seed + 10, acc) for seed, acc in enumerate(PROMPT[:4])]
    [d] = _compare(client, lora + prompt)["differences"]
    expected = scipy_stats.ttest_ind(LORA, PROMPT[:4], equal_var=False)
    assert d["test"] == "welch" and d["p_value"] == pytest.approx(expected.pvalue)
    assert (d["n_a"], d["n_b"]) == (5, 4) and "5 and 4 seeds" in d["text"]


def test_a_difference_within_noise_says_so(client, seeded_runs):
    a = [seeded_runs("lora", seed, acc) for seed, acc in enumerate([0.80, 0.90, 0.85])]
    b = [seeded_runs("lora", seed, acc, r=4) for seed, acc in enumerate([0.84, 0.82, 0.86])]
    [d] = _compare(client, a + b)["differences"]
    assert d["distinguishable"] is False and d["p_value"] > 0.05
    assert "cannot be told apart" in d["text"] and "within noise" in d["text"]
    assert d["ci_low"] < 0 < d["ci_high"]


def test_loss_differences_count_lower_as_better(client, seeded_runs):
    a = [seeded_runs("lora", s, 0.8, loss=v) for s, v in enumerate([0.30, 0.32, 0.31])]
    b = [seeded_runs("prompt", s, 0.8, loss=v) for s, v in enumerate([0.50, 0.55, 0.52])]
    [d] = _compare(client, b + a, metric="eval/loss")["differences"]
    assert d["a_label"] == "lora" and d["difference"] == pytest.approx(0.2133, abs=1e-3) and d["difference"] > 0
    assert "lower than prompt in eval loss" in d["text"]
    assert client.get(f"/api/compare?runs={a[0]}&metric=eval/bogus").status_code == 422


def test_single_runs_form_groups_of_one_without_differences(client, seeded_runs):
    a, b = seeded_runs("lora", 0, 0.8), seeded_runs("prompt", 0, 0.7)
    body = _compare(client, [a, b])
    assert [g["run_ids"] for g in body["groups"]] == [[a], [b]]
    acc = body["groups"][0]["metrics"]["eval/accuracy"]
    assert acc["n"] == 1 and acc["ci_low"] is None and acc["mean"] == 0.8
    assert body["differences"] == []


def test_identical_seeds_have_a_zero_width_interval(client, seeded_runs):
    ids = [seeded_runs("lora", 0, 0.8), seeded_runs("lora", 1, 0.8)]
    acc = _compare(client, ids)["groups"][0]["metrics"]["eval/accuracy"]
    assert acc["std"] == 0.0 and acc["ci_low"] == acc["ci_high"] == pytest.approx(0.8)
