"""A third-party-style Celery app, as a team would write it without knowing about jobqueue-operator: its
own broker for local development, its own result backend (rpc://), routes, time limits and task names."""

from __future__ import annotations

import time

from celery import Celery

app = Celery("shop", broker="redis://localhost:6379/9", backend="rpc://")
app.conf.update(
    task_routes={"shop.invoice": {"queue": "billing"}, "shop.report": {"queue": "reports"}},
    task_time_limit=120,
    task_soft_time_limit=100,
    result_extended=True,
)


@app.task(name="shop.invoice")  # type: ignore[untyped-decorator]  # celery is untyped
def invoice(order: int) -> str:
    return f"invoice-{order}"


@app.task(name="shop.report")  # type: ignore[untyped-decorator]
def report(seconds: float = 0.1) -> float:
    time.sleep(seconds)
    return seconds
