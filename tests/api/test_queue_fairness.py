"""A user reorders only their own queued runs; admins reorder the whole queue."""
from app.datasets.models import Dataset
from app.db import session_scope
from app.runs.models import Run
from app.runs.queue_order import queued_ids


def _queued_run(client, name: str) -> int:
    """A queued run in the caller's project, written straight to the database (no worker takes it)."""
    ds = client.post("/api/datasets", files={"file": (f"{name}.csv", b"text,label\na,b\nc,d\n")}).json()
    with session_scope() as s:
        project_id = s.get(Dataset, ds["id"]).project_id
        run = Run(name=name, config={}, summary={}, dataset_id=ds["id"], base_model="minilm-l6", method="lora",
                  task="classification", project_id=project_id, status="queued")
        s.add(run)
        s.flush()
        return run.id


def test_moving_to_the_top_stays_behind_other_users_runs(client, client_as):
    alice, bob = client_as("alice"), client_as("bob")
    a1, b1, a2, b2 = (_queued_run(c, n) for c, n in ((alice, "a1"), (bob, "b1"), (alice, "a2"), (bob, "b2")))
    try:
        res = bob.post(f"/api/runs/{b2}/move", json={"position": "top"})
        assert res.status_code == 200, res.text
        with session_scope() as s:
            order = [i for i in queued_ids(s) if i in (a1, b1, a2, b2)]
        assert order == [a1, b2, a2, b1]  # b2 took b1's slot; Alice's runs kept theirs
        assert client.post(f"/api/runs/{b1}/move", json={"position": "top"}).status_code == 200  # the admin may
        with session_scope() as s:
            assert [i for i in queued_ids(s) if i in (a1, b1, a2, b2)][0] == b1
        assert bob.post(f"/api/runs/{a1}/move", json={"position": "top"}).status_code == 404
    finally:
        for run_id in (a1, b1, a2, b2):
            client.post(f"/api/runs/{run_id}/cancel")
            client.delete(f"/api/runs/{run_id}")
