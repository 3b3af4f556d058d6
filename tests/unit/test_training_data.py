"""Rows → examples → batches: splits, labels, prompt masking, truncation, dynamic padding."""
import pytest

from app.runs.schemas import Columns
from tests.tiny_models import make_tiny_bert, make_tiny_gpt2, make_tiny_llama, opposite_rows, sentiment_rows
from workers.model_loading import load_tokenizer
from workers.training.data import IGNORE_INDEX, collate, label_list, prepare_data, split_indices


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-tokenizers")
    return {"bert": load_tokenizer(str(make_tiny_bert(root / "bert"))),
            "gpt2": load_tokenizer(str(make_tiny_gpt2(root / "gpt2"))),
            "llama": load_tokenizer(str(make_tiny_llama(root / "llama")))}


def test_split_is_deterministic_disjoint_and_complete():
    train, held = split_indices(100, 0.2, seed=7)
    assert (train, held) == split_indices(100, 0.2, seed=7)
    assert len(held) == 20 and len(train) == 80
    assert sorted(train + held) == list(range(100))
    assert split_indices(100, 0.2, seed=8)[1] != held
    assert split_indices(100, 0.0, seed=7) == (list(range(100)), [])
    # The server's rounding (app/runs/checks.py): what it accepts splits the same, what it refuses fails here.
    assert len(split_indices(30, 0.05, seed=7)[1]) == round(30 * 0.05) == 2
    with pytest.raises(ValueError, match="leaves no eval rows"):
        split_indices(20, 0.01, seed=7)


def test_labels_are_sorted_distinct_strings():
    rows = [{"y": 2}, {"y": 10}, {"y": 1}, {"y": 2}]
    assert label_list(rows, "y") == ["1", "10", "2"]


def test_single_class_label_column_is_a_clear_error(tokenizers):
    rows = [{"text": "good movie", "label": "pos"}] * 10
    with pytest.raises(ValueError, match="label column 'label' has 1 distinct value"):
        prepare_data(rows, None, task="classification", columns=Columns(text="text", label="label"),
                     tokenizer=tokenizers["bert"], max_length=16, eval_fraction=0.2, seed=0)


def test_missing_column_names_it_and_the_available_ones(tokenizers):
    with pytest.raises(ValueError, match=r"column 'sentence' is not in the training dataset.*'text', 'label'"):
        prepare_data(sentiment_rows(20), None, task="classification", columns=Columns(text="sentence", label="label"),
                     tokenizer=tokenizers["bert"], max_length=16, eval_fraction=0.2, seed=0)


def test_eval_dataset_with_unknown_labels_is_rejected(tokenizers):
    eval_rows = [{"text": "good", "label": "positive"}]
    with pytest.raises(ValueError, match="labels the training dataset never shows"):
        prepare_data(sentiment_rows(20), eval_rows, task="classification", columns=Columns(text="text", label="label"),
                     tokenizer=tokenizers["bert"], max_length=16, eval_fraction=0.2, seed=0)


def test_classification_examples_keep_row_index_and_label_id(tokenizers):
    rows = sentiment_rows(50)
    data = prepare_data(rows, None, task="classification", columns=Columns(text="text", label="label"),
                        tokenizer=tokenizers["bert"], max_length=16, eval_fraction=0.2, seed=0)
    assert data.labels == ["neg", "pos"]
    assert len(data.train) == 40 and len(data.eval) == 10
    for e in data.train + data.eval:
        assert data.labels[e.target] == rows[e.row]["label"]
        assert e.input_ids[0] == tokenizers["bert"].cls_token_id and e.token_type_ids is None
    assert {e.row for e in data.train}.isdisjoint({e.row for e in data.eval})


