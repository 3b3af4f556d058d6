"""Hostile dataset files: each is refused with a 422 that says what was wrong, the server keeps
serving, and nothing is left behind (no row, no file). The corpus is tests/hostile_files.py."""
import pytest

from tests.hostile_files import ALL, FIELDS, expected_message, make


def _leftovers(settings) -> list[str]:
    return sorted(p.name for p in settings.upload_dir.iterdir())


def _dataset_ids(client) -> list[int]:
    return [d["id"] for d in client.get("/api/datasets").json()]


@pytest.mark.parametrize("name", ALL)
def test_hostile_file_is_refused_and_leaves_nothing(client, settings, tmp_path, name):
    path = make(name, tmp_path)
    before_files, before_ids = _leftovers(settings), _dataset_ids(client)
    with open(path, "rb") as f:
        res = client.post("/api/datasets", files={"file": (name, f)}, data=FIELDS.get(name, {}))
    assert res.status_code == 422, res.text[:500]
    detail = res.json()["detail"]
    assert expected_message(name) in detail, detail
    assert len(detail) < 600  # a sentence for a person, not a dump of the file
    assert client.get("/api/me").status_code == 200
    assert _leftovers(settings) == before_files
    assert _dataset_ids(client) == before_ids


def test_the_corpus_is_large_enough():
    assert len(ALL) >= 40
