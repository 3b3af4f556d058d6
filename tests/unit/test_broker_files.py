"""The embedded broker writes each message file whole before consumers can see it."""
import os

from app import broker_files
from app.config import Settings
from app.queue import make_celery


def _celery(tmp_path):
    # The embedded broker whatever the environment says (a test session on Redis sets PEFTLAB_BROKER_URL).
    return make_celery(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", broker_url=None))


def test_a_message_file_appears_only_once_it_is_complete(tmp_path, monkeypatch):
    celery = _celery(tmp_path)
    folder = tmp_path / "broker" / "messages"
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        # The moment before the message becomes visible: no consumer-visible file exists yet, and the
        # partial one already holds the whole message.
        seen.append(([p for p in os.listdir(folder) if p.endswith(".msg")], os.path.getsize(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(broker_files.os, "replace", replace)
    celery.send_task("peftlab.train_run", args=[7], queue="train-q")
    assert len(seen) == 1, "the message was not written under a temporary name and renamed into place"
    visible_before, size = seen[0]
    assert visible_before == [] and size > 0
    files = os.listdir(folder)
    assert len(files) == 1 and files[0].endswith(".train-q.msg"), files


def test_messages_sent_on_the_embedded_broker_are_received_in_order(tmp_path):
    celery = _celery(tmp_path)
    assert celery.conf.broker_transport == broker_files.TRANSPORT
    for run_id in (1, 2, 3):
        celery.send_task("peftlab.train_run", args=[run_id], queue="train-q")
    received = []
    with celery.connection_for_read() as conn:
        queue = conn.SimpleQueue("train-q")
        for _ in range(3):
            message = queue.get(timeout=5)
            received.append(message.payload[0])
            message.ack()
        queue.close()
    assert received == [[1], [2], [3]]
