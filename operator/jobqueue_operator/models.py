"""Pydantic models of the JobQueue resource: the one Python view of the CRD.

Field names, defaults and ranges mirror `charts/jobqueue-operator/crds/jobqueues.jobqueue.dev.yaml`;
tests/unit/operator/test_crd.py fails when the two disagree. The API server has already validated and
defaulted what the operator reads, so these models mostly give it types; the checks the schema cannot
express (a Secret that does not exist, an unreachable broker) live in the reconciler.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from jobqueue_operator import naming
from jobqueue_worker import contract

GROUP: Final = "jobqueue.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "jobqueues"
KIND: Final = "JobQueue"
API_VERSION: Final = f"{GROUP}/{VERSION}"

Quantity = int | str
"""A Kubernetes quantity as the API server stores it: 512Mi, 0.5, 100m, or an integer."""

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIXES: Final = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(quantity: Quantity) -> Decimal:
    """The value of a Kubernetes quantity in base units (bytes, cores)."""
    match = _QUANTITY.match(str(quantity).strip())
    if match is None:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    return Decimal(number) * _SUFFIXES[suffix]


class Model(BaseModel):
    """Base of every model: camelCase on the wire, snake_case in Python, unknown fields kept out."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SecretKeyRef(Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class Resources(Model):
    requests: dict[str, Quantity] = Field(default_factory=dict)
    limits: dict[str, Quantity] = Field(default_factory=dict)


class Persistence(Model):
    enabled: bool = False
    size: Quantity = "1Gi"
    storage_class_name: str | None = None
    keep_on_delete: bool = True


SENTINEL_MEMBERS: Final = 3
"""Redis Pods (one master, two replicas) and Sentinels of a highly available broker: fixed, so that a quorum of
two Sentinels survives the loss of any one node."""
SENTINEL_QUORUM: Final = 2


class HighAvailability(Model):
    """A managed broker of three Redis Pods watched by three Sentinels (docs/broker.md, "Managed high
    availability"). Clients reach it through Sentinel (`sentinel://`)."""

    enabled: bool = False
    down_after_milliseconds: int = Field(default=5000, ge=1000, le=600_000)
    """Sentinel's `down-after-milliseconds`: how long the master may not answer before it is declared down."""
    failover_timeout_milliseconds: int = Field(default=10000, ge=1000, le=3_600_000)
    """Sentinel's `failover-timeout`."""
    min_replicas_to_write: int = Field(default=1, ge=0, le=SENTINEL_MEMBERS - 1)
    """Redis's `min-replicas-to-write`: the master refuses writes unless this many replicas are in sync."""
    min_replicas_max_lag_seconds: int = Field(default=10, ge=1, le=3600)
    """Redis's `min-replicas-max-lag`: a replica whose last acknowledgement is older is not in sync."""
    pod_anti_affinity: Literal["preferred", "required", "none"] = "preferred"
    """How the Redis Pods (and, apart, the Sentinels) spread over nodes (`kubernetes.io/hostname`)."""


class ManagedBroker(Model):
    image: str = Field(default="redis:7.4", min_length=1)
    persistence: Persistence = Persistence()
    resources: Resources | None = None
    high_availability: HighAvailability = HighAvailability()


class ExternalBroker(Model):
    url_secret_ref: SecretKeyRef


class Broker(Model):
    managed: ManagedBroker | None = None
    external: ExternalBroker | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Broker:
        if (self.managed is None) == (self.external is None):
            raise ValueError("set exactly one of broker.managed and broker.external")
        return self


class PrometheusSource(Model):
    """A PromQL query whose value is the queue's count of waiting tasks (instead of the broker's lists)."""

    server_address: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    query: str = Field(min_length=1, max_length=4096)
    timeout_seconds: int = Field(default=5, ge=1, le=60)


