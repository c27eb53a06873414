from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from jobqueue_operator import models, naming


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("512Mi", 512 * 2**20), ("1Gi", 2**30), ("100m", Decimal("0.1")), (3, 3), ("1.5G", 1_500_000_000), ("1e3", 1000)],
)
def test_parse_quantity(quantity: models.Quantity, value: Decimal) -> None:
    assert models.parse_quantity(quantity) == value


def test_parse_quantity_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a quantity"):
        models.parse_quantity("lots")


def test_spec_defaults_to_a_managed_broker() -> None:
    spec = models.JobQueueSpec.model_validate({"image": "i", "app": "a", "queues": [{"name": "q"}]})
    assert spec.broker.managed is not None
    assert spec.broker.external is None
    assert spec.queues[0].prefetch_multiplier == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"queues": [{"name": "q"}, {"name": "q"}]}, "unique"),
        ({"queues": [{"name": "a b"}]}, "pattern"),
        ({"queues": [{"name": "é"}]}, "pattern"),
        ({"queues": [{"name": "x" * 201}]}, "at most 200"),
        ({"queues": [{"name": "unacked"}]}, "kombu keeps"),
        ({"queues": [{"name": "unacked_index"}]}, "kombu keeps"),
        ({"queues": [{"name": "_kombu.binding.celery"}]}, "_kombu."),
        ({"queues": [{"name": "jobqueue:workers"}]}, "jobqueue:"),
        ({"queues": [{"name": "x.reply.celery.pidbox"}]}, "reply queues"),
        ({"queues": [{"name": "q", "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}]}, "minReplicas"),
        ({"queues": [{"name": "q"}], "broker": {}}, "exactly one"),
        ({"queues": []}, "at least 1"),
    ],
)
def test_invalid_specs(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        models.JobQueueSpec.model_validate({"image": "i", "app": "a", **spec})


def test_from_body_and_status_body() -> None:
    jq = models.JobQueue.from_body(
        {
            "metadata": {"name": "m", "namespace": "n", "uid": "u", "generation": 4},
            "spec": {"image": "i", "app": "a", "queues": [{"name": "q"}]},
        }
    )
    assert (jq.name, jq.namespace, jq.uid, jq.generation) == ("m", "n", "u", 4)
    status = models.JobQueueStatus(observed_generation=4, queue_count=1)
    # Empty lists are left out too: in a server-side apply of the status they would assert "nothing".
    assert status.to_body() == {"observedGeneration": 4, "queueCount": 1}


@pytest.mark.parametrize(
    "names", [["high_priority", "video.transcode", "CamelCase"], ["Q", "q"], ["a_b", "a-b"], ["50%off", "a:b/c@d"]]
)
def test_queue_names_celery_accepts_are_accepted(names: list[str]) -> None:
    spec = models.JobQueueSpec.model_validate({"image": "i", "app": "a", "queues": [{"name": n} for n in names]})
    assert [queue.name for queue in spec.queues] == names


def test_a_name_that_is_another_names_slug_is_refused() -> None:
    taken = naming.queue_slug("a_b")
    with pytest.raises(ValidationError, match="map to the same Kubernetes names"):
        models.JobQueueSpec.model_validate({"image": "i", "app": "a", "queues": [{"name": "a_b"}, {"name": taken}]})


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("high_priority", None),
        ("x" * 200, None),
        ("", "1 to 200 characters"),
        ("x" * 201, "1 to 200 characters"),
        ("a b", "without whitespace"),
        ("unacked_mutex", "kombu keeps"),
    ],
)
def test_queue_name_problem_is_the_schemas_verdict(name: str, problem: str | None) -> None:
    found = models.queue_name_problem(name)
    assert found == problem if problem is None else problem in (found or "")
