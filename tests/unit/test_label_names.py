"""columns.label_names: AG News labels 1–4 become World, Sports, Business, Sci/Tech wherever a run shows
or saves its classes (the labels the worker builds, so metrics, predictions, peftlab.json, id2label)."""
import json

import pytest

from app.runs.label_names import LabelNamesError, name_map, natural_order
from app.runs.schemas import Columns, RunCreate
from tests.tiny_models import make_tiny_bert
from workers.model_loading import load_tokenizer
from workers.training.data import prepare_data
from workers.training.reporting import MemoryReporter

AG = ["World", "Sports", "Business", "Sci/Tech"]


def test_the_list_form_names_values_in_natural_order():
    assert natural_order(["10", "2", "1"]) == ["1", "2", "10"]  # numbers as numbers
    assert natural_order(["b", "a", "10"]) == ["10", "a", "b"]
    assert name_map(AG, ["3", "1", "4", "2"]) == {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}
    with pytest.raises(LabelNamesError, match=r"3 class names for 4 label values \('1', '2', '3', '4'\)"):
        name_map(AG[:3], ["1", "2", "3", "4"])


def test_the_mapping_form_must_name_every_value():
    assert name_map({"1": "World", "2": "Sports", "9": "unused"}, ["2", "1"]) == {"1": "World", "2": "Sports"}
    with pytest.raises(LabelNamesError, match=r"no class name for the label value\(s\) '3'"):
        name_map({"1": "World", "2": "Sports"}, ["1", "2", "3"])


def _rows(n=40):
    return [{"text": f"item {i} {'ball' if i % 4 == 1 else 'vote'}", "label": str(1 + i % 4)} for i in range(n)]


def test_prepared_labels_are_the_names_in_id_order(tmp_path):
    tokenizer = load_tokenizer(str(make_tiny_bert(tmp_path / "bert")))
    data = prepare_data(_rows(), None, task="classification", tokenizer=tokenizer, max_length=16, eval_fraction=0.2,
                        seed=0, columns=Columns(text="text", label="label", label_names=AG))
    assert data.labels == AG
    named = prepare_data(_rows(), None, task="classification", tokenizer=tokenizer, max_length=16, eval_fraction=0.2,
                         seed=0, columns=Columns(text="text", label="label", label_names={"1": "W", "2": "S", "3": "B", "4": "T"}))
    assert named.labels == ["W", "S", "B", "T"] and [e.target for e in named.train] == [e.target for e in data.train]
    with pytest.raises(ValueError, match="no class name"):
        prepare_data(_rows(), None, task="classification", tokenizer=tokenizer, max_length=16, eval_fraction=0.2,
                     seed=0, columns=Columns(text="text", label="label", label_names={"1": "W"}))


def test_a_tiny_run_saves_and_predicts_class_names(peftlab_env, tmp_path):
    from workers import tasks
    from workers.training.checkpoints import load_trained

    source = str(make_tiny_bert(tmp_path / "bert"))
    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "classification", "eval_fraction": 0.25,
        "columns": {"text": "text", "label": "label", "label_names": AG}, "method": {"type": "lora", "r": 4},
        "training": {"learning_rate": 0.01, "max_steps": 4, "batch_size": 8, "eval_every": 4, "max_length": 16}})
    summary, artifacts = tasks.fine_tune(config, _rows(), None, source, MemoryReporter(),
                                         artifact_dir=lambda kind: tmp_path / "out" / kind)
    meta = json.loads((artifacts["adapter"] / "peftlab.json").read_text())
    assert meta["labels"] == AG
    predictions = [json.loads(line) for line in artifacts["predictions"].read_text().splitlines()]
    assert predictions and all(p["label"] in AG and p["prediction"] in AG for p in predictions)
    model, _, _ = load_trained(artifacts["adapter"], source)  # what Try it and the Playground load
    assert model.config.id2label == dict(enumerate(AG))
