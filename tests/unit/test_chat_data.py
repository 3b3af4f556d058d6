"""Chat data: exactly the assistant tokens (and their end-of-turn marker) carry loss, with a GPT-2-style
byte-level BPE tokenizer and a Llama-style SentencePiece tokenizer, both trained here offline."""
import json
from pathlib import Path

import pytest
from tokenizers import SentencePieceBPETokenizer, decoders
from tokenizers.implementations import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

from app.runs.conversations import ConversationError, parse_turns, preview_problem
from app.runs.schemas import Columns
from workers.training.chat import CHATML_END, end_of_turn, template_for
from workers.training.data import IGNORE_INDEX, prepare_data

CHAT = Path(__file__).parents[2] / "examples" / "chat.jsonl"
ROWS = [json.loads(line) for line in CHAT.read_text().splitlines() if line.strip()]
CONVERSATION = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the capital of Poland?"},
    {"role": "assistant", "content": "The capital of Poland is Warsaw."},
    {"role": "user", "content": "And how many letters does that name have?"},
    {"role": "assistant", "content": "Warsaw has 6 letters."},
]
# Llama-2's chat template, in short: [INST] … [/INST] answer </s>, the system prompt inside the first [INST].
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def corpus():
    for row in ROWS:
        for turn in row["messages"]:
            yield turn["content"]
    for turn in CONVERSATION:
        yield turn["content"]
    yield "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n[INST] <<SYS>> [/INST]"


@pytest.fixture(scope="module")
def gpt2_style(tmp_path_factory) -> PreTrainedTokenizerFast:
    """Byte-level BPE like GPT-2: no chat template, <|endoftext|> only, adds no special tokens."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>", bos_token="<|endoftext|>")
    return tok


@pytest.fixture(scope="module")
def llama_style() -> PreTrainedTokenizerFast:
    """SentencePiece BPE (Metaspace ▁) like Llama: <s>, </s>, and Llama-2's chat template."""
    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(corpus(), vocab_size=400, min_frequency=1, special_tokens=["<unk>", "<s>", "</s>"])
    sp._tokenizer.decoder = decoders.Metaspace()
    tok = PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.chat_template = LLAMA2_TEMPLATE
    return tok


def learned(tok, columns: Columns, rows: list[dict], max_length: int = 512):
    data = prepare_data(rows, None, task="causal_lm", columns=columns, tokenizer=tok, max_length=max_length,
                        eval_fraction=0, seed=0)
    return data.train


def learned_segments(tok, example) -> list[str]:
    """The decoded runs of consecutive tokens that carry loss."""
    segments, current = [], []
    for t, label in zip(example.input_ids, example.target):
        if label != IGNORE_INDEX:
            assert label == t
            current.append(t)
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return [tok.decode(s) for s in segments]


def test_gpt2_style_chatml_fallback_learns_assistant_turns_only(gpt2_style):
    assert template_for(gpt2_style, "auto").startswith("{% for message")  # no own template: ChatML
    [example] = learned(gpt2_style, Columns(messages="messages"), [{"messages": CONVERSATION}])
    assert learned_segments(gpt2_style, example) == [
        "The capital of Poland is Warsaw." + CHATML_END, "Warsaw has 6 letters." + CHATML_END]
    # And every other token is prompt: the whole text round-trips and the labelled ones are exactly those.
    full = gpt2_style.decode(example.input_ids)
    assert full.startswith("<|im_start|>system\nYou are a concise assistant.<|im_end|>\n")
    assert example.num_targets == sum(1 for t in example.target[1:] if t != IGNORE_INDEX) > 0


def test_llama_style_own_template_learns_assistant_turns_and_eos(llama_style):
    [example] = learned(llama_style, Columns(messages="messages"), [{"messages": CONVERSATION}])
    segments = learned_segments(llama_style, example)
    assert [s.strip() for s in segments] == ["The capital of Poland is Warsaw. </s>", "Warsaw has 6 letters. </s>"]
    eos = llama_style.eos_token_id
    assert example.input_ids.count(eos) == 2
    assert all(label == eos for t, label in zip(example.input_ids, example.target) if t == eos)
    bos = llama_style.bos_token_id
    assert example.input_ids[0] == bos and example.target[0] == IGNORE_INDEX
    assert all(label == IGNORE_INDEX for t, label in zip(example.input_ids, example.target) if t == bos)


def test_llama_style_chatml_when_asked(llama_style):
    [example] = learned(llama_style, Columns(messages="messages", chat_template="chatml"), [{"messages": CONVERSATION}])
    assert [s.replace(" ", "") for s in learned_segments(llama_style, example)] == [
        "ThecapitalofPolandisWarsaw.<|im_end|>", "Warsawhas6letters.<|im_end|>"]


def test_sharegpt_and_alpaca_map_onto_the_same_conversation(gpt2_style):
    sharegpt = [{"conversations": [{"from": "system", "value": t["content"]} if t["role"] == "system" else
                                   {"from": "human" if t["role"] == "user" else "gpt", "value": t["content"]}
                                   for t in CONVERSATION]}]
    [as_messages] = learned(gpt2_style, Columns(messages="messages"), [{"messages": CONVERSATION}])
    [as_sharegpt] = learned(gpt2_style, Columns(messages="conversations"), sharegpt)
    assert (as_sharegpt.input_ids, as_sharegpt.target) == (as_messages.input_ids, as_messages.target)

    alpaca = [{"instruction": "Name the capital.", "input": "Poland", "output": "Warsaw."}]
    [example] = learned(gpt2_style, Columns(prompt="instruction", input="input", response="output",
                                            chat_template="auto"), alpaca)
    assert gpt2_style.decode(example.input_ids).startswith("<|im_start|>user\nName the capital.\n\nPoland<|im_end|>")
    assert learned_segments(gpt2_style, example) == ["Warsaw." + CHATML_END]


