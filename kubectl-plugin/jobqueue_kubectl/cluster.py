"""The plugin's reads from the API server: JobQueues, their Events, Secrets and the broker's Pod."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from jobqueue_kubectl.errors import PluginError
from jobqueue_operator import models

Body = dict[str, Any]


def _reason(exc: ApiException) -> str:
    return f"{exc.status} {exc.reason}".strip()


@dataclass
class Cluster:
    api: client.ApiClient
    default_namespace: str

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Cluster:
        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as exc:
            raise PluginError(f"no usable kubeconfig: {exc}") from None
        if context:
            contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c["name"] == context), active)
        namespace = (active.get("context") or {}).get("namespace") or "default"
        return cls(client.ApiClient(), namespace)

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise PluginError(f"{what} not found") from None
            raise PluginError(f"{what}: {_reason(exc)}") from None
        except HTTPError as exc:
            raise PluginError(f"cannot reach the API server: {exc}") from None

    def jobqueue(self, namespace: str, name: str) -> Body:
        body: Body = self._call(
            f"JobQueue {namespace}/{name}",
            client.CustomObjectsApi(self.api).get_namespaced_custom_object,
            models.GROUP, models.VERSION, namespace, models.PLURAL, name,
        )  # fmt: skip
        return body

    def jobqueues(self, namespace: str | None) -> list[Body]:
        api = client.CustomObjectsApi(self.api)
        if namespace is None:
            listed = self._call(
                "JobQueues", api.list_cluster_custom_object, models.GROUP, models.VERSION, models.PLURAL
            )
        else:
            listed = self._call(
                f"JobQueues in {namespace}",
                api.list_namespaced_custom_object, models.GROUP, models.VERSION, namespace, models.PLURAL,
            )  # fmt: skip
        return list(listed.get("items") or [])

    def events(self, namespace: str, name: str, limit: int) -> list[Body]:
        """The JobQueue's most recent Events, oldest first."""
        listed = self._call(
            f"Events of {namespace}/{name}",
            client.CoreV1Api(self.api).list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind={models.KIND},involvedObject.name={name}",
        )
        items = [self.api.sanitize_for_serialization(item) for item in listed.items]
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp"))
        return items[-limit:] if limit > 0 else []

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """Every key of a Secret, decoded."""
        secret = self._call(
            f"Secret {namespace}/{name}", client.CoreV1Api(self.api).read_namespaced_secret, name, namespace
        )
        return {key: base64.b64decode(value).decode() for key, value in (secret.data or {}).items()}

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        data = self.secret_data(namespace, name)
        if key not in data:
            raise PluginError(f"Secret {namespace}/{name} has no key {key}")
        return data[key]

    def pod_ip(self, namespace: str, name: str) -> str | None:
        try:
            pod = client.CoreV1Api(self.api).read_namespaced_pod(name, namespace)
        except (ApiException, HTTPError):
            return None
        return pod.status.pod_ip if pod.status else None
