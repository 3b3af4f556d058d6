"""When every database connection is taken, a request waits db_pool_timeout and then gets a 503
with a message (and the usual headers), never a 500."""
from fastapi.testclient import TestClient


def test_a_request_that_finds_no_free_connection_gets_503(app, admin_account, monkeypatch):
    from app.db import get_engine, reset_caches

    monkeypatch.setenv("PEFTLAB_DB_POOL_SIZE", "1")
    monkeypatch.setenv("PEFTLAB_DB_MAX_OVERFLOW", "0")
    monkeypatch.setenv("PEFTLAB_DB_POOL_TIMEOUT", "0.5")
    reset_caches()
    try:
        with get_engine().connect():  # the pool's only connection, held elsewhere
            client = TestClient(app, headers=admin_account.headers)  # no lifespan: it would need a connection too
            res = client.get("/api/runs")
        assert res.status_code == 503, res.text
        assert "every connection is in use" in res.json()["detail"]
        assert res.headers["x-content-type-options"] == "nosniff"
        assert client.get("/api/runs").status_code == 200  # free again: served as usual
    finally:
        monkeypatch.undo()
        reset_caches()
