"""The model card's base-model reference and text, without training (workers.model_card)."""
from app.models.service import BUNDLED_SOURCE
from app.runs.schemas import RunCreate
from workers.model_card import BUNDLED_HUB_ID, CardFacts, base_reference, render_card


def test_the_base_model_is_named_so_another_machine_can_find_it(tmp_path):
    assert base_reference("minilm-l6", BUNDLED_SOURCE) == (BUNDLED_HUB_ID, True)
    assert base_reference("gpt2-small", "openai-community/gpt2") == ("openai-community/gpt2", True)
    assert base_reference("my-bert", str(tmp_path)) == ("my-bert", False)  # a server directory: its name


def _facts(task="classification", method=None, labels=("neg", "pos")) -> CardFacts:
    config = RunCreate.model_validate({
        "name": "x", "dataset_id": 3, "base_model": "minilm-l6", "task": task,
        "columns": {"text": "text", "label": "label"} if task == "classification" else {"text": "text"},
        "method": method or {"type": "lora", "r": 8}, "training": {"learning_rate": 5e-4, "max_steps": 100}})
    return CardFacts(run_id=12, run_name="sst2 lora", config=config, base_reference=BUNDLED_HUB_ID,
                     base_is_hub_id=True, dataset_name="sst2.csv",
                     summary={"train_examples": 1800, "eval_examples": 200, "steps": 100, "trainable_params": 1000,
                              "total_params": 100000, "eval": {"accuracy": 0.875, "f1": 0.87, "loss": 0.31,
                                                               "perplexity": None}},
                     labels=list(labels) if labels else None)


def test_a_lora_card_says_how_to_load_it():
    card = render_card(_facts(), kind="adapter", is_peft=True, is_whole_model=False)
    assert card.startswith(f"---\nbase_model: {BUNDLED_HUB_ID}\nlibrary_name: peft\n")
    assert "| dataset | sst2.csv: 1,800 training and 200 evaluation examples |" in card
    assert "| accuracy | 0.8750 |" in card and "perplexity" not in card
    assert "1,000 of 100,000 (1.00 %)" in card
    assert "num_labels=2, id2label={0: 'neg', 1: 'pos'}" in card
    assert 'peftlab.load("peftlab-run-12-adapter")' in card  # the bundled base needs no base=
    assert "0 = `neg`, 1 = `pos`" in card


def test_in_house_and_causal_lm_cards():
    card = render_card(_facts(method={"type": "adapter"}), kind="adapter", is_peft=False, is_whole_model=False)
    assert "PeftModel" not in card and "ADAPTER_FORMAT.md" in card and "library_name" not in card
    card = render_card(_facts(task="causal_lm", labels=None), kind="adapter", is_peft=True, is_whole_model=False)
    assert "AutoModelForCausalLM" in card and "num_labels" not in card and "## Labels" not in card


def test_the_last_step_adapter_says_what_it_is():
    card = render_card(_facts(), kind="adapter_last", is_peft=True, is_whole_model=False)
    assert "weights at its last step" in card and "| accuracy |" not in card
    assert 'peftlab.load("peftlab-run-12-adapter_last")' in card
