"""The worker's Celery app: the shared client configuration plus the tasks in workers.tasks
(training) and workers.predict (predictions). Every task checks the message's signature first."""
import logging

from celery import Task

from app.queue import SIGNATURE_HEADER, get_celery, signature_ok

log = logging.getLogger(__name__)
celery = get_celery()


class SignedTask(Task):
    """Runs only messages the server signed with the shared secret (PEFTLAB_SECRET_KEY)."""

    def __call__(self, *args, **kwargs):
        headers = getattr(self.request, "headers", None) or {}
        signature = getattr(self.request, SIGNATURE_HEADER, None) or headers.get(SIGNATURE_HEADER)
        if kwargs or not signature_ok(self.name, list(args), signature):
            log.error("refusing %s%s: the message is not signed with this deployment's secret key", self.name, args)
            return None
        return super().__call__(*args, **kwargs)


celery.Task = SignedTask  # tasks decorated after this line use it
celery.conf.imports = ("workers.tasks", "workers.predict")
