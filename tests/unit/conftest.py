"""Unit-test fixtures: one torch thread (tiny models on 2 shared cores), and the three tiny models."""
import pytest
import torch

from tests.tiny_models import make_tiny_bert, make_tiny_gpt2, make_tiny_llama


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Two cores shared with other test processes: spinning intra-op threads only slow tiny models down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    """Tiny random BERT, GPT-2 and Llama directories (with tokenizers), built once per session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {"bert": str(make_tiny_bert(root / "bert")), "gpt2": str(make_tiny_gpt2(root / "gpt2")),
            "llama": str(make_tiny_llama(root / "llama"))}
