"""RecModel: one recommendation model, its sparse and dense halves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from recop.api.common import (
    ApiModel,
    Comparison,
    Condition,
    Duration,
    Name,
    PodPlacement,
    Resources,
    Rule,
    SecretKeyRef,
    conditions_field,
)

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


class EmbeddingTable(ApiModel):
    """One embedding table: int64 id -> vector of `dimension` values."""

    name: Name
    dimension: int = Field(ge=1, le=4096, description="Length of each embedding vector.")
    rows: int = Field(ge=1, le=10**12, description=(
        "Estimated row count; sizes the embedding servers' memory requests."))
    dtype: Literal["fp32", "fp16", "int8"] = Field(default="fp32", description=(
        "Serving storage type; int8 keeps a per-row scale."))

    def row_bytes(self) -> int:
        # int8 rows carry one fp32 scale each.
        scale = 4 if self.dtype == "int8" else 0
        return self.dimension * DTYPE_BYTES[self.dtype] + scale


class Sharding(ApiModel):
    """How ids are spread over embedding servers."""

    shards: int = Field(default=1, ge=1, le=1024, description="Number of shards.")
    replicas_per_shard: int = Field(default=2, ge=1, le=16, description=(
        "Interchangeable copies of each shard; 2 or more keeps a shard serving during a "
        "drain or rollout."))
    partitioning: Literal["splitmix64-mod"] = Field(default="splitmix64-mod", description=(
        "Partition function: shard = splitmix64(id) mod shards, stable across releases; "
        "the checkpoint manifest names it too."))

    cross_field_rules = (
        # Every checkpoint is cut for one shard count: changing it in place would send
        # lookups to servers that hold other ids.
        Rule("self.shards == oldSelf.shards",
             "shards cannot change on a live RecModel: create a new RecModel with the new "
             "shard count, land a full ModelVersion cut for it, and move traffic to it"),
    )


class LookupLimits(ApiModel):
    """What one lookup request may ask of one embedding server."""

    max_ids_per_request: int = Field(default=1 << 20, ge=1, le=1 << 26, description=(
        "Most ids (over all tables) in one request; refused with INVALID_ARGUMENT above."))
    max_request_bytes: int = Field(default=64 << 20, ge=1 << 16, le=1 << 30, description=(
        "Largest request message; gRPC refuses larger ones with RESOURCE_EXHAUSTED before "
        "reading them into memory."))

    cross_field_rules = (
        Rule("self.maxRequestBytes >= 8 * self.maxIdsPerRequest",
             "maxRequestBytes must hold maxIdsPerRequest ids (8 bytes each)",
             lambda s: s.max_request_bytes >= 8 * s.max_ids_per_request),
    )


class AdminAuth(ApiModel):
    """How the operator authenticates to the embedding servers' admin API (and, with
    TLS, how it knows it talks to them)."""

    token_secret: SecretKeyRef = Field(description=(
        "The bearer token every admin call must carry: mounted into the servers as a file, "
        "read by the operator from the Secret."))
    tls_secret: Name | None = Field(default=None, description=(
        "A kubernetes.io/tls Secret (tls.crt, tls.key, and ca.crt when a CA signed it): "
        "the admin port serves TLS with it and the operator verifies the servers against "
        "ca.crt (else tls.crt). The certificate must name each shard Service "
        "(<model>-emb-<shard>.<namespace>.svc, e.g. with *.<namespace>.svc), since pods "
        "are reached by IP."))


class EmbeddingServer(ApiModel):
    """Settings of the embedding server pods."""

    deployment: Literal["Managed", "External"] = Field(default="Managed", description=(
        "Managed: RecOp runs the servers as Deployments, one per shard. External: RecOp "
        "creates selector-less Services and discovers servers that run elsewhere (bare "
        "metal, local processes) through the EndpointSlices registered for them."))
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] = (
        "ghcr.io/recop/embedding-server:0.1.0")
    resources: Resources = Field(default_factory=Resources, description=(
        "Requests/limits; memory defaults to the shard's table size plus headroom."))
    memory_headroom_percent: int = Field(default=30, ge=0, le=400, description=(
        "Extra memory over the shard's data, for the version being loaded beside the "
        "serving one and for allocator slack."))
    lookup_port: int = Field(default=8500, ge=1, le=65535)
    admin_port: int = Field(default=8501, ge=1, le=65535)
    metrics_port: int = Field(default=9100, ge=1, le=65535)
    lookup_limits: LookupLimits = Field(default_factory=LookupLimits, description=(
        "What one lookup request may ask of one server; larger ones are refused with an "
        "error naming the limit (clients split a batch by shard, so a server sees about "
        "1/shards of it)."))
    admin_auth: AdminAuth | None = Field(default=None, description=(
        "Token (and TLS) for the admin API; unset: the admin port takes any caller that "
        "can reach it (for Managed servers RecOp's NetworkPolicy limits that to the "
        "operator's pods)."))

    cross_field_rules = (
        Rule("self.lookupPort != self.adminPort && self.lookupPort != self.metricsPort"
             " && self.adminPort != self.metricsPort",
             "lookupPort, adminPort and metricsPort must differ",
             lambda s: len({s.lookup_port, s.admin_port, s.metrics_port}) == 3),
    )


class InstanceGroup(ApiModel):
    """A Triton instance group (config.pbtxt `instance_group`)."""

    kind: Literal["KIND_GPU", "KIND_CPU"] = "KIND_GPU"
    count: int = Field(default=1, ge=1, le=64)


class DynamicBatching(ApiModel):
    enabled: bool = True
    max_queue_delay_microseconds: int = Field(default=500, ge=0, le=10_000_000)
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=list, max_length=16)


class EntryModel(ApiModel):
    """RecOp's predict model in the Triton pods: sparse ids per table in, the dense model's
    outputs out, both halves at one version (embedding/predict). It needs a Triton image
    that carries RecOp's data plane (the dev stack's triton-cpu image does)."""

    enabled: bool = Field(default=False, description=(
        "Serve the entry model (status.endpoints.predict) beside the dense model."))
    outputs: list[Name] = Field(default_factory=lambda: ["score"], min_length=1,
                                max_length=16, description=(
        "The dense model's FP32 outputs that a prediction answers with."))
    dense_inputs: dict[str, Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=dict, max_length=64, description=(
            "Dense features passed through to the dense model: input name -> width "
            "(FP32, one row per candidate). Each table's rows feed the dense input named "
            "after the table."))
    timeout_seconds: float = Field(default=5.0, gt=0, le=60, description=(
        "Deadline of one lookup on the shard servers."))
    when_shard_unavailable: Literal["Fail", "ZeroRows"] = Field(default="Fail", description=(
        "A request that needs a shard with no replica answering: Fail answers UNAVAILABLE "
        "naming the shard; ZeroRows scores it with zero rows for that shard's ids, counted "
        "in recop_predict_default_rows_total (the request still fails if no shard answers)."))


class Dense(ApiModel):
    """The dense half, served by NVIDIA Triton on GPU nodes."""

    model_name: Name = Field(description="Model name in Triton's repository.")
    deployment: Literal["Managed", "External"] = Field(default="Managed", description=(
        "Managed: RecOp runs Triton as a Deployment on GPU nodes. External: RecOp creates "
        "a selector-less Service and drives the Triton servers registered in its "
        "EndpointSlices (e.g. a shared GPU fleet, or a local server)."))
    backend: Literal["python", "onnxruntime", "pytorch", "tensorrt"] = "python"
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] = (
        "nvcr.io/nvidia/tritonserver:24.08-py3")
    replicas: int = Field(default=1, ge=0, le=256)
    gpus_per_pod: int = Field(default=1, ge=0, le=16)
    max_batch_size: int = Field(default=1024, ge=0, le=65536)
    instance_groups: list[InstanceGroup] = Field(
        default_factory=lambda: [InstanceGroup()], min_length=1, max_length=8)
    dynamic_batching: DynamicBatching = Field(default_factory=DynamicBatching)
    resources: Resources = Field(default_factory=Resources)
    entry_model: EntryModel = Field(default_factory=EntryModel)

    cross_field_rules = (
        Rule("self.gpusPerPod > 0 || !has(self.instanceGroups) || "
             "self.instanceGroups.all(g, g.kind == 'KIND_CPU')",
             "instanceGroups of kind KIND_GPU need gpusPerPod of at least 1",
             lambda d: d.gpus_per_pod > 0
             or all(g.kind == "KIND_CPU" for g in d.instance_groups)),
        Rule("!has(self.dynamicBatching) || !has(self.dynamicBatching.preferredBatchSizes) "
             "|| self.dynamicBatching.preferredBatchSizes.all(b, b <= self.maxBatchSize)",
             "dynamicBatching.preferredBatchSizes must not exceed maxBatchSize",
             lambda d: all(b <= d.max_batch_size
                           for b in d.dynamic_batching.preferred_batch_sizes)),
    )


class S3Storage(ApiModel):
    """Where this model's checkpoints live."""

    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, StringConstraints(max_length=512)] = ""
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=512)] | None = (
        Field(default=None, description="S3-compatible endpoint; AWS when unset."))
    region: Annotated[str, StringConstraints(max_length=64)] = "us-east-1"
    access_key_id: SecretKeyRef | None = Field(default=None, description=(
        "Credentials come only from Secrets, never from the spec itself."))
    secret_access_key: SecretKeyRef | None = None

    cross_field_rules = (
        Rule("has(self.accessKeyId) == has(self.secretAccessKey)",
             "accessKeyId and secretAccessKey must be set together",
             lambda s: (s.access_key_id is None) == (s.secret_access_key is None)),
    )


