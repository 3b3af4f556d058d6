"""Webhooks cannot be pointed into the server's own network unless the admin allows it."""
import pytest

from app.notifications.targets import refusal


def _refuse_private(app, settings) -> None:
    """The default policy for this app's requests (the test session allows private targets)."""
    from app.config import get_settings

    strict = settings.model_copy(update={"webhook_private_hosts": False})
    app.dependency_overrides[get_settings] = lambda: strict  # the client fixture clears overrides


@pytest.fixture
def private_refused(app, settings):
    _refuse_private(app, settings)


@pytest.fixture
def project(client):
    return client.post("/api/projects", json={"name": "notify carefully"}).json()["id"]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:5432/", "http://localhost/admin", "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/hook", "http://192.168.0.10/hook", "http://[::1]:6379/", "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0/", "http://100.64.0.1/"])
def test_private_and_local_targets_are_refused_at_creation(client, project, private_refused, url):
    res = client.post(f"/api/projects/{project}/webhooks", json={"url": url})
    assert res.status_code == 422, res.text
    assert "private or local address" in res.json()["detail"] and "PEFTLAB_WEBHOOK_PRIVATE_HOSTS" in res.json()["detail"]
    assert client.get(f"/api/projects/{project}/webhooks").json() == []


def test_public_addresses_and_names_not_yet_resolvable_are_accepted(client, project, private_refused):
    for url in ("https://93.184.215.14/hook", "https://chat.example/hooks/abc"):
        assert client.post(f"/api/projects/{project}/webhooks", json={"url": url}).status_code == 201


def test_a_name_that_resolves_to_a_private_address_is_not_sent_to(app, client, project, settings):
    # Accepted while the admin allowed private targets, then the policy is back to the default.
    hook = client.post(f"/api/projects/{project}/webhooks", json={"url": "http://localhost:9/x"}).json()
    _refuse_private(app, settings)
    res = client.post(f"/api/projects/{project}/webhooks/{hook['id']}/test").json()
    assert res["ok"] is False and res["status"] is None
    assert res["error"].startswith("not sent: localhost is a private or local address"), res


def test_unresolvable_names_are_not_sent_to_and_the_setting_allows_private_targets():
    assert "could not be resolved" in refusal("https://no-such-host.invalid/x", allow_private=False,
                                              unresolvable_ok=False)
    assert refusal("https://no-such-host.invalid/x", allow_private=False, unresolvable_ok=True) is None
    assert refusal("http://127.0.0.1/x", allow_private=True, unresolvable_ok=False) is None
