"""jobqueue-operator: runs Celery job queues on Kubernetes."""

__version__ = "0.1.0"