class StreamAuth(ApiModel):
    """SASL credentials for the stream's brokers."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(description=(
        "The SASL mechanism the brokers' listener takes."))
    username: SecretKeyRef = Field(description=(
        "Credentials come only from Secrets, never from the spec itself."))
    password: SecretKeyRef
    tls: bool = Field(default=True, description=(
        "SASL_SSL, verified against the system CAs; false: SASL_PLAINTEXT, which sends "
        "PLAIN passwords in the clear."))


class FreshnessObjective(ApiModel):
    """How fresh a model's rows must be: publish-to-visible, from a delta's timestamp in
    the stream to lookups returning it, as the shards measure it."""

    p99: Duration = Field(default="30s", description=(
        "Largest allowed p99 of publish-to-visible over the shards' recent deltas."))
    window: Duration = Field(default="1m", description=(
        "How long the p99 must stay over the objective before the model turns Degraded "
        "(with an Event); shorter excursions only show in status.freshness."))


class Stream(ApiModel):
    """The message queue carrying real-time row deltas (Kafka protocol)."""

    brokers: list[Annotated[str, StringConstraints(
        pattern=r"^[A-Za-z0-9.-]+:[0-9]{1,5}$", max_length=260)]] = Field(
        min_length=1, max_length=16, description="host:port of the bootstrap brokers.")
    topic: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
    freshness_objective: FreshnessObjective = Field(default_factory=FreshnessObjective)
    auth: StreamAuth | None = Field(default=None, description=(
        "SASL authentication; unset: the embedding servers connect in PLAINTEXT."))


class RollbackPolicy(ApiModel):
    """When a newly active version is rolled back by itself."""

    enabled: bool = True
    metric: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="PromQL returning one value, watched after a version turns active.")
    threshold: float
    comparison: Comparison = Field(default="GreaterThan", description=(
        "Roll back when the metric is GreaterThan (or LessThan) the threshold."))
    window: Duration = Field(default="10m", description="How long a new version is watched.")


class RecModelSpec(ApiModel):
    """A recommendation model: sharded embedding servers for its sparse half, Triton
    pods on GPU nodes for its dense half, and where its checkpoints live."""

    tables: list[EmbeddingTable] = Field(min_length=1, max_length=256)
    sharding: Sharding = Field(default_factory=Sharding)
    embedding_server: EmbeddingServer = Field(default_factory=EmbeddingServer)
    dense: Dense
    storage: S3Storage
    stream: Stream | None = None
    active_version: Name | None = Field(default=None, description=(
        "The ModelVersion that should serve; point it at an earlier one to roll back."))
    rollback_policy: RollbackPolicy | None = None
    embedding_placement: PodPlacement = Field(default_factory=PodPlacement)
    dense_placement: PodPlacement = Field(default_factory=PodPlacement)

    cross_field_rules = (
        Rule("self.tables.all(t, self.tables.exists_one(u, u.name == t.name))",
             "table names must be unique",
             lambda s: len({t.name for t in s.tables}) == len(s.tables),
             field_path=".tables"),
    )

    def bytes_per_shard(self) -> int:
        """Data held by one shard replica, assuming the hash spreads ids evenly."""
        total = sum(t.rows * t.row_bytes() for t in self.tables)
        return -(-total // self.sharding.shards)


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class Endpoints(ApiModel):
    embedding: str | None = Field(default=None, description="Lookup Service (host:port).")
    triton_grpc: str | None = None
    triton_http: str | None = None
    predict: str | None = Field(default=None, description=(
        "The entry model's KServe v2 infer URL, when spec.dense.entryModel is enabled."))


# The reason a model is Degraded while status.freshness says the objective is breached.
FRESHNESS_BREACHED = "FreshnessObjectiveBreached"


class Freshness(ApiModel):
    """The stream's freshness against spec.stream.freshnessObjective, reported by the
    realtime ModelVersion that applies it (and gone when none does)."""

    version: Name = Field(description="The realtime ModelVersion measuring it.")
    p99_seconds: float = Field(ge=0, description=(
        "Publish-to-visible p99 on the worst shard replica, over its recent deltas."))
    objective_p99_seconds: float = Field(ge=0)
    over_since: datetime | None = Field(default=None, description=(
        "Since when the p99 has been over the objective; unset while it meets it."))
    breached: bool = Field(default=False, description=(
        "Over the objective for the objective's window or longer: the model is Degraded."))


class RecModelStatus(ApiModel):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    conditions: list[Condition] = conditions_field()
    active_version: str | None = None
    last_clean_version: str | None = None
    shards: int | None = None
    ready_shards: int | None = Field(default=None, description=(
        "Shards with at least one ready replica."))
    ready_replicas: int | None = None
    triton_ready_replicas: int | None = None
    endpoints: Endpoints | None = None
    ready_generation: int | None = Field(default=None, description=(
        "The generation at which every replica was last ready: below it a shortfall is a "
        "rollout (Progressing), at it a loss (Degraded)."))
    freshness: Freshness | None = None

    def conditions_message(self, kind: str) -> str:
        return next((c.message for c in self.conditions if c.type == kind), "")
