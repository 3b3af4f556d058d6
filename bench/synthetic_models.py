"""Random-weight decoders built from a config, with a word-level tokenizer of the same vocabulary
size, saved as a model directory the worker loads like any checkpoint (no download). And rows of
synthetic text and chat turns for them: word wN is token N, so a row of k words is k tokens.

A helper of bench/memory_estimate.py and bench/decoder_gpu.py (not a bench of its own).
"""
import json
import random
from pathlib import Path

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def word(i: int) -> str:
    return f"w{i}"


def build_llama(directory: Path, *, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int,
                vocab: int, max_positions: int = 4096, seed: int = 0, save_dtype: str = "float32") -> Path:
    """A LlamaForCausalLM with random weights (untied LM head, like Llama) and its tokenizer."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    words = SPECIALS + [word(i) for i in range(vocab - len(SPECIALS))]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B:1",
                                                       special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(seed)
    dtype = getattr(torch, save_dtype)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    del model
    return directory


def parameter_count(directory: Path) -> int:
    from app.models.inspect import model_facts

    return model_facts(Path(directory))["num_parameters"]


def text_rows(n: int, length: int, vocab: int, seed: int = 0) -> list[dict]:
    """Rows of exactly `length` words (the tokenizer adds <s>; truncation to max_length fills every row)."""
    rng = random.Random(seed)
    top = vocab - len(SPECIALS)
    return [{"text": " ".join(word(rng.randrange(top)) for _ in range(length))} for _ in range(n)]


def chat_rows(n: int, shortest: int, longest: int, vocab: int, seed: int = 0) -> list[dict]:
    """Two-turn conversations (user, assistant) of shortest–longest words in all, lengths spread evenly."""
    rng = random.Random(seed)
    top = vocab - len(SPECIALS)
    rows = []
    for _ in range(n):
        total = rng.randint(shortest, longest)
        user = max(1, total // 3)
        say = lambda k: " ".join(word(rng.randrange(top)) for _ in range(k))  # noqa: E731
        rows.append({"messages": [{"role": "user", "content": say(user)},
                                  {"role": "assistant", "content": say(max(1, total - user))}]})
    return rows


def facts(directory: Path) -> dict:
    """The shape facts the server would store for this directory."""
    from app.models.inspect import model_facts

    return model_facts(Path(directory))


def dump(line: dict) -> None:
    print(json.dumps(line), flush=True)