def test_text_pairs_carry_segment_ids_for_bert(tokenizers):
    rows = [{"a": "good movie", "b": "bad film", "label": str(i % 2)} for i in range(4)]
    data = prepare_data(rows, rows, task="classification", columns=Columns(text="a", text_pair="b", label="label"),
                        tokenizer=tokenizers["bert"], max_length=16, eval_fraction=0.0, seed=0)
    e = data.train[0]
    assert e.token_type_ids == [0, 0, 0, 0, 1, 1, 1]  # [CLS] good movie [SEP] | bad film [SEP]
    batch = collate(data.train, pad_id=0)
    assert "token_type_ids" in batch.inputs


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_prompt_tokens_get_no_loss_and_response_plus_eos_does(tokenizers, name):
    tok = tokenizers[name]
    rows = [{"prompt": "the opposite of up is :", "response": "down ."}]
    data = prepare_data(rows, rows, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tok, max_length=64, eval_fraction=0.0, seed=0)
    e = data.train[0]
    prompt_len = len(tok("the opposite of up is :")["input_ids"])  # includes <s> for Llama
    assert e.target[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert e.target[prompt_len:] == e.input_ids[prompt_len:]
    assert tok.decode(e.input_ids[prompt_len:]).split() == ["down", ".", tok.eos_token]
    assert e.num_targets == 3  # "down", ".", EOS: each predicted from the token before
    if name == "llama":
        assert e.input_ids[0] == tok.bos_token_id


def test_plain_text_trains_on_every_token_and_ends_with_eos(tokenizers):
    tok = tokenizers["gpt2"]
    data = prepare_data([{"text": "good movie"}], [{"text": "bad film"}], task="causal_lm",
                        columns=Columns(text="text"), tokenizer=tok, max_length=16, eval_fraction=0.0, seed=0)
    e = data.train[0]
    assert e.input_ids[-1] == tok.eos_token_id
    assert e.target == e.input_ids and e.num_targets == len(e.input_ids) - 1


def test_long_prompts_are_cut_so_the_response_still_fits(tokenizers):
    tok = tokenizers["llama"]
    rows = [{"prompt": " ".join(["cat"] * 50), "response": "dog dog dog"}]
    data = prepare_data(rows, rows, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tok, max_length=12, eval_fraction=0.0, seed=0)
    e = data.train[0]
    assert len(e.input_ids) == 12
    assert e.input_ids[0] == tok.bos_token_id
    assert tok.decode([t for t in e.target if t != IGNORE_INDEX]).split() == ["dog", "dog", "dog", "</s>"]


def test_batches_pad_to_their_longest_example_not_max_length(tokenizers):
    tok = tokenizers["gpt2"]
    rows = [{"prompt": "say", "response": "yes"}, {"prompt": "say the color of the sun", "response": "red ."}]
    data = prepare_data(rows, rows, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tok, max_length=128, eval_fraction=0.0, seed=0)
    batch = collate(data.train, pad_id=tok.pad_token_id)
    longest = max(len(e.input_ids) for e in data.train)
    assert batch.inputs["input_ids"].shape == (2, longest) and longest < 128
    short = len(data.train[0].input_ids)
    assert batch.inputs["attention_mask"][0].tolist() == [1] * short + [0] * (longest - short)
    assert batch.labels[0, short:].eq(IGNORE_INDEX).all()
    assert batch.num_tokens == sum(len(e.input_ids) for e in data.train)
    assert batch.num_targets == sum(e.num_targets for e in data.train)


def test_causal_lm_rows_from_the_generator_are_all_trainable(tokenizers):
    data = prepare_data(opposite_rows(30), None, task="causal_lm", columns=Columns(prompt="prompt", response="response"),
                        tokenizer=tokenizers["llama"], max_length=32, eval_fraction=0.1, seed=0)
    assert len(data.eval) == 3 and all(e.num_targets == 3 for e in data.train + data.eval)
    assert tokenizers["llama"].unk_token_id not in {t for e in data.train for t in e.input_ids}


def test_the_first_response_word_is_trained_with_byte_level_tokenizers():
    """GPT-2's byte-level BPE gives " red" an offset that starts at the space before the response:
    that token is the first response token, not the prompt's last (it must carry a loss)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["color: red", "color: blue", "sky is blue", "rose is red"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    rows = [{"q": "color:", "a": "red"}] * 4
    data = prepare_data(rows, None, task="causal_lm", columns=Columns(prompt="q", response="a"), tokenizer=tokenizer,
                        max_length=32, eval_fraction=0.0, seed=0)
    example = data.train[0]
    trained = [t for t in example.target if t != IGNORE_INDEX]
    assert tokenizer.decode(trained[:-1]).strip() == "red"  # the answer, then EOS
    assert trained[-1] == tokenizer.eos_token_id
