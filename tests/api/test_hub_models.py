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


class FakeHub(BaseHTTPRequestHandler):
    """Serves `acme/tiny-llama`'s config.json the way the hub's resolve endpoint does; every other
    repo is unknown (the hub's 404 with X-Error-Code: RepoNotFound)."""

    body = json.dumps(LLAMA_CONFIG).encode()

    def _answer(self, with_body: bool):
        if self.path.startswith("/acme/tiny-llama/resolve/main/config.json"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
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
    # The run checks read the shape before any worker has loaded the model (this fake hub serves no
    # safetensors headers, so the parameter count stays unknown).
    from app.methods.shape import shape_from

    shape = shape_from(facts)
    assert (shape.kv_heads, shape.head_dim, shape.positions) == (8, 128, 4096) and shape.num_parameters is None


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
