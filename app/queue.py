"""The Celery client both sides share. The server only sends task names; it never imports workers/.

Embedded default: kombu's filesystem transport in data_dir/broker (no server needed).
At scale: PEFTLAB_BROKER_URL=redis://…
"""
import hashlib
import hmac
import json
from functools import lru_cache

from celery import Celery

from app.broker_files import TRANSPORT
from app.config import Settings, get_settings

TRAIN_TASK = "peftlab.train_run"
PREDICT_TASK = "peftlab.predict"


def make_celery(settings: Settings) -> Celery:
    celery = Celery("peftlab", broker=settings.resolved_broker_url)
    conf: dict = dict(
        task_default_queue=settings.train_queue,
        task_ignore_result=True,          # the database is the source of truth, not a result backend
        task_acks_late=True,              # a worker that dies mid-run leaves its message for another
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,     # one run at a time per worker: no run waits behind a long one
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # No remote control: a worker would obey control messages (cancel_consumer, add_consumer,
        # shutdown, …) from anyone who can write to the broker, and those cannot be signed. peftlab
        # needs none: cancelling goes through the database, and nothing pings or inspects workers.
        worker_enable_remote_control=False,
    )
    if settings.resolved_broker_url.startswith("filesystem://"):
        folder = settings.broker_dir / "messages"
        folder.mkdir(parents=True, exist_ok=True)
        for sub in ("processed", "control"):
            (settings.broker_dir / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport"] = TRANSPORT  # kombu's, writing each message file atomically
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder), "data_folder_out": str(folder),
            "processed_folder": str(settings.broker_dir / "processed"), "store_processed": False,
            "control_folder": str(settings.broker_dir / "control"),  # default is ./control in the cwd
            "polling_interval": 0.5,
        }
    elif settings.resolved_broker_url.startswith("redis"):
        # A run can take hours: the message must not be redelivered while its worker is alive
        # (the lease and the reaper handle dead workers).
        conf["broker_transport_options"] = {"visibility_timeout": 7 * 24 * 3600}
    celery.conf.update(conf)
    return celery


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


# Workers act only on messages signed with the shared secret: whoever can write to the broker
# but does not hold PEFTLAB_SECRET_KEY cannot make a worker do anything.
SIGNATURE_HEADER = "peftlab_signature"


def sign(task: str, args: list) -> str:
    message = json.dumps([task, args], separators=(",", ":")).encode()
    return hmac.new(get_settings().resolved_secret_key.encode(), message, hashlib.sha256).hexdigest()


def signature_ok(task: str, args: list, signature: str | None) -> bool:
    return bool(signature) and hmac.compare_digest(signature, sign(task, args))


def _send(task: str, args: list, queue: str, countdown: float | None = None) -> None:
    get_celery().send_task(task, args=args, queue=queue, headers={SIGNATURE_HEADER: sign(task, args)},
                           countdown=countdown or None)


def send_train(run_id: int, countdown: float | None = None) -> None:
    """countdown: seconds before a worker may start it (a message passed on by a worker that could not take it)."""
    _send(TRAIN_TASK, [run_id], get_settings().train_queue, countdown)


def send_predict(request_id: int) -> None:
    """A prediction request (a row of inference_requests) for the predict queue's workers."""
    _send(PREDICT_TASK, [request_id], get_settings().predict_queue)
