"""Two real server replicas (`peftlab serve` on two ports, one database and data dir): a browser session
and its CSRF token from one work on the other, and the periodic jobs run on one replica only, passing
to the other when it dies.

A deployment of its own (tests/integration/private_stack.py): the session's servers would hold the
job leases on the shared database."""
import re
import signal
import time

import httpx
import pytest
import sqlalchemy as sa

from tests.integration.private_stack import PASSWORD, free_port, start_stack, wait_until_answering

pytestmark = pytest.mark.integration
JOBS = ("reaper", "webhook", "search")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """Replica A (the stack's server) and replica B; {url: process}. The last test kills one."""
    stack = start_stack(tmp_path_factory.mktemp("replicas"), [], workers=0, reaper_interval_seconds=0.3,
                        webhook_poll_seconds=0.3, search_interval_seconds=0.3, job_lease_seconds=2)
    try:
        port = free_port()
        second = stack.spawn("server-b", "serve", "--port", str(port))
        stack.workers.append(second)  # stopped with the stack
        url_b = f"http://127.0.0.1:{port}"
        wait_until_answering(url_b, second)
        yield stack, {stack.url: stack.server, url_b: second}
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.close()


def _leases(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT name, holder FROM job_leases")).all())


def _pid(holder: str) -> int:
    return int(holder.split(":")[1])  # host:pid:tag


def _wait(condition, what: str, timeout: float = 30):
    deadline = time.time() + timeout
    while not (value := condition()):
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_a_session_and_csrf_token_from_one_replica_work_on_the_other(replicas):
    stack, servers = replicas
    url_a, url_b = servers
    # The sign-in form comes from B and is posted to A: its double-submit token needs no server state.
    form_token = httpx.get(f"{url_b}/login", timeout=30).cookies["peftlab_form_csrf"]
    with httpx.Client(base_url=url_a, timeout=30, cookies={"peftlab_form_csrf": form_token}) as a:
        signed_in = a.post("/login", data={"username": "admin", "password": PASSWORD, "next": "/runs",
                                           "csrf_token": form_token})
        assert signed_in.status_code == 303, signed_in.text
        page = a.get("/settings")
        assert page.status_code == 200
        csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)
        session = {"peftlab_session": a.cookies["peftlab_session"]}
        # A write on B with A's session cookie and CSRF token.
        with httpx.Client(base_url=url_b, timeout=30, cookies=session) as b:
            made = b.post("/api/projects", json={"name": "made on B"}, headers={"X-CSRF-Token": csrf})
            assert made.status_code == 201, made.text
            # Without the token, or with another, B refuses the same write (the check is real on every replica).
            for headers in ({}, {"X-CSRF-Token": csrf[:-2] + "xx"}):
                refused = b.post("/api/projects", json={"name": "no token"}, headers=headers)
                assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        assert [p["name"] for p in a.get("/api/projects").json()][-1] == "made on B"


def test_the_periodic_jobs_run_on_one_replica_and_pass_over_when_it_dies(replicas):
    stack, servers = replicas
    engine = stack.engine()
    pids = {proc.pid: proc for proc in servers.values()}
    held = _wait(lambda: (h := _leases(engine)).keys() >= set(JOBS) and h, "both replicas to start their jobs")
    assert {_pid(h) for h in held.values()} <= set(pids)
    # Each job stays with its holder across renewals (2 s leases, renewed after half of that): the other
    # replica, trying every 0.3 s, never takes one while its holder lives.
    expiries = set()

    def reaper_renewed_twice() -> bool:
        with engine.connect() as conn:
            expiries.add(conn.execute(sa.text("SELECT expires_at FROM job_leases WHERE name = 'reaper'")).scalar_one())
        return len(expiries) >= 3
    _wait(reaper_renewed_twice, "the reaper's lease to be renewed twice")
    assert _leases(engine) == held
    reaper = pids[_pid(held["reaper"])]
    other = next(p for p in pids.values() if p is not reaper)
    took = "job reaper: this replica"
    assert took in reaper.log_path.read_text() and took not in other.log_path.read_text()
    # The reaper's replica dies without a word (no release): the lease runs out and the other takes the job.
    reaper.send_signal(signal.SIGKILL)
    reaper.wait(timeout=20)
    _wait(lambda: _pid(_leases(engine)["reaper"]) == other.pid, "the other replica to take the reaper", timeout=30)
    assert took in other.log_path.read_text()
    _wait(lambda: {_pid(h) for h in _leases(engine).values()} == {other.pid}, "every job on the survivor")
    engine.dispose()
