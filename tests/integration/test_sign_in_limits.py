"""The sign-in limit over real sockets (a real `peftlab serve`): it counts per (username, client
address), so failures from one address never lock the user out at another, and X-Forwarded-For is
believed only from the proxies in PEFTLAB_TRUSTED_PROXIES, so rotating it does not escape the limit."""
import json

import httpx
import pytest

from tests.conftest import _stop, make_account, start_server

pytestmark = pytest.mark.integration
PASSWORD = "correct horse battery"  # make_account's


@pytest.fixture(autouse=True)
def forget_failures(peftlab_env, admin_account):
    """Every test starts and ends with no recorded failures (they would limit the other tests' sign-ins),
    and with users (else /login sends to first-run setup)."""
    from sqlalchemy import delete

    from app.auth.models import LoginFailure
    from app.db import session_scope

    def clear():
        with session_scope() as s:
            s.execute(delete(LoginFailure))

    clear()
    yield
    clear()


def sign_in(url: str, username: str, password: str, *, source: str = "127.0.0.1", forwarded_for: str | None = None) -> int:
    """POST the login form from the local address `source` (all of 127/8 is this machine); the status."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=30) as client:
        client.get("/login")
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        res = client.post("/login", data={"username": username, "password": password, "next": "/runs",
                                          "csrf_token": client.cookies["peftlab_form_csrf"]}, headers=headers)
        return res.status_code


def test_rotating_x_forwarded_for_from_loopback_does_not_escape_the_limit(api_server):
    from app.auth.service import MAX_ADDRESS_FAILURES

    # A spray: a new username and a new "client address" in X-Forwarded-For for every guess.
    for i in range(MAX_ADDRESS_FAILURES):
        assert sign_in(api_server, f"sprayed{i}", "guess-guess", forwarded_for=f"203.0.113.{i + 1}") == 401
    assert sign_in(api_server, "sprayed-next", "guess-guess", forwarded_for="198.51.100.77") == 429
    # Only that address is limited: the same user signs in from another one.
    make_account("sprayee")
    assert sign_in(api_server, "sprayee", PASSWORD, source="127.0.0.2") == 303


def test_failures_from_one_address_do_not_lock_the_user_out_at_another(api_server):
    make_account("target")
    for _ in range(8):  # an attacker at A, past the limit
        assert sign_in(api_server, "target", "not-the-password", source="127.0.0.3") in (401, 429)
    assert sign_in(api_server, "target", PASSWORD, source="127.0.0.3") == 429  # A is stopped, right password or not
    assert sign_in(api_server, "target", PASSWORD, source="127.0.0.4") == 303  # the user at B is not


@pytest.fixture(scope="module")
def behind_proxy(peftlab_env, tmp_path_factory):
    """A server that believes X-Forwarded-For from 127.0.0.5 only (its "reverse proxy")."""
    proc, url = start_server(tmp_path_factory.mktemp("logs") / "proxied-server.log",
                             {"PEFTLAB_TRUSTED_PROXIES": json.dumps(["127.0.0.5/32"])})
    yield url
    _stop(proc)


def test_forwarded_addresses_are_believed_from_a_trusted_proxy_only(behind_proxy):
    make_account("proxied")
    for _ in range(5):  # through the proxy, for client A
        assert sign_in(behind_proxy, "proxied", "wrong-wrong", source="127.0.0.5", forwarded_for="192.0.2.10") == 401
    assert sign_in(behind_proxy, "proxied", PASSWORD, source="127.0.0.5", forwarded_for="192.0.2.10") == 429
    # Client B behind the same proxy is another address: signed in.
    assert sign_in(behind_proxy, "proxied", PASSWORD, source="127.0.0.5", forwarded_for="192.0.2.11") == 303
    # A peer that is not the proxy cannot claim to be B: its own address counts, and it has failed before.
    for _ in range(5):
        sign_in(behind_proxy, "proxied", "wrong-wrong", source="127.0.0.6", forwarded_for="192.0.2.12")
    assert sign_in(behind_proxy, "proxied", PASSWORD, source="127.0.0.6", forwarded_for="192.0.2.13") == 429
