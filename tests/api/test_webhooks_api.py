"""Webhook configuration per project: who may see and change them, and what URLs and events are accepted."""
import pytest


@pytest.fixture
def project(client):
    return client.post("/api/projects", json={"name": "notify me"}).json()["id"]


def test_create_list_and_delete(client, project):
    res = client.post(f"/api/projects/{project}/webhooks", json={"url": "https://chat.example/hooks/abc"})
    assert res.status_code == 201, res.text
    hook = res.json()
    assert hook["events"] == ["run.succeeded", "run.failed"] and hook["last_status"] is None
    assert [h["id"] for h in client.get(f"/api/projects/{project}/webhooks").json()] == [hook["id"]]
    assert client.delete(f"/api/projects/{project}/webhooks/{hook['id']}").status_code == 204
    assert client.get(f"/api/projects/{project}/webhooks").json() == []
    assert client.delete(f"/api/projects/{project}/webhooks/{hook['id']}").status_code == 404


@pytest.mark.parametrize("body, needle", [
    ({"url": "ftp://chat.example/x"}, "http:// or https://"),
    ({"url": "not a url"}, "http:// or https://"),
    ({"url": "https://user:pw@chat.example/x"}, "user name or password"),
    ({"url": "https://chat.example/x", "events": []}, "events"),
    ({"url": "https://chat.example/x", "events": ["run.exploded"]}, "events"),
    ({"url": "https://chat.example/x", "secret": 1}, "secret"),
])
def test_bad_webhooks_are_refused_field_by_field(client, project, body, needle):
    res = client.post(f"/api/projects/{project}/webhooks", json=body)
    assert res.status_code == 422 and needle in res.text, res.text


def test_members_see_owners_change_strangers_get_404(client, client_as, project):
    hook = client.post(f"/api/projects/{project}/webhooks", json={"url": "https://chat.example/h"}).json()
    member = client_as("hook-member")
    client.post(f"/api/projects/{project}/members", json={"username": "hook-member"})
    assert member.get(f"/api/projects/{project}/webhooks").status_code == 200
    res = member.post(f"/api/projects/{project}/webhooks", json={"url": "https://chat.example/other"})
    assert res.status_code == 403 and "owner" in res.json()["detail"]
    assert member.delete(f"/api/projects/{project}/webhooks/{hook['id']}").status_code == 403
    stranger = client_as("hook-stranger")
    assert stranger.get(f"/api/projects/{project}/webhooks").status_code == 404
    assert stranger.post(f"/api/projects/{project}/webhooks/{hook['id']}/test").status_code == 404
    assert client.get("/api/projects/999999/webhooks").status_code == 404


def test_the_test_button_reports_an_unreachable_receiver(client, project):
    hook = client.post(f"/api/projects/{project}/webhooks", json={"url": "http://127.0.0.1:9/nothing-here"}).json()
    res = client.post(f"/api/projects/{project}/webhooks/{hook['id']}/test")
    assert res.status_code == 200
    assert res.json()["ok"] is False and res.json()["status"] is None and res.json()["error"]
