from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobqueue_operator import naming
from jobqueue_operator.models import JobQueue


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
    jq = JobQueue.model_validate(
        {"name": "m", "namespace": "n", "spec": {"image": "i", "app": "a", "queues": [{"name": "q"}]}}
    )
    selector = naming.selector_labels(jq, naming.WORKER, "q")
    labels = naming.labels(jq, naming.WORKER, "q")
    assert selector.items() <= labels.items()
    assert labels[naming.QUEUE_LABEL] == "q"
    assert naming.children_selector("m") == "jobqueue.dev/jobqueue=m,app.kubernetes.io/managed-by=jobqueue-operator"


# -- queue names: the real name for Celery, Redis, metrics and the status; its slug for Kubernetes --------

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
"""A label value as the API server validates it (apimachinery's `IsValidLabelValue`), at most 63 characters."""
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CELERY_NAMES = [
    "high_priority",
    "video.transcode",
    "CamelCase",
    "Q",
    "q",
    "a_b",
    "a-b",
    "___",
    "50%off",
    "tasks:email/send@eu",
    "-leading-dash",
    "x" * 200,
    "a" * 41,
    "ü-not-ascii",
]


@pytest.mark.parametrize("queue", ["high", "q", "q-1", "media-thumbnails", "0", "x" * 40])
def test_a_dns_label_name_keeps_the_object_names_of_earlier_versions(queue: str) -> None:
    assert naming.queue_slug(queue) == queue
    assert naming.worker_deployment("media", queue) == f"media-{queue}-worker"
    assert naming.queue_annotations(queue) == {}


def test_slugs_are_pinned_across_versions() -> None:
    """Changing these moves every existing worker Deployment of such a queue: never do it."""
    assert naming.queue_slug("high_priority") == "high-priority-08a0d49f"
    assert naming.queue_slug("video.transcode") == "video-transcode-0bfb8997"
    assert naming.queue_slug("CamelCase") == "camelcase-c89dc0a1"
    assert naming.queue_slug("___") == "bda25155"
    assert naming.worker_deployment("media", "high_priority") == "media-high-priority-08a0d49f-worker"


@pytest.mark.parametrize(("one", "other"), [("a_b", "a-b"), ("Q", "q"), ("a.b", "a_b"), ("x" * 41, "x" * 42)])
def test_names_that_sanitize_alike_get_different_objects(one: str, other: str) -> None:
    assert naming.queue_slug(one) != naming.queue_slug(other)
    assert naming.worker_deployment("media", one) != naming.worker_deployment("media", other)


@pytest.mark.parametrize("queue", CELERY_NAMES)
def test_every_slug_is_a_dns_label_and_a_label_value_within_bounds(queue: str) -> None:
    slug = naming.queue_slug(queue)
    assert DNS_LABEL.match(slug), slug
    assert LABEL_VALUE.match(slug), slug
    assert len(slug) <= naming.SLUG_HEAD + 1 + naming.SLUG_HASH
    assert naming.queue_slug(queue) == slug  # the same name, the same slug
    deployment = naming.worker_deployment("j" * 63, queue)
    assert len(deployment) <= naming.MAX_NAME, deployment
    assert DNS_LABEL.match(deployment), deployment


@pytest.mark.parametrize("queue", CELERY_NAMES)
def test_the_real_name_is_read_back_from_what_the_operator_wrote(queue: str) -> None:
    jq = JobQueue.model_validate(
        {"name": "m", "namespace": "n", "spec": {"image": "i", "app": "a", "queues": [{"name": "q"}]}}
    )
    metadata = {"labels": naming.labels(jq, naming.WORKER, queue), "annotations": naming.queue_annotations(queue)}
    assert metadata["labels"][naming.QUEUE_LABEL] == naming.queue_slug(queue)
    assert naming.queue_of(metadata) == queue
    assert naming.queue_of({"labels": {naming.COMPONENT_LABEL: naming.BROKER}}) is None
    selector = dict(part.split("=", 1) for part in naming.queue_selector("m", queue).split(","))
    assert selector.items() <= metadata["labels"].items()


def test_a_deployment_of_an_earlier_version_maps_back_by_its_label() -> None:
    assert naming.queue_of({"labels": {naming.QUEUE_LABEL: "high"}}) == "high"


def test_the_table_in_the_docs_is_what_the_operator_does() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "operator.md").read_text()
    section = text.split("## Queue names", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| `([^`]+)` \|$", section, re.MULTILINE)
    assert len(rows) >= 8
    for queue, slug, deployment in rows:
        assert (naming.queue_slug(queue), naming.worker_deployment("media", queue)) == (slug, deployment), queue
