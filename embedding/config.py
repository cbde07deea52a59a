"""The shard server's configuration contract: every setting `python -m embedding.server`
takes, its flag, its environment variable and its default, declared once.

The server builds its argument parser from OPTIONS (`parse`), and the RecModel controller
writes a shard Deployment's env with the same Option objects (`Option.value`,
`Option.secret`), so a name exists in one place. Standard library only: the operator
imports this without the server's dependencies.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

COMMAND = ("python", "-m", "embedding.server")
# A server started by hand is reachable from its own host only; a pod's server binds
# every interface (ALL_INTERFACES), since probes and clients reach it on the pod IP.
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
# grpc.health.v1 services on the lookup port: LOOKUP_HEALTH_SERVICE (and the server
# overall) serves once a version is active, LIVENESS_HEALTH_SERVICE while the process
# answers, so a server with no version yet is not ready but is not restarted for it.
LOOKUP_HEALTH_SERVICE = "recop.embedding.v1.EmbeddingLookup"
LIVENESS_HEALTH_SERVICE = "liveness"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Read by boto3 rather than by the parser: the standard AWS variables for where the
# checkpoints are and who may read them.
S3_ENV = ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
          "AWS_SECRET_ACCESS_KEY")

MAX_IDS_RANGE = (1, 1 << 26)
MAX_REQUEST_BYTES_RANGE = (1 << 16, 1 << 30)


@dataclass(frozen=True)
class LookupLimits:
    """What one lookup request may ask of the server."""

    max_ids_per_request: int = 1 << 20
    max_request_bytes: int = 64 << 20

    def problem(self) -> str | None:
        for name, value, (low, high) in (
                ("max ids per request", self.max_ids_per_request, MAX_IDS_RANGE),
                ("max request bytes", self.max_request_bytes, MAX_REQUEST_BYTES_RANGE)):
            if not low <= value <= high:
                return f"{name} is {value}, outside [{low}, {high}]"
        if self.max_request_bytes < 8 * self.max_ids_per_request:
            return (f"max request bytes {self.max_request_bytes} cannot hold "
                    f"{self.max_ids_per_request} ids (8 bytes each)")
        return None


@dataclass(frozen=True)
class StreamAuth:
    """SASL credentials for the brokers of the delta stream."""

    security_protocol: str  # SASL_SSL or SASL_PLAINTEXT
    mechanism: str
    username: str
    # Kept out of repr, so that no log line or traceback that shows the config shows it.
    password: str = field(repr=False)

    def describe(self) -> str:
        return f"{self.security_protocol} {self.mechanism} as {self.username!r}"


@dataclass(frozen=True)
class ServerConfig:
    shard_index: int
    shard_count: int
    lookup_port: int
    admin_port: int
    metrics_port: int  # 0: no metrics endpoint
    kafka_bootstrap: str  # empty: no real-time updates
    topic: str
    realtime_start: str
    lookup_threads: int
    load_threads: int
    host: str
    limits: LookupLimits
    admin_token_file: str  # empty: the admin API takes any caller (loopback, dev)
    admin_tls_cert: str  # PEM files; empty: plaintext admin API
    admin_tls_key: str
    stream_auth: StreamAuth | None  # None: PLAINTEXT


@dataclass(frozen=True)
class Option:
    """One setting: a flag, an environment variable that gives its default, or both."""

    dest: str
    flag: str | None  # None: environment only
    env: str | None  # None: flag only
    type: Callable[[str], object] = str
    default: object = ""
    choices: tuple[str, ...] | None = None
    help: str | None = None

    def value(self, value: object) -> dict:
        """This setting as a container env entry."""
        return {"name": self.env, "value": str(value)}

    def secret(self, secret_key_ref: dict) -> dict:
        """This setting as a container env entry taken from a Secret's key."""
        return {"name": self.env, "valueFrom": {"secretKeyRef": secret_key_ref}}


_LIMITS = LookupLimits()
SHARD_INDEX = Option("shard_index", "--shard-index", "RECOP_SHARD_INDEX", int, 0)
SHARD_COUNT = Option("shard_count", "--shard-count", "RECOP_SHARD_COUNT", int, 1)
LOOKUP_PORT = Option("lookup_port", "--lookup-port", "RECOP_LOOKUP_PORT", int, 50051,
                     help="lookups and grpc.health.v1 (the kubelet's probes)")
ADMIN_PORT = Option("admin_port", "--admin-port", "RECOP_ADMIN_PORT", int, 50052)
METRICS_PORT = Option("metrics_port", "--metrics-port", "RECOP_METRICS_PORT", int, 0,
                      help="Prometheus metrics; 0: none")
HOST = Option("host", "--host", "RECOP_BIND_HOST", default=LOOPBACK)
KAFKA_BOOTSTRAP = Option("kafka_bootstrap", "--kafka-bootstrap", "RECOP_KAFKA_BOOTSTRAP",
                         help="brokers of the delta stream; empty: no real-time updates")
