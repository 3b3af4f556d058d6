"""POST /api/models with a hub id checks it at once: its config.json comes from the hub (a local fake
hub here: HF_ENDPOINT), its shape is stored; an unknown id and an unreachable hub are 422s that say so."""
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

LLAMA_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                "num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 8,
                "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 4096,
                "tie_word_embeddings": False}


def safetensors_header(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """The start of a safetensors file: 8-byte header length, then the JSON header (no tensor data:
    only the header is ever read)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = (2 if dtype in ("BF16", "F16") else 4) * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw


# 32000·2048 + 2048·2048 + 2048 bf16 parameters, and an int64 buffer that is not one.
WEIGHTS = safetensors_header({"model.embed_tokens.weight": ("BF16", [32000, 2048]),
                              "model.layers.0.self_attn.q_proj.weight": ("BF16", [2048, 2048]),
                              "model.norm.weight": ("BF16", [2048]), "position_ids": ("I64", [1, 4096])})
NUM_PARAMETERS = 32000 * 2048 + 2048 * 2048 + 2048


class FakeHub(BaseHTTPRequestHandler):
    """Serves `acme/tiny-llama`'s config.json and the head of its model.safetensors the way the hub's
    resolve endpoint does; every other repo is unknown (the hub's 404 with X-Error-Code: RepoNotFound)."""

    files = {"config.json": json.dumps(LLAMA_CONFIG).encode(), "model.safetensors": WEIGHTS}

    def _answer(self, with_body: bool):
        served = self.path.split("?")[0].removeprefix("/acme/tiny-llama/resolve/main/")
        if served in self.files:
            self.body = self.files[served]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(self.body)))
            self.send_header("ETag", '"cfg-etag"')
            self.send_header("X-Repo-Commit", "0" * 40)
            self.end_headers()
            if with_body:
                self.wfile.write(self.body)
            return
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("X-Error-Message", "Repository not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):  # noqa: N802 — http.server's names
        self._answer(False)

    def do_GET(self):  # noqa: N802
        self._answer(True)

    def log_message(self, *args):
        pass


@pytest.fixture
def online(monkeypatch):
    """The test session sets HF_HUB_OFFLINE; these tests talk to a hub of their own."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return monkeypatch


@pytest.fixture
def fake_hub(online):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket closes


def test_a_hub_id_is_checked_and_its_shape_stored(client, fake_hub):
    res = client.post("/api/models", json={"name": "Acme tiny llama", "source": "acme/tiny-llama"})
    assert res.status_code == 201, res.text
    model = res.json()
    assert model["source"] == "acme/tiny-llama" and model["architecture"] == "LlamaForCausalLM"
    from app.db import session_scope
    from app.models.models import BaseModel

    with session_scope() as s:
        facts = s.get(BaseModel, model["id"]).facts
    assert facts["hidden_size"] == 2048 and facts["num_layers"] == 16 and facts["num_key_value_heads"] == 8
    assert facts["max_positions"] == 4096 and facts["model_type"] == "llama"
    assert model["num_parameters"] == NUM_PARAMETERS  # from the safetensors header, floating-point tensors only
    # The estimate works from those facts before any worker has loaded the model.
    est = client.post(f"/api/models/{model['id']}/estimate", json={"task": "causal_lm", "method": {"type": "lora", "r": 16}})
    assert est.status_code == 200 and est.json()["trainable_params"] > 0, est.text


def test_an_unknown_hub_id_is_named(client, fake_hub):
    before = len(client.get("/api/models").json())
    res = client.post("/api/models", json={"name": "missing", "source": "acme/no-such-model"})
    assert res.status_code == 422
    assert "'acme/no-such-model' does not exist on the hub" in res.json()["detail"]
    assert len(client.get("/api/models").json()) == before


def test_an_unreachable_hub_is_said(client, online):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    res = client.post("/api/models", json={"name": "far away", "source": "acme/tiny-llama"})
    assert res.status_code == 422
    detail = res.json()["detail"]
    assert "cannot be reached" in detail and "peftlab models import" in detail


def test_an_offline_server_says_so(client):
    res = client.post("/api/models", json={"name": "offline", "source": "acme/tiny-llama"})
    assert res.status_code == 422 and "HF_HUB_OFFLINE" in res.json()["detail"]
