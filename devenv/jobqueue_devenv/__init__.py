"""Local development environment: a real Kubernetes control plane without Docker.

This is test and demo infrastructure, not part of the product. It builds the control-plane
binaries from Go modules, starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and a local node agent as plain processes on 127.0.0.1, and stops them again.
"""
