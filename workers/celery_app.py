"""The worker's Celery app: the shared client configuration plus the tasks in workers.tasks
(training) and workers.predict (predictions). Every task checks the message's signature first."""
import logging
import time

from celery import Task
from celery.worker import state as worker_state
from celery.worker.request import Request

from app.queue import SIGNATURE_HEADER, get_celery, signature_ok
from workers import device_report

log = logging.getLogger(__name__)
celery = get_celery()


class AckWhenBrokerReturns(Request):
    """Acknowledges a finished task even when the broker was away when it ended.

    Celery logs a failed ack and moves on. With one message in flight per worker (prefetch 1, late
    acks) that unacknowledged message keeps the worker's only credit, so kombu stops polling the broker
    socket, never sees that the connection died, and the worker consumes nothing again after the broker
    restarts. Retrying until the broker answers frees the credit; the consumer then notices the broken
    connection and reconnects. The run itself is already recorded in the database."""

    def acknowledge(self):
        delay = 0.5
        while not self.acknowledged:
            try:
                self._message.ack()
                self.acknowledged = True
            except self._connection_errors as exc:
                if worker_state.should_stop is not None or worker_state.should_terminate is not None:
                    log.warning("shutting down without acknowledging %s (the broker is away: %s); its run is "
                                "recorded, a redelivered message finds it ended", self.id, exc)
                    return
                log.warning("could not acknowledge %s (the broker is away: %s); retrying in %.1f s",
                            self.id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


class SignedTask(Task):
    """Runs only messages the server signed with the shared secret (PEFTLAB_SECRET_KEY)."""

    Request = AckWhenBrokerReturns

    def __call__(self, *args, **kwargs):
        headers = getattr(self.request, "headers", None) or {}
        signature = getattr(self.request, SIGNATURE_HEADER, None) or headers.get(SIGNATURE_HEADER)
        if kwargs or not signature_ok(self.name, list(args), signature):
            log.error("refusing %s%s: the message is not signed with this deployment's secret key", self.name, args)
            # Counted for the workers table, so the server can say why runs stay queued (its key differs from
            # this worker's PEFTLAB_SECRET_KEY). Only the count and the time: the message is not to be trusted.
            device_report.note_refusal()
            return None
        return super().__call__(*args, **kwargs)


celery.Task = SignedTask  # tasks decorated after this line use it
celery.conf.imports = ("workers.tasks", "workers.predict")
