"""A ready Celery app with only the built-in tasks: `app: jobqueue_worker.demo:app`, no user code needed.

Unconfigured on purpose: the worker entry point sets its broker, backend and limits from the
environment, and `jobqueue_worker.producer` does the same for senders.
"""

from __future__ import annotations

from celery import Celery

import jobqueue_worker.sent_time  # stamps the send time on everything this app sends
import jobqueue_worker.tasks  # noqa: F401  # registers the built-in tasks with this app

app = Celery("jobqueue-demo", set_as_current=True)
