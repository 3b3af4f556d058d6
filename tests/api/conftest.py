"""Fixtures the API tests of experiments share."""
import pytest


def upload_reviews(client, filename: str) -> dict:
    """A small two-class dataset (column `sentence`, labels pos/neg), uploaded as `filename`."""
    csv = "sentence,label\n" + "".join(f"good movie {i},pos\nbad film {i},neg\n" for i in range(10))
    return client.post("/api/datasets", files={"file": (filename, csv.encode())}).json()


@pytest.fixture
def made(client):
    """Experiments made here; deleted afterwards (queued runs are cancelled first, so no worker runs them)."""
    ids: list[int] = []
    yield ids
    for experiment_id in ids:
        client.delete(f"/api/experiments/{experiment_id}")
