"""`peftlab models import DIR`: a tiny model saved from a config is copied into the data directory
(safetensors only) and registered; a directory of pickle weights is refused and leaves nothing."""
import subprocess
import sys

import pytest
import torch

from app.cli import main
from tests.tiny_models import make_tiny_llama


def test_a_model_is_copied_registered_and_loads(peftlab_env, tmp_path, capsys):
    source = make_tiny_llama(tmp_path / "llama-src")
    (source / "pytorch_model.bin").write_bytes(b"a pickle that must not travel")
    assert main(["models", "import", str(source), "--name", "Tiny Llama import"]) == 0
    out = capsys.readouterr()
    model_id = out.out.strip()
    assert model_id == "tiny-llama-import" and "left out (not safetensors): pytorch_model.bin" in out.err

    from app.config import get_settings
    from app.db import session_scope
    from app.models.models import BaseModel

    with session_scope() as s:
        model = s.get(BaseModel, model_id)
        dest = model.source
        assert model.architecture == "LlamaForCausalLM" and model.num_parameters > 0
        assert model.facts["hidden_size"] == 32
    copied = sorted(p.name for p in get_settings().data_dir.joinpath("models", model_id).iterdir())
    assert dest.endswith(f"/models/{model_id}") and "model.safetensors" in copied and "config.json" in copied
    assert "pytorch_model.bin" not in copied and "tokenizer.json" in copied

    from workers.model_loading import load_base_model

    model = load_base_model(dest, "causal_lm")  # the copy is a complete model
    original = load_base_model(str(source), "causal_lm")
    ids = torch.tensor([[1, 5, 9, 3]])
    assert torch.equal(model(input_ids=ids).logits, original(input_ids=ids).logits)

    # The same name again gets a new id and a folder of its own.
    assert main(["models", "import", str(source), "--name", "Tiny Llama import"]) == 0
    assert capsys.readouterr().out.strip() == "tiny-llama-import-2"


def test_pickle_only_weights_are_refused(peftlab_env, tmp_path, capsys):
    source = make_tiny_llama(tmp_path / "pickled")
    (source / "model.safetensors").rename(source / "pytorch_model.bin")
    from app.config import get_settings

    before = set(get_settings().data_dir.joinpath("models").glob("*")) if get_settings().data_dir.joinpath("models").exists() else set()
    assert main(["models", "import", str(source), "--name", "pickled"]) == 2
    err = capsys.readouterr().err
    assert "no .safetensors weights (pytorch_model.bin)" in err and "never pickle" in err
    after = set(get_settings().data_dir.joinpath("models").glob("*")) if get_settings().data_dir.joinpath("models").exists() else set()
    assert after == before


def test_a_directory_without_config_is_refused(peftlab_env, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["models", "import", str(tmp_path / "empty")]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_the_command_is_listed():
    res = subprocess.run([sys.executable, "-m", "app.cli", "models", "import", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "safetensors only" in res.stdout
