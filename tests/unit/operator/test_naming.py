from __future__ import annotations

from jobqueue_operator import naming


def test_short_names_are_kept() -> None:
    assert naming.worker_deployment("media", "high") == "media-high-worker"
    assert naming.redis("media") == "media-redis"
    assert naming.redis_secret("media") == "media-redis-auth"


def test_long_names_are_cut_with_a_hash_and_stay_distinct() -> None:
    jobqueue = "a" * 60
    first = naming.worker_deployment(jobqueue, "queue-one")
    second = naming.worker_deployment(jobqueue, "queue-two")
    assert len(first) == len(second) == 63
    assert first != second
    assert first == naming.worker_deployment(jobqueue, "queue-one")
    assert not first[:54].endswith("-")


def test_bounded_never_leaves_a_dash_before_the_hash() -> None:
    name = naming.bounded("x" * 53 + "-" * 20)
    assert "--" not in name
    assert len(name) <= 63


def test_selector_is_a_subset_of_the_labels() -> None:
    from jobqueue_operator.models import JobQueue

    jq = JobQueue.model_validate(
        {"name": "m", "namespace": "n", "spec": {"image": "i", "app": "a", "queues": [{"name": "q"}]}}
    )
    selector = naming.selector_labels(jq, naming.WORKER, "q")
    labels = naming.labels(jq, naming.WORKER, "q")
    assert selector.items() <= labels.items()
    assert labels[naming.QUEUE_LABEL] == "q"
    assert naming.children_selector("m") == "jobqueue.dev/jobqueue=m,app.kubernetes.io/managed-by=jobqueue-operator"
