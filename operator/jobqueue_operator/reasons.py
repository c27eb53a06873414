"""PURE: every reason the operator writes into a condition or an Event, as typed constants.

One bounded set, like the autoscaler's `autoscaling.Reason`: users match on these in alerts and scripts,
so they are part of the API (docs/operator.md lists them).
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Ready / BrokerReady / WorkersAvailable / Degraded when all is well
    ALL_QUEUES_AVAILABLE = "AllQueuesAvailable"
    ALL_QUEUES_SERVED = "AllQueuesServed"
    AS_EXPECTED = "AsExpected"
    REDIS_READY = "RedisReady"
    BROKER_REACHABLE = "BrokerReachable"
    # The spec
    INVALID_SPEC = "InvalidSpec"
    # The broker
    REDIS_STARTING = "RedisStarting"
    REDIS_PODS_REFUSED = "RedisPodsRefused"
    REDIS_FAILING = "RedisFailing"
    BROKER_SECRET_MISSING = "BrokerSecretMissing"
    BROKER_UNREACHABLE = "BrokerUnreachable"
    BROKER_AUTH_FAILED = "BrokerAuthFailed"
    BROKER_NODE_LOST = "BrokerNodeLost"
    BROKER_MEMORY_FULL = "BrokerMemoryFull"
    BROKER_MEMORY_AVAILABLE = "BrokerMemoryAvailable"
    BROKER_MEMORY_DRAINING = "BrokerMemoryDraining"
    BROKER_MEMORY_RESERVE_OPENED = "BrokerMemoryReserveOpened"
    BROKER_MEMORY_RESERVE_CLOSED = "BrokerMemoryReserveClosed"
    BROKER_MEMORY_RESERVE_FAILED = "BrokerMemoryReserveFailed"
    # A Sentinel-managed broker's members (the BrokerAvailable condition and the BrokerFailover Event)
    BROKER_REPLICATED = "BrokerReplicated"
    BROKER_NO_MASTER = "BrokerNoMaster"
    BROKER_WRITES_REFUSED = "BrokerWritesRefused"
    BROKER_UNDER_REPLICATED = "BrokerUnderReplicated"
    BROKER_QUORUM_LOST = "BrokerQuorumLost"
    BROKER_FAILOVER = "BrokerFailover"
    # The managed broker's template and password (the BrokerUpToDate condition and Events)
    BROKER_POD_CURRENT = "BrokerPodCurrent"
    BROKER_RESTART_HELD = "BrokerRestartHeld"
    BROKER_RESTARTING = "BrokerRestarting"
    BROKER_RESTARTED = "BrokerRestarted"
    BROKER_PASSWORD_ROTATING = "BrokerPasswordRotating"
    BROKER_PASSWORD_ROTATED = "BrokerPasswordRotated"
    BROKER_CONFIGURE_FAILED = "BrokerConfigureFailed"
    BROKER_MODE_SWITCH_REFUSED = "BrokerModeSwitchRefused"
    # The workers
    WORKERS_UNAVAILABLE = "WorkersUnavailable"
    WORKERS_STARTING = "WorkersStarting"
    WORKER_PODS_REFUSED = "WorkerPodsRefused"
    WORKERS_FAILING = "WorkersFailing"
    WORKERS_STALLED = "WorkersStalled"
    # References and writes
    CONFIG_MISSING = "ConfigMissing"
    RESULT_BACKEND_SECRET_MISSING = "ResultBackendSecretMissing"
    # The workers' result backend (the ResultBackendReady condition, folded into Ready and Degraded)
    RESULT_BACKEND_REACHABLE = "ResultBackendReachable"
    RESULT_BACKEND_UNREACHABLE = "ResultBackendUnreachable"
    APPLY_FAILED = "ApplyFailed"
    DELETE_FAILED = "DeleteFailed"
    # Queues
    UNSERVED_QUEUES = "UnservedQueues"
    QUEUE_DRAINING = "QueueDraining"
    QUEUE_DRAINED = "QueueDrained"
    # Children (Events)
    CREATED = "Created"
    UPDATED = "Updated"
    DELETED = "Deleted"
    # The autoscaler (Events and the ScalingActive condition)
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    SCALE_FAILED = "ScaleFailed"
    METRIC_QUERY_FAILED = "MetricQueryFailed"
    METRICS_AVAILABLE = "MetricsAvailable"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    NOT_AUTOSCALED = "NotAutoscaled"
    AUTOSCALING_PAUSED = "AutoscalingPaused"
    # Delivery (Events)
    WORKER_LOST = "WorkerLost"
    # The operator itself (an Event on its Lease)
    LEADER_ELECTION = "LeaderElection"
    DEAD_LETTERS = "DeadLetters"
