"""A server killed mid-upload leaves a partial `.incoming-*` file; the next start removes it,
while an upload another process is still receiving (it holds a lock) stays."""
import fcntl
import os
import signal
import threading
import time

import httpx

from tests.conftest import _free_port, _spawn, _stop


def test_start_removes_abandoned_partial_uploads_only(app, settings, admin_account):
    from fastapi.testclient import TestClient

    settings.upload_dir.mkdir(parents=True, exist_ok=True)
    abandoned = settings.upload_dir / ".incoming-abandoned"
    abandoned.write_bytes(b"half an upload")  # fresh: the old 24-hour rule kept such files
    in_progress = settings.upload_dir / ".incoming-in-progress"
    in_progress.write_bytes(b"being received")
    fd = os.open(in_progress, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a live upload holds
    try:
        with TestClient(app, headers=admin_account.headers) as client:
            assert client.get("/api/me").status_code == 200
        assert not abandoned.exists()
        assert in_progress.exists()
    finally:
        os.close(fd)
        in_progress.unlink(missing_ok=True)


def test_killing_the_server_mid_upload_leaves_nothing_after_restart(peftlab_env, settings, admin_account, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"

    def start():
        proc = _spawn(["serve", "--port", str(port)], tmp_path / f"server-{time.time()}.log")
        for _ in range(200):
            try:
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.2)
        _stop(proc)
        raise AssertionError("the server did not come up")

    server = start()
    before = {p.name for p in settings.upload_dir.glob(".incoming-*")}

    def body():  # an upload that never finishes: the server dies while it is being received
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        for _ in range(600):
            yield b'{"text": "x"}\n' * 1000
            time.sleep(0.05)

    def send():
        try:
            httpx.post(f"{url}/api/datasets", content=body(), timeout=60,
                       headers={**admin_account.headers, "content-type": "multipart/form-data; boundary=b"})
        except httpx.HTTPError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        deadline = time.time() + 30
        while not ({p.name for p in settings.upload_dir.glob(".incoming-*")} - before) and time.time() < deadline:
            time.sleep(0.1)
        partial = {p.name for p in settings.upload_dir.glob(".incoming-*")} - before
        assert partial, "the upload never reached the disk"
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        sender.join(30)
        assert all((settings.upload_dir / name).exists() for name in partial)  # what a kill leaves
        server = start()
        assert not any((settings.upload_dir / name).exists() for name in partial)
    finally:
        _stop(server)
