"""Pinned versions of everything the local cluster is built from.

Change a version here and the next `make binaries` builds it into a new cache folder; the old
one stays until you delete it.
"""

from typing import Final

K8S_VERSION: Final = "v1.36.3"
"""kube-apiserver, kube-controller-manager, kube-scheduler and kubectl (from k8s.io/kubernetes)."""

ETCD_VERSION: Final = "v3.6.16"
"""etcd server (from go.etcd.io/etcd/server/v3)."""

HELM_VERSION: Final = "v3.22.0"
"""helm (from helm.sh/helm/v3)."""

MIN_GO_VERSION: Final = (1, 26)
"""The oldest Go toolchain whose `go` directive accepts all three modules above."""
