"""Prometheus scrape configs from rendered ServiceMonitor and PodMonitor objects, translated the way the
Prometheus Operator translates them (Kubernetes service discovery plus the same relabelling), so a plain
Prometheus on the host scrapes exactly the targets the chart's monitors select, labelled as they would be.

What is translated: the label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist), the
namespace selector, the port name, path, interval, timeout, honorLabels, the generated `namespace`/`pod`/
`container`/`service`/`job`/`endpoint` labels, then the monitor's own relabelings and metricRelabelings.
Not translated (the chart uses none of it): TLS and auth settings, sharding, sample limits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Manifest = Mapping[str, Any]

_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "replacement": "replacement",
    "regex": "regex",
    "separator": "separator",
    "modulus": "modulus",
    "action": "action",
}


def _sanitize(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def relabel(rule: Mapping[str, Any]) -> dict[str, Any]:
    """A Prometheus Operator RelabelConfig (camelCase) as a Prometheus relabel_config."""
    converted = {_RELABEL_KEYS[key]: value for key, value in rule.items() if key in _RELABEL_KEYS}
    if "action" in converted:
        converted["action"] = str(converted["action"]).lower()
    return converted


def _selector(role: str, selector: Mapping[str, Any]) -> list[dict[str, Any]]:
    """keep/drop rules for a label selector on the discovered object's labels."""
    rules: list[dict[str, Any]] = []

    def sources(key: str) -> list[str]:
        name = _sanitize(key)
        return [f"__meta_kubernetes_{role}_label_{name}", f"__meta_kubernetes_{role}_labelpresent_{name}"]

    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        rules.append({"action": "keep", "source_labels": sources(key), "regex": f"({re.escape(value)});true"})
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = "|".join(re.escape(v) for v in expression.get("values") or [])
        if operator == "In":
            rules.append({"action": "keep", "source_labels": sources(key), "regex": f"({values});true"})
        elif operator == "NotIn":
            rules.append({"action": "drop", "source_labels": sources(key), "regex": f"({values});true"})
        elif operator == "Exists":
            rules.append({"action": "keep", "source_labels": sources(key)[1:], "regex": "true"})
        elif operator == "DoesNotExist":
            rules.append({"action": "drop", "source_labels": sources(key)[1:], "regex": "true"})
        else:
            raise ValueError(f"unknown selector operator {operator!r}")
    return rules


def _namespaces(monitor: Manifest) -> dict[str, Any]:
    selector = monitor["spec"].get("namespaceSelector") or {}
    if selector.get("any"):
        return {}
    names = selector.get("matchNames") or [monitor["metadata"]["namespace"]]
    return {"namespaces": {"names": list(names)}}


def _replace(source: str, target: str) -> dict[str, Any]:
    return {"action": "replace", "source_labels": [source], "target_label": target}


def _job(
    kind: str, monitor: Manifest, index: int, endpoint: Mapping[str, Any], role: str, kubeconfig: str
) -> dict[str, Any]:
    meta = monitor["metadata"]
    job: dict[str, Any] = {
        "job_name": f"{kind}/{meta['namespace']}/{meta['name']}/{index}",
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "kubernetes_sd_configs": [{"role": role, "kubeconfig_file": kubeconfig, **_namespaces(monitor)}],
    }
    if endpoint.get("interval"):
        job["scrape_interval"] = endpoint["interval"]
    if endpoint.get("scrapeTimeout"):
        job["scrape_timeout"] = endpoint["scrapeTimeout"]
    if endpoint.get("metricRelabelings"):
        job["metric_relabel_configs"] = [relabel(rule) for rule in endpoint["metricRelabelings"]]
    return job


def service_monitor(monitor: Manifest, kubeconfig: str) -> list[dict[str, Any]]:
    """One scrape job per endpoint of a ServiceMonitor (role endpoints)."""
    jobs = []
    for index, endpoint in enumerate(monitor["spec"]["endpoints"]):
        job = _job("serviceMonitor", monitor, index, endpoint, "endpoints", kubeconfig)
        port = endpoint["port"]
        job["relabel_configs"] = [
            {"action": "replace", "source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            *_selector("service", monitor["spec"]["selector"]),
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": re.escape(port)},
            {
                "action": "replace",
                "source_labels": [
                    "__meta_kubernetes_endpoint_address_target_kind",
                    "__meta_kubernetes_endpoint_address_target_name",
                ],
                "separator": ";",
                "regex": "Pod;(.*)",
                "target_label": "pod",
            },
            _replace("__meta_kubernetes_namespace", "namespace"),
            _replace("__meta_kubernetes_service_name", "service"),
            _replace("__meta_kubernetes_pod_name", "pod"),
            _replace("__meta_kubernetes_pod_container_name", "container"),
            _replace("__meta_kubernetes_service_name", "job"),
            {"action": "replace", "target_label": "endpoint", "replacement": port},
            *(relabel(rule) for rule in endpoint.get("relabelings") or []),
        ]
        jobs.append(job)
    return jobs


def pod_monitor(monitor: Manifest, kubeconfig: str) -> list[dict[str, Any]]:
    """One scrape job per podMetricsEndpoint of a PodMonitor (role pod)."""
    meta = monitor["metadata"]
    jobs = []
    for index, endpoint in enumerate(monitor["spec"]["podMetricsEndpoints"]):
        job = _job("podMonitor", monitor, index, endpoint, "pod", kubeconfig)
        port = endpoint["port"]
        job["relabel_configs"] = [
            {"action": "replace", "source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
            *_selector("pod", monitor["spec"]["selector"]),
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": re.escape(port),
            },
            _replace("__meta_kubernetes_namespace", "namespace"),
            _replace("__meta_kubernetes_pod_container_name", "container"),
            _replace("__meta_kubernetes_pod_name", "pod"),
            {"action": "replace", "target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            {"action": "replace", "target_label": "endpoint", "replacement": port},
            *(relabel(rule) for rule in endpoint.get("relabelings") or []),
        ]
        jobs.append(job)
    return jobs


def scrape_configs(documents: Iterable[Manifest], kubeconfig: str) -> list[dict[str, Any]]:
    """The scrape jobs of every ServiceMonitor and PodMonitor among `documents` (e.g. `helm template`)."""
    jobs: list[dict[str, Any]] = []
    for document in documents:
        if document.get("kind") == "ServiceMonitor":
            jobs += service_monitor(document, kubeconfig)
        elif document.get("kind") == "PodMonitor":
            jobs += pod_monitor(document, kubeconfig)
    return jobs


def monitors(documents: Sequence[Manifest]) -> list[Manifest]:
    return [d for d in documents if d.get("kind") in ("ServiceMonitor", "PodMonitor")]
