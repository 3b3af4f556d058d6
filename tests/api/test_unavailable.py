"""While the database is down or the disk is full, the API answers 503 with a message (JSON, with the
security headers), and serves again once it can. Real processes: a PostgreSQL database that goes
away under a running server, and a server whose data dir is a small disk that fills up."""
import os
import time
from contextlib import ExitStack

import pytest

from app.errors import DB_UNAVAILABLE, DISK_FULL
from app.security_headers import HEADERS
from tests import standalone
from tests.conftest import _unavailable

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CSV = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))


def run_body(dataset_id: int) -> dict:
    return {"dataset_id": dataset_id, "columns": {"text": "sentence", "label": "label"}, "method": {"type": "lora"},
            "training": {"max_steps": 2, "batch_size": 4}}


def assert_503(res, message: str) -> None:
    assert res.status_code == 503, f"{res.request.method} {res.request.url}: {res.status_code} {res.text[:300]}"
    assert res.headers["content-type"] == "application/json"
    assert res.json() == {"detail": message}
    for name, value in HEADERS:
        assert res.headers.get(name.decode()) == value.decode()
    assert res.headers["cache-control"] == "no-store"


@pytest.fixture
def postgres_stack(tmp_path):
    """A server on a PostgreSQL database of its own; yields (stack, cut_connections, take_down, bring_back)."""
    import sqlalchemy as sa

    server = os.environ.get("PEFTLAB_TEST_DATABASE_URL") or DEFAULT_POSTGRES
    cleanup = ExitStack()
    try:
        db_url, admin, name = cleanup.enter_context(standalone.postgres_database(server))
    except sa.exc.OperationalError as e:
        _unavailable(f"PostgreSQL at {server} is not reachable: {e.orig}")
    away = f"{name}_away"

    def cut_connections() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                         {"d": name})

    def rename(old: str, new: str) -> None:
        """Cut every connection to `old` and rename it: to the server the database is gone."""
        for _ in range(50):
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                                 {"d": old})
                    conn.execute(sa.text(f'ALTER DATABASE "{old}" RENAME TO "{new}"'))
                return
            except sa.exc.OperationalError:  # a connection came back in between
                time.sleep(0.1)
        raise AssertionError(f"could not rename database {old}")

    with cleanup:
        stack = standalone.start(tmp_path / "logs", PEFTLAB_DATA_DIR=str(tmp_path / "data"), PEFTLAB_DATABASE_URL=db_url)
        cleanup.callback(stack.stop)
        yield stack, cut_connections, lambda: rename(name, away), lambda: rename(away, name)


def test_database_down_is_503_json_then_recovers(postgres_stack):
    stack, cut_connections, take_down, bring_back = postgres_stack
    with stack.client() as c:
        dataset = c.post("/api/datasets", files={"file": ("reviews.csv", CSV.encode())})
        assert dataset.status_code == 201, dataset.text
        assert c.get("/api/runs").status_code == 200

        # A restart's blip: the pooled connections die under the server, which reconnects.
        cut_connections()
        assert c.get("/api/runs").status_code in (200, 503)
        assert c.get("/api/runs").status_code == 200

        take_down()
        for res in (c.get("/api/runs"), c.get("/api/me"), c.get(f"/api/datasets/{dataset.json()['id']}"),
                    c.post("/api/runs", json=run_body(dataset.json()["id"])), c.get("/api/runs/1/metrics")):
            assert_503(res, DB_UNAVAILABLE)
        page = c.get("/runs", headers={"Accept": "text/html"})
        assert page.status_code == 503 and "text/html" in page.headers["content-type"]
        assert DB_UNAVAILABLE in page.text and page.headers["x-frame-options"] == "DENY"

        bring_back()
        deadline = time.time() + 30
        while (res := c.get("/api/runs")).status_code != 200 and time.time() < deadline:
            time.sleep(0.5)
        assert res.status_code == 200, res.text
        created = c.post("/api/runs", json=run_body(dataset.json()["id"]))
        assert created.status_code == 201, created.text
    assert "Traceback" not in (stack.logs / "server.log").read_text(errors="replace")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not standalone.mount_small_disk(disk, "16m"):
        pytest.skip("mounting a small tmpfs is not permitted here (needs root)")
    yield disk
    standalone.unmount(disk)


def test_disk_full_is_503_and_leaves_nothing(small_disk, tmp_path):
    """Data dir (SQLite database, uploads, broker) on a disk that fills up: writes answer 503 with a
    message, a half-received upload is removed, and once space is freed everything works again."""
    stack = standalone.start(tmp_path / "logs", PEFTLAB_DATA_DIR=str(small_disk))
    try:
        with stack.client() as c:
            dataset = c.post("/api/datasets", files={"file": ("reviews.csv", CSV.encode())})
            assert dataset.status_code == 201, dataset.text
            filler = standalone.fill_disk(small_disk)

            assert_503(c.post("/api/runs", json=run_body(dataset.json()["id"])), DISK_FULL)
            upload = c.post("/api/datasets", files={"file": ("big.csv", (CSV * 200).encode())})
            assert_503(upload, DISK_FULL)
            assert not list((small_disk / "datasets").glob(".incoming-*"))

            filler.unlink()
            created = c.post("/api/runs", json=run_body(dataset.json()["id"]))
            assert created.status_code == 201, created.text
            assert c.post("/api/datasets", files={"file": ("again.csv", CSV.encode())}).status_code == 201
    finally:
        stack.stop()
