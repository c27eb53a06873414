"""The local node agent: a small "process kubelet" that runs the Pods bound to its Node as host processes.

Test and demo infrastructure only. Modules, each with one job:
`node` (Node object and lease), `envvars` (container environment as the kubelet builds it),
`status` (Pod status from container states), `probes` (probe bookkeeping and probing), `backoff`
(restart decisions), `memory` (memory use of a process tree), `network` (bridge, a network namespace
per Pod), `names` (hosts files), `services` (Service addresses and the TCP forwarder), `containers`
(one container's process), `volumes` (a Pod's volumes on the host), `mounter` (a container's
mounts, run inside its mount namespace), `storage` (the local-path StorageClass and provisioner),
`pods` (one Pod's worker), `informer` (list+watch into a cache),
`cleanup` (end everything a dead agent left), `agent` (wires it together).
"""
