"""Workers act only on messages signed with the deployment's secret key."""
import time

import pytest

from app.queue import TRAIN_TASK, get_celery, sign

pytestmark = pytest.mark.integration


def _wait_for_log(proc, text: str, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in proc.log_path.read_text(errors="replace"):
            return True
        time.sleep(0.3)
    return False


def test_unsigned_and_forged_messages_are_refused(worker_process, settings):
    celery = get_celery()
    # Run ids no run has: a worker that accepted the message would only log "not queued".
    celery.send_task(TRAIN_TASK, args=[900_000_001], queue=settings.train_queue)
    celery.send_task(TRAIN_TASK, args=[900_000_002], queue=settings.train_queue,
                     headers={"peftlab_signature": sign(TRAIN_TASK, [900_000_003])})  # signed for another run
    assert _wait_for_log(worker_process, "refusing peftlab.train_run(900000001,)")
    assert _wait_for_log(worker_process, "refusing peftlab.train_run(900000002,)")
    celery.send_task(TRAIN_TASK, args=[900_000_004], queue=settings.train_queue,
                     headers={"peftlab_signature": sign(TRAIN_TASK, [900_000_004])})
    assert _wait_for_log(worker_process, "900000004")
    assert "refusing peftlab.train_run(900000004,)" not in worker_process.log_path.read_text(errors="replace")
