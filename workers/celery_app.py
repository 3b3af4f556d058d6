"""The worker's Celery app: the shared client configuration plus the tasks in workers.tasks
(training) and workers.predict (predictions)."""
from app.queue import get_celery

celery = get_celery()
celery.conf.imports = ("workers.tasks", "workers.predict")
