"""Autoscaling benchmark: a discrete-event simulator of one Celery queue on Kubernetes, driven by the
operator's own `jobqueue_operator.autoscaling` and by re-implementations of KEDA's and a static baseline.

Modules: trace (the CSV format), sim (queue, pods, dispatch, scale-down), policies (who decides replicas),
report (metrics, table, JSON, plot), traces (the seeded generator of bench/traces), suite (every shipped
trace, the target check), tick_cost (one operator tick for 1,000 queues). CLI: `python -m bench.autoscale`.
"""
