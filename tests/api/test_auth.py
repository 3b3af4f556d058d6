"""Sign-in, sessions with CSRF, API tokens, rate limits, security headers, admin-only model registration."""
import re

import pytest
from sqlalchemy import select

from app.auth.deps import SESSION_COOKIE
from app.auth.models import ApiToken, User
from app.db import session_scope
from tests.conftest import make_account


def _form_csrf(client, path="/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def test_anonymous_api_is_401_and_pages_redirect_to_login(client_as):
    anon = client_as(None)
    res = anon.get("/api/runs")
    assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
    assert "Not logged in" in res.json()["detail"]
    res = anon.get("/runs?status=failed", follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/login?next=%2Fruns%3Fstatus%3Dfailed"
    assert anon.get("/login").status_code == 200  # users exist, so no setup page
    assert anon.get("/setup", follow_redirects=False).headers["location"] == "/login"


def test_login_sets_an_httponly_session_and_csrf_guards_writes(client_as):
    make_account("carol")
    anon = client_as(None)
    token = _form_csrf(anon)
    res = anon.post("/login", data={"username": "carol", "password": "correct horse battery", "csrf_token": token,
                                    "next": "/datasets"}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/datasets"
    cookie = res.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = anon.get("/settings")
    assert page.status_code == 200 and "carol" in page.text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    assert anon.get("/api/me").json()["username"] == "carol"  # reads need no CSRF token
    refused = anon.post("/api/tokens", json={"name": "x"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert anon.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert anon.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    # signing out ends the session on the server
    assert anon.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False).status_code == 303
    assert anon.get("/api/me").status_code == 401


def test_login_form_without_its_csrf_token_is_refused(client_as):
    anon = client_as(None)
    anon.get("/login")
    res = anon.post("/login", data={"username": "admin", "password": "correct horse battery"})
    assert res.status_code == 403
    assert anon.cookies.get(SESSION_COOKIE) is None


@pytest.mark.parametrize("next_url, expected", [("//evil.example/x", "/runs"), ("https://evil.example", "/runs"),
                                                ("/\\evil.example", "/runs"), ("/runs/7", "/runs/7")])
def test_login_redirects_only_to_this_site(client_as, next_url, expected):
    make_account("dave")
    anon = client_as(None)
    res = anon.post("/login", data={"username": "dave", "password": "correct horse battery", "next": next_url,
                                    "csrf_token": _form_csrf(anon)}, follow_redirects=False)
    assert res.headers["location"] == expected


def test_failed_logins_are_rate_limited(client_as):
    make_account("erin")
    anon = client_as(None)
    for _ in range(5):
        res = anon.post("/login", data={"username": "erin", "password": "nope-nope", "csrf_token": _form_csrf(anon)})
        assert res.status_code == 401 and "Wrong username or password" in res.text
    res = anon.post("/login", data={"username": "erin", "password": "correct horse battery", "csrf_token": _form_csrf(anon)})
    assert res.status_code == 429 and "Too many failed sign-ins" in res.text


def test_passwords_and_tokens_are_stored_hashed(client):
    account = make_account("frank")
    with session_scope() as s:
        user = s.scalar(select(User).where(User.username == "frank"))
        assert user.password_hash.startswith("$argon2id$") and "correct horse" not in user.password_hash
        stored = [t.token_hash for t in s.scalars(select(ApiToken).where(ApiToken.user_id == user.id))]
    assert account.token not in stored and all(len(h) == 64 for h in stored)


def test_a_revoked_token_stops_working_at_once(client_as):
    alice = client_as("alice")
    created = alice.post("/api/tokens", json={"name": "script"}).json()
    assert created["token"].startswith("plt_") and created["prefix"] == created["token"][:10]
    script = client_as(None)
    script.headers["Authorization"] = f"Bearer {created['token']}"
    assert script.get("/api/me").json()["username"] == "alice"
    assert alice.delete(f"/api/tokens/{created['id']}").status_code == 204
    res = script.get("/api/me")
    assert res.status_code == 401 and "revoked" in res.json()["detail"]
    listed = {t["id"]: t for t in alice.get("/api/tokens").json()}
    assert listed[created["id"]]["revoked_at"] is not None and "token" not in listed[created["id"]]
    assert client_as("bob").delete(f"/api/tokens/{created['id']}").status_code == 404


def test_malformed_authorization_headers(client_as):
    anon = client_as(None)
    for header in ("Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer plt_made_up"):
        assert anon.get("/api/me", headers={"Authorization": header}).status_code == 401


def test_security_headers_on_pages_and_api(client):
    for path in ("/runs", "/api/runs", "/login", "/static/js/common.js"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"


def test_only_admins_manage_users_and_models(client, client_as, tiny_bert_source):
    alice = client_as("alice")
    assert alice.get("/api/users").status_code == 403
    assert alice.post("/api/users", json={"username": "mallory", "password": "12345678"}).status_code == 403
    res = alice.post("/api/models", json={"name": "x", "source": tiny_bert_source})
    assert res.status_code == 403 and "admin" in res.json()["detail"]
    res = client.post("/api/users", json={"username": "grace", "password": "short"})
    assert res.status_code == 422
    assert client.post("/api/users", json={"username": "grace", "password": "long enough"}).status_code == 201
    assert client.post("/api/users", json={"username": "GRACE", "password": "long enough"}).status_code == 422


def test_sharing_a_project(client_as):
    alice, bob = client_as("alice"), client_as("bob")
    project = alice.post("/api/projects", json={"name": "shared study"}).json()
    ds = alice.post("/api/datasets", files={"file": ("s.csv", b"text,label\na,b\nc,d\n")},
                    data={"project_id": str(project["id"])}).json()
    assert bob.get(f"/api/datasets/{ds['id']}").status_code == 404
    assert bob.post(f"/api/projects/{project['id']}/members", json={"username": "bob"}).status_code == 404
    res = alice.post(f"/api/projects/{project['id']}/members", json={"username": "bob"})
    assert res.status_code == 201 and res.json()["role"] == "member"
    assert bob.get(f"/api/datasets/{ds['id']}").status_code == 200
    assert ds["id"] in [d["id"] for d in bob.get("/api/datasets").json()]
    assert bob.post(f"/api/projects/{project['id']}/members", json={"username": "carol"}).status_code == 403
    assert alice.post(f"/api/projects/{project['id']}/members", json={"username": "nobody"}).status_code == 422
    bob_id = res.json()["user_id"]
    assert alice.delete(f"/api/projects/{project['id']}/members/{bob_id}").status_code == 204
    assert bob.get(f"/api/datasets/{ds['id']}").status_code == 404
    # uploading into a project you are not in reads like a missing project
    res = bob.post("/api/datasets", files={"file": ("s.csv", b"text,label\na,b\n")}, data={"project_id": str(project["id"])})
    assert res.status_code == 404


def test_each_user_sees_only_their_own_objects(client, client_as):
    alice, bob = client_as("alice"), client_as("bob")
    ds = alice.post("/api/datasets", files={"file": ("mine.csv", b"text,label\ngood,pos\nbad,neg\nok,pos\n")}).json()
    body = {"dataset_id": ds["id"], "columns": {"text": "text", "label": "label"}, "method": {"type": "lora"},
            "eval_fraction": 0.34}
    run = alice.post("/api/runs", json=body).json()
    try:
        for path in (f"/api/datasets/{ds['id']}", f"/api/datasets/{ds['id']}/rows", f"/api/runs/{run['id']}",
                     f"/api/runs/{run['id']}/metrics", f"/api/runs/{run['id']}/events", f"/api/runs/{run['id']}/adapter"):
            assert bob.get(path).status_code == 404, path
        assert bob.post(f"/api/runs/{run['id']}/cancel").status_code == 404
        assert bob.delete(f"/api/runs/{run['id']}").status_code == 404
        assert bob.delete(f"/api/datasets/{ds['id']}").status_code == 404
        assert bob.post("/api/runs", json=body).json()["detail"][0]["loc"] == ["body", "dataset_id"]
        assert ds["id"] not in [d["id"] for d in bob.get("/api/datasets").json()]
        assert run["id"] not in [r["id"] for r in bob.get("/api/runs").json()]
        assert bob.get(f"/datasets/{ds['id']}").status_code == 404  # the page too
        assert client.get(f"/api/runs/{run['id']}").status_code == 200  # admins see everything
        assert alice.get(f"/api/runs/{run['id']}").json()["status"] == "queued"
    finally:
        alice.post(f"/api/runs/{run['id']}/cancel")
        alice.delete(f"/api/runs/{run['id']}")


def test_a_run_cannot_mix_projects(client_as):
    """Eval data or fused adapters from another project would leak into the run's project."""
    alice = client_as("alice")
    other = alice.post("/api/projects", json={"name": "private"}).json()
    csv = b"text,label\n" + b"good,pos\nbad,neg\n" * 4
    train = alice.post("/api/datasets", files={"file": ("t.csv", csv)}).json()
    private = alice.post("/api/datasets", files={"file": ("p.csv", csv)}, data={"project_id": str(other["id"])}).json()
    res = alice.post("/api/runs", json={"dataset_id": train["id"], "eval_dataset_id": private["id"],
                                        "columns": {"text": "text", "label": "label"}, "method": {"type": "lora"}})
    assert res.status_code == 422
    assert res.json()["detail"] == [{"loc": ["body", "eval_dataset_id"], "type": "value_error",
                                     "msg": "The eval dataset must be in the same project as the dataset."}]


def test_uploading_into_a_project_that_does_not_exist(client):
    res = client.post("/api/datasets", files={"file": ("x.csv", b"text,label\na,b\n")}, data={"project_id": "987654"})
    assert res.status_code == 404 and "Project" in res.json()["detail"]


def test_a_second_setup_loses_the_race(client, monkeypatch):
    """Two setups both saw no users and both inserted an admin: the later one removes itself."""
    from app.auth import service
    from app.auth.models import Project

    monkeypatch.setattr(service, "count_users", lambda session: 0)  # it checked before the other committed
    with session_scope() as s, pytest.raises(service.AuthError, match="already has an admin"):
        service.create_first_admin(s, username="later-admin", password="long enough")
    with session_scope() as s:
        assert s.scalar(select(User).where(User.username == "later-admin")) is None
        assert s.scalar(select(Project).where(Project.name == "later-admin's project")) is None
        assert s.scalar(select(User).where(User.username == "admin")) is not None  # the first one stays