class Autoscaling(Model):
    enabled: bool = True
    min_replicas: int = Field(default=0, ge=0, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    target_tasks_per_worker: int | None = Field(default=None, ge=1, le=100000)
    target_wait_seconds: int | None = Field(default=None, ge=1, le=86400)
    scale_down_stabilization_seconds: int = Field(default=0, ge=0, le=86400)
    idle_seconds_before_zero: int | None = Field(default=None, ge=0, le=86400)
    """None: automatic (autoscaling.idle_keep_seconds)."""
    startup_seconds: int | None = Field(default=None, ge=0, le=3600)
    """None: the operator's estimate of the queue's pod start-up."""
    prometheus: PrometheusSource | None = None

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        return self


class QueueAlerts(Model):
    """Alerting thresholds of one queue, exported as metrics (the rules compare against them)."""

    backlog_threshold: int | None = Field(default=None, ge=1, le=100_000_000)


class DeadLetter(Model):
    """The queue's dead-letter list (docs/worker-contract.md, "Dead letters")."""

    enabled: bool = True
    max_length: int = Field(default=contract.DEFAULT_DEAD_LETTER_MAX_LENGTH, ge=1, le=1_000_000)
    max_worker_losses: int = Field(default=contract.DEFAULT_MAX_WORKER_LOSSES, ge=0, le=1000)


IntOrPercent = Annotated[int, Field(ge=0, strict=True)] | Annotated[str, Field(pattern=r"^[0-9]+%$")]
"""A count or a percentage of a queue's workers, as a PodDisruptionBudget takes it: 1, "25%"."""


class Disruption(Model):
    """How many of a queue's workers voluntary disruptions (a `kubectl drain`, any eviction) may take at once:
    the queue's PodDisruptionBudget (docs/operator.md, "Drains and disruptions")."""

    max_unavailable: IntOrPercent | None = None
    """Unset: the operator's default (`build.workers.budget_limit`): keep one serving where the queue's floor
    is at least one worker, else one at a time."""


DEFAULT_MAX_SHUTDOWN_SECONDS: Final = 600
"""The longest a worker Pod's shutdown may take by default: the cluster autoscaler's own limit for a node it
drains (--max-graceful-termination-sec), so a worker hands its tasks back before the autoscaler kills it."""


Pool = Literal["prefork", "threads", "solo", "gevent", "eventlet"]
QUEUE_NAME_MAX: Final = 200
"""Longest queue name: keeps its Redis keys and metric labels sane (the Kubernetes names use its slug)."""
QUEUE_NAME_PATTERN: Final = r"^[!-~]+$"
"""Any name Celery accepts that is printable ASCII without whitespace (`high_priority`, `video.transcode`,
`CamelCase`, `a:b`): one word on a command line, one Redis key, never kombu's priority separator."""


def reserved_queue_name(name: str) -> str | None:
    """Why `name` cannot be a queue (a Redis key kombu, Celery or the operator keep for themselves), or None."""
    if name in contract.RESERVED_QUEUE_NAMES:
        return f"{name!r} is a Redis key kombu keeps for itself"
    for prefix in contract.RESERVED_QUEUE_PREFIXES:
        if name.startswith(prefix):
            return f"names starting with {prefix!r} are Redis keys kombu or the operator keep for themselves"
    for suffix in contract.RESERVED_QUEUE_SUFFIXES:
        if name.endswith(suffix):
            return f"names ending in {suffix!r} are Celery's reply queues"
    return None


def queue_name_problem(name: str) -> str | None:
    """Why the schema refuses `name` as a queue name, or None when it accepts it."""
    if not 0 < len(name) <= QUEUE_NAME_MAX:
        return f"a queue name has 1 to {QUEUE_NAME_MAX} characters"
    if re.match(QUEUE_NAME_PATTERN, name) is None:
        return "a queue name is printable ASCII without whitespace"
    return reserved_queue_name(name)


def _not_reserved(name: str) -> str:
    why = reserved_queue_name(name)
    if why is not None:
        raise ValueError(why)
    return name


QueueName = Annotated[
    str, Field(min_length=1, max_length=QUEUE_NAME_MAX, pattern=QUEUE_NAME_PATTERN), AfterValidator(_not_reserved)
]


class Queue(Model):
    name: QueueName
    concurrency: int = Field(default=1, ge=1, le=256)
    pool: Pool = "prefork"
    resources: Resources | None = None
    max_memory_per_child: Quantity | None = None
    max_tasks_per_child: int = Field(default=0, ge=0, le=1_000_000)
    prefetch_multiplier: int = Field(default=1, ge=1, le=128)
    soft_time_limit_seconds: int | None = Field(default=None, ge=0, le=604800)
    time_limit_seconds: int | None = Field(default=None, ge=0, le=604800)
    visibility_timeout_seconds: int | None = Field(default=None, ge=1, le=2592000)
    priority_levels: int = Field(default=4, ge=1, le=10)
    replicas: int | None = Field(default=None, ge=0, le=1000)
    autoscaling: Autoscaling | None = None
    alerts: QueueAlerts | None = None
    dead_letter: DeadLetter = Field(default_factory=DeadLetter)
    disruption: Disruption = Field(default_factory=Disruption)
    max_shutdown_seconds: int = Field(default=DEFAULT_MAX_SHUTDOWN_SECONDS, ge=20, le=86400)
    """The cap of the worker Pods' terminationGracePeriodSeconds (build/workers.py: `termination_grace`)."""

    @property
    def autoscaled(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.enabled


class EnvVar(Model):
    name: str = Field(min_length=1, max_length=253)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class ConfigMapEnvSource(Model):
    name: str
    optional: bool | None = None


class EnvFromSource(Model):
    prefix: str | None = None
    config_map_ref: ConfigMapEnvSource | None = None
    secret_ref: ConfigMapEnvSource | None = None


class LocalObjectReference(Model):
    name: str = Field(min_length=1)


class Toleration(Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Beat(Model):
    enabled: bool = False
    resources: dict[str, Any] | None = None


class Flower(Model):
    enabled: bool = False
    image: str = Field(default="mher/flower:2.0", min_length=1)


class Results(Model):
    backend_secret_ref: SecretKeyRef | None = None
    expires_seconds: int = Field(default=86400, ge=0, le=31536000)


class JobQueueSpec(Model):
    image: str = Field(min_length=1, max_length=512)
    app: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?$")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=32)
    service_account_name: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: dict[str, Any] | None = None
    topology_spread_constraints: list[dict[str, Any]] | None = Field(default=None, max_length=16)
    """None: the worker Pods spread over nodes (build/workers.py: `SPREAD`); an empty list: no constraint."""
    broker: Broker = Broker(managed=ManagedBroker())
    queues: list[Queue] = Field(min_length=1, max_length=50)
    beat: Beat = Beat()
    flower: Flower = Flower()
    results: Results = Results()

    @model_validator(mode="after")
    def _unique_queue_names(self) -> JobQueueSpec:
        names = [queue.name for queue in self.queues]
        if len(names) != len(set(names)):
            raise ValueError("queue names must be unique")
        slugs: dict[str, str] = {}
        for name in names:  # a DNS-label name that is another name's slug would share its worker Deployment
            other = slugs.setdefault(naming.queue_slug(name), name)
            if other != name:
                raise ValueError(f"queue names {other!r} and {name!r} map to the same Kubernetes names: rename one")
        return self


class JobQueue(Model):
    """A JobQueue as the operator needs it: identity plus the spec."""

    model_config = ConfigDict(extra="ignore")

    name: str
    namespace: str
    uid: str = ""
    generation: int = 0
    spec: JobQueueSpec

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> JobQueue:
        """Parse a JobQueue object as the API server returns it."""
        metadata = body.get("metadata", {})
        return cls(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata.get("uid", ""),
            generation=metadata.get("generation", 0),
            spec=JobQueueSpec.model_validate(body.get("spec", {})),
        )


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None


class ScaleDownStep(Model):
    """One step of the autoscaler's scale-down window: hold `replicas` until `until`."""

    until: str
    replicas: int


OldestAgeSource = Literal["sent-time", "first-seen", "arrivals"]
"""How the age of a queue's oldest waiting task was measured (jobqueue_operator.oldest)."""


class QueueStatus(Model):
    """One queue's status entry. The reconciler writes the Deployment's fields, the autoscaler the broker's
    and its own; each leaves the other's unset (None), so a server-side apply touches only its own."""

    name: str
    deployment: str | None = None
    ready: int | None = None
    in_flight: int | None = None
    oldest_task_age_seconds: int | None = None
    oldest_task_age_source: OldestAgeSource | None = None
    """Where `oldest_task_age_seconds` comes from (jobqueue_operator.oldest says how each is measured)."""
    dead_letters: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = None
    last_scale_time: str | None = None
    idle_since: str | None = None
    scale_down_hold: list[ScaleDownStep] | None = None


class UnservedQueue(Model):
    """A Celery queue in the broker that holds tasks and that no queue of the JobQueue serves."""

    name: str
    tasks: int


class DrainingQueue(Model):
    """A queue removed from the spec whose workers keep running until it is empty."""

    name: str
    deployment: str
    tasks: int | None = None


class JobQueueStatus(Model):
    observed_generation: int | None = None
    queue_count: int | None = None
    backlog: int | None = None
    workers: str | None = None
    unserved_tasks: int | None = None
    last_observed_time: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    queues: list[QueueStatus] = Field(default_factory=list)
    unserved_queues: list[UnservedQueue] = Field(default_factory=list)
    draining_queues: list[DrainingQueue] = Field(default_factory=list)

    def to_body(self) -> dict[str, Any]:
        """The status as the API server stores it (camelCase, unset fields and empty lists left out: in a
        server-side apply, a field left out is one this writer no longer asserts)."""
        dumped = self.model_dump(by_alias=True, exclude_none=True)
        return {key: value for key, value in dumped.items() if value != []}
