"""Celery worker bootstrap for queues managed by jobqueue-operator."""

__version__ = "0.1.0"
