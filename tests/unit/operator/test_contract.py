"""The operator's side and the worker's side of the contract cannot disagree: the env the builder writes
is what the worker's settings accept, value for value, and the shared module stays dependency-free."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobqueue_operator.build import workers
from jobqueue_worker import contract
from jobqueue_worker.settings import load_settings
from tests.unit.operator.conftest import samples
from tests.unit.operator.test_builders import _sample

BROKER_URL = "redis://:secret@broker.apps.svc:6379/0"
FIELDS = {"metadata.name": "media-worker-high-7d9c-abcde", "metadata.namespace": "apps", "metadata.uid": "pod-uid-1"}


def _resolve(variable: dict[str, Any]) -> str:
    """The value the kubelet would give one env entry (Secrets: a fake URL; fields: fake Pod data)."""
    if "value" in variable:
        return str(variable["value"])
    source = variable["valueFrom"]
    if "secretKeyRef" in source:
        return BROKER_URL
    return FIELDS[source["fieldRef"]["fieldPath"]]


@pytest.mark.parametrize("stem", [p.stem for p in samples()])
def test_every_queue_of_every_sample_is_a_valid_worker_configuration(stem: str) -> None:
    jq = _sample(stem)
    for queue in jq.spec.queues:
        environ = {variable["name"]: _resolve(variable) for variable in workers.env(jq, queue)}
        settings = load_settings(environ)
        assert settings.app == jq.spec.app
        assert settings.name == jq.name
        assert settings.queue == queue.name
        assert settings.broker_url == BROKER_URL
        assert settings.concurrency == queue.concurrency
        assert settings.pool.value == queue.pool
        assert settings.prefetch_multiplier == queue.prefetch_multiplier
        assert settings.time_limit_seconds == (queue.time_limit_seconds or 0)
        assert settings.soft_time_limit_seconds == (queue.soft_time_limit_seconds or 0)
        assert settings.visibility_timeout_seconds == workers.visibility_timeout(queue)
        assert list(settings.priority_steps) == contract.priority_steps(queue.priority_levels)
        assert settings.max_memory_per_child_kb == workers.max_memory_per_child_kib(queue)
        assert settings.metrics_port == contract.METRICS_PORT
        assert settings.pod_name == FIELDS["metadata.name"]
        assert settings.pod_namespace == FIELDS["metadata.namespace"]


def test_the_contract_module_imports_only_the_standard_library() -> None:
    path = Path(contract.__file__)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    # and importing it (with its package) loads no Celery: the operator's image has none
    check = "import sys, jobqueue_worker.contract; assert not {'celery', 'kombu'} & set(sys.modules), sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, cwd=path.parents[1])


def test_a_message_as_sent_has_no_redelivery_marks_and_is_a_copy() -> None:
    restored = {
        "body": "e30=",
        "headers": {"id": "t-1", "redelivered": True},
        "properties": {"delivery_info": {"exchange": "", "routing_key": "q", "redelivered": True}, "priority": 3},
    }
    sent = contract.as_sent(restored)
    assert sent == {
        "body": "e30=",
        "headers": {"id": "t-1"},
        "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}, "priority": 3},
    }
    assert restored["headers"]["redelivered"] is True  # the input is left alone
    assert contract.as_sent({"body": "x", "headers": None}) == {"body": "x", "headers": None}


def test_dead_letters_and_registrations_round_trip_and_refuse_garbage() -> None:
    letter = contract.DeadLetter(contract.DeadLetterReason.UNKNOWN_TASK, {"body": "x"}, "q", task="t", task_id="1")
    assert contract.DeadLetter.from_json(letter.to_json()) == letter
    registration = contract.Registration("i", "q", "pod", "uid", "ns", 1.5, (0, 9), 42)
    assert contract.Registration.from_json(registration.to_json()) == registration
    for garbage in ("{", "[]", '{"reason": "nope", "message": {}, "queue": "q"}', '{"reason": "failed", "queue": "q"}'):
        with pytest.raises(ValueError, match="not a dead letter"):
            contract.DeadLetter.from_json(garbage)
    with pytest.raises(ValueError, match="not a worker registration"):
        contract.Registration.from_json('{"instance": "i"}')


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@redis.apps.svc:6379/0", "redis://redis.apps.svc:6379"),
        ("rediss://user:pw@10.0.0.1:6380/2?ssl_cert_reqs=none", "rediss://10.0.0.1:6380"),
        ("sentinel://:pw@s1:26379;sentinel://:pw@s2:26379", "sentinel://s1:26379"),
        ("redis://:pw@host:notaport/0", "redis://host:?"),
    ],
)
def test_urls_in_messages_carry_no_credentials(url: str, shown: str) -> None:
    assert contract.redacted(url) == shown
