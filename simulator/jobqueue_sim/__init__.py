"""jobqueue_sim: a discrete-event simulator of one Celery queue on Kubernetes, for the autoscaler.

The benchmark (`python -m bench.autoscale`, bench/autoscale/suite.py), the real-cluster replay
(bench/autoscale_replay.py) and the unit tests all use it. It drives the operator's own
`jobqueue_operator.autoscaling.decide`, measured the operator's way (`rates`, `startup`), and
re-implementations of KEDA and a static baseline.

Modules: trace (the CSV format), shapes (the seeded trace generators), model (queue, pods, dispatch,
scale-down), policies (who decides the replicas), bounds (the pod bound and friends), report (the numbers
per policy and the table).
"""
