"""The CRD (one source file), the samples and the pydantic models agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from jobqueue_operator import models
from jobqueue_worker import contract
from tests.unit.operator.conftest import crd, samples, schema


def _defaulted(node: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in, the way the API server does it."""
    if isinstance(value, dict) and node.get("type") == "object":
        result = dict(value)
        for name, child in (node.get("properties") or {}).items():
            if name not in result and "default" in child:
                result[name] = child["default"]
            if name in result:
                result[name] = _defaulted(child, result[name])
        return result
    if isinstance(value, list) and "items" in node:
        return [_defaulted(node["items"], item) for item in value]
    return value


def _walk(node: dict[str, Any], path: str = "", item: bool = False) -> list[tuple[str, dict[str, Any], bool]]:
    """Every schema node below `node`: dotted path (list items add no segment), node, whether a list item."""
    found = [(path, node, item)]
    for name, child in (node.get("properties") or {}).items():
        found += _walk(child, f"{path}.{name}" if path else name)
    if "items" in node:
        found += _walk(node["items"], path, item=True)
    return found


def test_crd_names_and_subresources() -> None:
    spec = crd()["spec"]
    assert spec["group"] == models.GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == models.PLURAL
    assert spec["names"]["kind"] == models.KIND
    assert spec["names"]["shortNames"] == ["jq"]
    (version,) = spec["versions"]
    assert version["name"] == models.VERSION
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Queues", "Backlog", "Unserved", "Workers", "Ready", "Reason", "Scaling", "Observed", "Age"]


def test_every_field_has_a_description() -> None:
    nodes = _walk(schema()["properties"]["spec"], "spec") + _walk(schema()["properties"]["status"], "status")
    missing = [path for path, node, item in nodes if not item and "description" not in node]
    assert missing == []


@pytest.mark.parametrize("sample", samples(), ids=lambda p: p.stem)
def test_sample_validates_against_the_schema_and_parses(sample: Path) -> None:
    document = yaml.safe_load(sample.read_text())
    jsonschema.validate(document, schema())
    defaulted = _defaulted(schema(), document)
    defaulted["metadata"]["namespace"] = "default"
    jq = models.JobQueue.from_body(defaulted)
    assert jq.name == document["metadata"]["name"]
    assert [q.name for q in jq.spec.queues] == [q["name"] for q in document["spec"]["queues"]]


def test_there_are_samples() -> None:
    assert len(samples()) >= 3


def _model_for(path: str) -> type[BaseModel] | None:
    """The model class whose fields are the properties at `path` (dotted, camelCase)."""
    model: type[BaseModel] = models.JobQueueSpec
    for part in path.split(".")[1:]:
        field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        for candidate in list(candidates):
            candidates += getattr(candidate, "__args__", ())
        nested = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nested is None:
            return None
        model = nested
    return model


def _object_nodes() -> list[tuple[str, dict[str, Any]]]:
    return [(p, n) for p, n, _ in _walk(schema()["properties"]["spec"], "spec") if n.get("properties")]


@pytest.mark.parametrize(("path", "node"), _object_nodes(), ids=[p for p, _ in _object_nodes()])
def test_models_and_schema_agree_on_fields_required_and_defaults(path: str, node: dict[str, Any]) -> None:
    model = _model_for(path)
    assert model is not None, f"no model for {path}"
    fields = {f.alias: f for f in model.model_fields.values()}
    assert set(fields) == set(node["properties"]), path
    required = {alias for alias, f in fields.items() if f.is_required()}
    assert required == set(node.get("required", [])), path
    for name, child in node["properties"].items():
        field = fields[name]
        if "default" in child and not field.is_required():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
                assert default == child["default"] or _defaulted(child, child["default"]) == default, f"{path}.{name}"
            else:
                assert default == child["default"], f"{path}.{name}"


def test_schema_defaults_are_model_defaults_for_a_minimal_spec() -> None:
    minimal = {"image": "i", "app": "a:app", "queues": [{"name": "q", "autoscaling": {}}]}
    defaulted = _defaulted(schema()["properties"]["spec"], minimal)
    from_schema = models.JobQueueSpec.model_validate(defaulted)
    from_models = models.JobQueueSpec.model_validate(minimal)
    assert from_schema == from_models


def _queue_name_node() -> dict[str, Any]:
    node: dict[str, Any] = schema()["properties"]["spec"]["properties"]["queues"]["items"]["properties"]["name"]
    return node


def test_the_queue_name_schema_is_the_models() -> None:
    node = _queue_name_node()
    assert node["pattern"] == models.QUEUE_NAME_PATTERN
    assert (node["minLength"], node["maxLength"]) == (1, models.QUEUE_NAME_MAX)
    (rule,) = node["x-kubernetes-validations"]
    for name in contract.RESERVED_QUEUE_NAMES:
        assert f"'{name}'" in rule["rule"]
        assert name in rule["message"]
    for prefix in contract.RESERVED_QUEUE_PREFIXES:
        assert f"self.startsWith('{prefix}')" in rule["rule"]
        assert f"{prefix}*" in rule["message"]
    for suffix in contract.RESERVED_QUEUE_SUFFIXES:
        assert f"self.endsWith('{suffix}')" in rule["rule"]
        assert f"*{suffix}" in rule["message"]


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("high_priority", True),
        ("video.transcode", True),
        ("CamelCase", True),
        ("50%off", True),
        ("x" * 200, True),
        ("a b", False),
        ("tab\there", False),
        ("ü", False),
        ("", False),
        ("x" * 201, False),
    ],
)
def test_the_schema_and_the_models_agree_on_a_queue_name(name: str, accepted: bool) -> None:
    """The pattern and lengths, checked by jsonschema as the API server checks them (the CEL rule: above)."""
    node = {k: v for k, v in _queue_name_node().items() if not k.startswith("x-")}
    valid = jsonschema.Draft7Validator(node).is_valid(name)
    assert valid == accepted
    assert (models.queue_name_problem(name) is None) == accepted
