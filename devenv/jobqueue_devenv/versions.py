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

HELM_KUBE_VERSION: Final = "1.37"
"""The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`): what helm's own
release build sets from its k8s.io/client-go (v0.37.0 for v3.22.0). A helm built from Go modules without it
assumes 1.20 and refuses every chart that needs a newer Kubernetes (ours: kubeVersion >=1.30)."""

PROMETHEUS_VERSION: Final = "v0.309.1"
"""prometheus and promtool 3.9.1 (from github.com/prometheus/prometheus, whose module versions are
v0.3XX.Y for release 3.XX.Y), for the tests only. Newer releases need github.com/pb33f/go-yaml, which the
Go module proxy does not serve."""

PINT_VERSION: Final = "v0.87.0"
"""pint, Cloudflare's Prometheus rule linter (from github.com/cloudflare/pint), for the tests only."""

HELM_DOCS_VERSION: Final = "v1.14.2"
"""helm-docs (from github.com/norwoodj/helm-docs): the chart README from values.yaml comments."""

MIN_GO_VERSION: Final = (1, 26)
"""The oldest Go toolchain whose `go` directive accepts all three modules above."""