def test_the_sample_dataset_trains_on_every_assistant_turn(gpt2_style, llama_style):
    for tok in (gpt2_style, llama_style):
        examples = learned(tok, Columns(messages="messages"), ROWS)
        for row, example in zip(ROWS, examples):
            answers = [t["content"] for t in row["messages"] if t["role"] == "assistant"]
            segments = learned_segments(tok, example)
            assert len(segments) == len(answers)
            for answer, segment in zip(answers, segments):
                assert answer.replace(" ", "") in segment.replace(" ", "")


def test_too_long_keeps_an_assistant_turn(gpt2_style):
    long_user = {"role": "user", "content": "What is the capital of Poland? " * 40}
    turns = [long_user, {"role": "assistant", "content": "Warsaw."}]
    [example] = learned(gpt2_style, Columns(messages="messages"), [{"messages": turns}], max_length=32)
    assert len(example.input_ids) == 32
    assert learned_segments(gpt2_style, example) == ["Warsaw." + CHATML_END]


def test_end_of_turn_marker(gpt2_style, llama_style):
    assert end_of_turn(gpt2_style, template_for(gpt2_style, "auto")) == CHATML_END
    assert end_of_turn(llama_style, template_for(llama_style, "auto")) == "</s>"


@pytest.mark.parametrize("cell, words", [
    ("just text", "holds text"),
    ([], "empty list"),
    ([{"role": "user", "content": "hi"}], "no assistant turn"),
    ([{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}], "'robot'"),
    ([{"text": "hi"}], "no 'role'"),
    (["hi"], "turn 0 is a str"),
    ([{"role": "assistant", "content": None}], "no text content"),
])
def test_bad_chat_cells_are_named(cell, words):
    with pytest.raises(ConversationError, match=words):
        parse_turns(cell, "messages")
    assert words in preview_problem([{"messages": cell}], "messages")


def test_a_cell_cut_in_the_preview_is_not_judged():
    assert preview_problem([{"messages": '[{"role": "user", "con… [1,200 more characters]'}], "messages") is None
    assert parse_turns(json.dumps(CONVERSATION), "messages") == CONVERSATION  # a CSV cell holding JSON


def test_a_template_that_refuses_a_conversation_names_the_row(llama_style):
    own = llama_style.chat_template
    llama_style.chat_template = ("{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                                 "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
                                 "{% endif %}{{ m['content'] }}{% endfor %}")
    try:
        turns = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                 {"role": "assistant", "content": "c"}]
        with pytest.raises(ValueError, match="row 1: the chat template could not render this conversation: "
                                             "Conversation roles must alternate"):
            learned(llama_style, Columns(messages="messages"), [{"messages": CONVERSATION[1:3]}, {"messages": turns}])
    finally:
        llama_style.chat_template = own


def test_a_reply_is_the_next_assistant_turn_without_markers(tmp_path, gpt2_style):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import peftlab
    from tests.tiny_models import make_tiny_gpt2
    from workers.training.chat import chat_reply

    directory = make_tiny_gpt2(tmp_path / "gpt2")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    metadata = {"task": "causal_lm", "columns": {"messages": "messages"}, "max_length": 64}
    reply = chat_reply(model, tokenizer, metadata, CONVERSATION[:4], device=model.device, max_new_tokens=6,
                       do_sample=False)
    assert isinstance(reply, str) and "im_end" not in reply and "<|endoftext|>" not in reply
    # peftlab.predict answers a chat run's texts and conversations the same way.
    assert peftlab.predict(model, tokenizer, metadata, [CONVERSATION[:4]], max_new_tokens=6) == [{"text": reply}]


@pytest.fixture
def qwen_style(gpt2_style):
    """Byte-level BPE with ChatML's markers as special tokens (as Qwen has them) and ChatML as its template."""
    from workers.training.chat import CHATML_TEMPLATE

    tok = PreTrainedTokenizerFast(tokenizer_object=gpt2_style.backend_tokenizer.__class__.from_str(
        gpt2_style.backend_tokenizer.to_str()), eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_TEMPLATE
    return tok


def test_a_one_token_end_of_turn_is_learned_and_the_newline_after_it_is_not(qwen_style):
    [example] = learned(qwen_style, Columns(messages="messages"), [{"messages": CONVERSATION}])
    im_end = qwen_style.convert_tokens_to_ids("<|im_end|>")
    ends = [i for i, t in enumerate(example.input_ids) if t == im_end]
    assert len(ends) == 5  # one per turn
    learned_ends = [i for i in ends if example.target[i] != IGNORE_INDEX]
    assert len(learned_ends) == 2  # the assistant turns' only
    for i in learned_ends:
        assert example.target[i + 1] == IGNORE_INDEX  # the "\n" after the marker
    assert learned_segments(qwen_style, example) == [
        "The capital of Poland is Warsaw.<|im_end|>", "Warsaw has 6 letters.<|im_end|>"]


def test_templates_that_are_not_prefix_stable_fall_back_to_finding_the_turns(qwen_style):
    # A footer only on finished conversations: a shorter conversation is not a prefix of a longer one.
    qwen_style.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                                "{% else %}(end of conversation){% endif %}")
    [example] = learned(qwen_style, Columns(messages="messages"), [{"messages": CONVERSATION}])
    assert learned_segments(qwen_style, example) == [
        "The capital of Poland is Warsaw.<|im_end|>", "Warsaw has 6 letters.<|im_end|>"]