TOPIC = Option("topic", "--topic", "RECOP_DELTA_TOPIC", default="recop-embedding-deltas")
REALTIME_START = Option("realtime_start", "--realtime-start", "RECOP_REALTIME_START",
                        default="latest", choices=("latest", "earliest"))
KAFKA_SECURITY_PROTOCOL = Option(
    "kafka_security_protocol", "--kafka-security-protocol", "RECOP_KAFKA_SECURITY_PROTOCOL",
    default="PLAINTEXT", choices=SECURITY_PROTOCOLS,
    help="SASL_*: the password comes from RECOP_KAFKA_PASSWORD")
KAFKA_SASL_MECHANISM = Option("kafka_sasl_mechanism", "--kafka-sasl-mechanism",
                              "RECOP_KAFKA_SASL_MECHANISM", default=None,
                              choices=SASL_MECHANISMS)
KAFKA_USERNAME = Option("kafka_username", "--kafka-username", "RECOP_KAFKA_USERNAME")
# Only from the environment: a flag would show the password to anyone who can list
# processes.
KAFKA_PASSWORD = Option("kafka_password", None, "RECOP_KAFKA_PASSWORD")
LOOKUP_THREADS = Option("lookup_threads", "--lookup-threads", None, int, 4)
LOAD_THREADS = Option("load_threads", "--load-threads", None, int, 10)
MAX_IDS = Option("max_ids", "--max-ids", "RECOP_LOOKUP_MAX_IDS", int,
                 _LIMITS.max_ids_per_request, help="most ids one lookup request may carry")
MAX_REQUEST_BYTES = Option("max_request_bytes", "--max-request-bytes",
                           "RECOP_LOOKUP_MAX_REQUEST_BYTES", int, _LIMITS.max_request_bytes,
                           help="largest lookup request accepted")
ADMIN_TOKEN_FILE = Option("admin_token_file", "--admin-token-file", "RECOP_ADMIN_TOKEN_FILE",
                          help="file holding the bearer token admin calls must carry")
ADMIN_TLS_CERT = Option("admin_tls_cert", "--admin-tls-cert", "RECOP_ADMIN_TLS_CERT",
                        help="PEM certificate (chain) of the admin endpoint; TLS when set")
ADMIN_TLS_KEY = Option("admin_tls_key", "--admin-tls-key", "RECOP_ADMIN_TLS_KEY")

OPTIONS = (SHARD_INDEX, SHARD_COUNT, LOOKUP_PORT, ADMIN_PORT, METRICS_PORT, HOST,
           KAFKA_BOOTSTRAP, TOPIC, REALTIME_START, KAFKA_SECURITY_PROTOCOL,
           KAFKA_SASL_MECHANISM, KAFKA_USERNAME, KAFKA_PASSWORD, LOOKUP_THREADS, LOAD_THREADS,
           MAX_IDS, MAX_REQUEST_BYTES, ADMIN_TOKEN_FILE, ADMIN_TLS_CERT, ADMIN_TLS_KEY)
# Every environment variable the server reads, itself or through boto3.
ENV = frozenset(o.env for o in OPTIONS if o.env) | frozenset(S3_ENV)


def parse(argv: Sequence[str] | None, environ: Mapping[str, str]) -> ServerConfig:
    """The server's configuration from its flags, with `environ` giving the defaults;
    exits (argparse's way) on a setting the server cannot run with."""
    p = argparse.ArgumentParser(prog=" ".join(COMMAND))
    for o in OPTIONS:
        if o.flag is not None:
            # argparse converts a string default with `type`, as it does a flag's value.
            default = environ.get(o.env, o.default) if o.env else o.default
            p.add_argument(o.flag, dest=o.dest, type=o.type, default=default,
                           choices=o.choices, help=o.help)
    a = p.parse_args(argv)
    if not 0 <= a.shard_index < a.shard_count:
        p.error("need 0 <= shard-index < shard-count")
    limits = LookupLimits(a.max_ids, a.max_request_bytes)
    if (problem := limits.problem()) is not None:
        p.error(f"lookup limits: {problem}")
    if bool(a.admin_tls_cert) != bool(a.admin_tls_key):
        p.error("--admin-tls-cert and --admin-tls-key go together")
    stream_auth = None
    if a.kafka_security_protocol != "PLAINTEXT":
        password = environ.get(KAFKA_PASSWORD.env, "")
        if not (a.kafka_sasl_mechanism and a.kafka_username and password):
            p.error(f"{a.kafka_security_protocol} needs --kafka-sasl-mechanism, "
                    f"--kafka-username and {KAFKA_PASSWORD.env}")
        stream_auth = StreamAuth(a.kafka_security_protocol, a.kafka_sasl_mechanism,
                                 a.kafka_username, password)
    return ServerConfig(
        a.shard_index, a.shard_count, a.lookup_port, a.admin_port, a.metrics_port,
        a.kafka_bootstrap, a.topic, a.realtime_start, a.lookup_threads, a.load_threads,
        a.host, limits, a.admin_token_file, a.admin_tls_cert, a.admin_tls_key, stream_auth)
