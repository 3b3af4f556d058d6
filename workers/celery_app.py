"""The worker's Celery app: the shared client configuration plus the tasks in workers.tasks."""
from app.queue import get_celery

celery = get_celery()
celery.conf.imports = ("workers.tasks",)
