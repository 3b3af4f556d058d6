"""Tiny random BERT / GPT-2 / Llama models with working fast tokenizers, built offline.

A helper for tests (not a test file): each `make_tiny_*` saves a model and its tokenizer into
a directory that `from_pretrained` loads like any real checkpoint. The tokenizer is a
WordLevel vocabulary of the words below; tests build their datasets from `VOCAB_WORDS`.
"""
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

POSITIVE = ["good", "great", "excellent", "wonderful", "fine", "nice", "love", "best"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "boring", "hate", "worst", "dull"]
NEUTRAL = ["movie", "film", "story", "plot", "actor", "scene", "the", "a", "this", "was", "is", "it",
           "and", "very", "really", "of", "question", "answer", "yes", "no", "say", "color", "red",
           "blue", "green", "cat", "dog", "sun", "moon", "up", "down", "left", "right", "opposite"]
NUMBERS = [str(i) for i in range(20)]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) not in ("a",)]
PUNCTUATION = [".", ",", "!", "?", ":"]
VOCAB_WORDS = POSITIVE + NEGATIVE + NEUTRAL + NUMBERS + LETTERS + PUNCTUATION
# With the usual 0.02 a 32-wide random LM head can only produce logits within about ±0.6, so no
# amount of adapter training gets a peaked next-token distribution out of the frozen head.
CAUSAL_INIT_RANGE = 0.2


def _word_level(special: list[str], unk: str) -> Tokenizer:
    vocab = {tok: i for i, tok in enumerate(special + VOCAB_WORDS)}
    tok = Tokenizer(WordLevel(vocab, unk_token=unk))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _vocab_size(tok: Tokenizer) -> int:
    return tok.get_vocab_size()


def make_tiny_bert(directory: Path, *, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
                   init_range: float = 0.02) -> Path:
    """A bare BERT encoder (like all-MiniLM-L6-v2: no task head); [CLS] x [SEP] (y [SEP]) inputs."""
    import torch

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = _word_level(special, "[UNK]")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                        model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    config = BertConfig(vocab_size=_vocab_size(tok), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=128,
                        pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        initializer_range=init_range)
    torch.manual_seed(seed)
    return _save(BertModel(config), tokenizer, directory)


def make_tiny_gpt2(directory: Path, *, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
                   init_range: float = CAUSAL_INIT_RANGE) -> Path:
    """A GPT-2 LM whose tokenizer, like the real one, has no pad token and adds no special tokens."""
    import torch

    tok = _word_level(["<|endoftext|>"], "<|endoftext|>")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=_vocab_size(tok), n_embd=hidden, n_layer=layers, n_head=heads, n_positions=128,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        initializer_range=init_range)
    torch.manual_seed(seed)
    return _save(GPT2LMHeadModel(config), tokenizer, directory)


def make_tiny_llama(directory: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0,
                    init_range: float = CAUSAL_INIT_RANGE) -> Path:
    """A Llama LM whose tokenizer, like the real one, prepends <s> and has no pad token."""
    import torch

    special = ["<unk>", "<s>", "</s>"]
    tok = _word_level(special, "<unk>")
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=_vocab_size(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                         max_position_embeddings=128, bos_token_id=bos, eos_token_id=tok.token_to_id("</s>"),
                         tie_word_embeddings=False, initializer_range=init_range)
    torch.manual_seed(seed)
    return _save(LlamaForCausalLM(config), tokenizer, directory)


def _save(model, tokenizer, directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable 2-class dataset: one sentiment word among neutral filler decides the label."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = rng.sample(NEUTRAL, rng.randint(1, 6))  # varied lengths, so batches need padding
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if positive else NEGATIVE))
        rows.append({"text": " ".join(words), "label": "pos" if positive else "neg"})
    return rows


OPPOSITES = {"up": "down", "down": "up", "left": "right", "right": "left", "good": "bad", "bad": "good",
             "yes": "no", "no": "yes", "sun": "moon", "moon": "sun"}


def opposite_rows(n: int, seed: int = 0) -> list[dict]:
    """A learnable prompt → response dataset: "opposite of up :" → "down ." (plus a `text` column)."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word = rng.choice(sorted(OPPOSITES))
        prompt, response = f"the opposite of {word} is :", f"{OPPOSITES[word]} ."
        rows.append({"prompt": prompt, "response": response, "text": f"{prompt} {response}"})
    return rows
