"""The local node agent: a small kubelet that runs the Pods bound to its Node from their images (runc), or as
host processes for the one image reserved for tests that want them (`hostprocess`).

Test and demo infrastructure only. Modules, each with one job:
`node` (Node object and lease), `envvars` (container environment as the kubelet builds it), `status` (Pod status
from container states), `probes` (probe bookkeeping and probing), `backoff` (restart decisions), `memory` (memory
use of a process tree), `network` (bridge, a network namespace per Pod), `names` (hosts files), `services` (Service
names in hosts files, the TCP forwarder), `containers` (one container's process), `volumes` (a Pod's volumes on the
host), `mounter` (a container's mounts, run inside its mount namespace), `storage` (the local-path StorageClass and
provisioner, run by `cloud`), `imagestore` (images in containers-storage), `oci` (a container from an image,
decided as the kubelet does), `seccomp` (the runtime's default seccomp profile), `runc` (one run of it),
`hostprocess` (which image runs as host processes), `logs` (a log file per run), `kubeletapi` (the kubelet port
behind `kubectl logs`, `exec`, `port-forward`), `spdy` (SPDY/3.1 frames), `spdyconn` (one SPDY connection's
streams), `streaming` (exec and port-forward sessions), `pods` (one Pod's worker), `informer` (list+watch into a
cache), `layout` (a node's name, folder, Pod addresses and cgroup), `cleanup` (end everything a dead agent left),
`agent` (wires it together). `cloud` is the one cluster-level process beside the agents (one per node): Service
forwarding and volumes, which belong to no node.
"""
