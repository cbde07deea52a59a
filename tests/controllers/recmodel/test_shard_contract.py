"""A built shard Deployment, fed to the embedding server's own argument parser: what the
operator writes is what the server reads (embedding/config.py declares both sides)."""

from __future__ import annotations

import typing

import pytest
import yaml

from controllers.recmodel.objects import Owner, embedding_deployment, triton_deployment
from embedding import config as contract
from recop.api.recmodel import RecModelSpec, StreamAuth
from tests.examples import EXAMPLES

OWNER = Owner("ctr-ranker", "recsys", "uid-1")


def example_spec(**server) -> RecModelSpec:
    doc = yaml.safe_load((EXAMPLES / "valid" / "recmodel.yaml").read_text())
    doc["spec"]["embeddingServer"].update(server)
    return RecModelSpec.model_validate(doc["spec"])


def with_stream_auth(spec: RecModelSpec, **auth) -> RecModelSpec:
    doc = spec.to_wire()
    doc["stream"]["auth"] = {"mechanism": "SCRAM-SHA-512",
                             "username": {"name": "kafka-emb", "key": "user"},
                             "password": {"name": "kafka-emb", "key": "password"}, **auth}
    return RecModelSpec.model_validate(doc)


def secret_value(ref: dict) -> str:
    """What the kubelet would put in the env for a secretKeyRef (a stand-in)."""
    return f"<{ref['name']}/{ref['key']}>"


def container(spec: RecModelSpec, shard: int = 0) -> dict:
    return embedding_deployment(OWNER, spec, shard)["spec"]["template"]["spec"]["containers"][0]


def server_config(spec: RecModelSpec, shard: int = 0) -> contract.ServerConfig:
    """The pod's env and args, as the container would see them, parsed by the server."""
    c = container(spec, shard)
    environ = {e["name"]: e["value"] if "value" in e else
               secret_value(e["valueFrom"]["secretKeyRef"]) for e in c["env"]}
    command = list(contract.COMMAND)
    assert c["args"][:len(command)] == command
    return contract.parse(c["args"][len(command):], environ)


def test_the_server_reads_its_shard_ports_bind_address_and_limits():
    spec = example_spec(lookupLimits={"maxIdsPerRequest": 5000})
    for shard in (0, 7):
        config = server_config(spec, shard)
        assert (config.shard_index, config.shard_count) == (shard, 8)
        server = spec.embedding_server
        assert (config.lookup_port, config.admin_port, config.metrics_port) == (
            server.lookup_port, server.admin_port, server.metrics_port)
        assert config.host == contract.ALL_INTERFACES
        assert config.limits == contract.LookupLimits(5000, 64 << 20)


def test_the_probes_and_ports_are_the_ones_the_server_listens_on():
    spec = example_spec()
    config, c = server_config(spec), container(spec)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "lookup": config.lookup_port, "admin": config.admin_port,
        "metrics": config.metrics_port}
    assert c["readinessProbe"]["grpc"] == {"port": config.lookup_port,
                                           "service": contract.LOOKUP_HEALTH_SERVICE}
    assert c["livenessProbe"]["grpc"] == {"port": config.lookup_port,
                                          "service": contract.LIVENESS_HEALTH_SERVICE}


@pytest.mark.parametrize("limits", [
    {"maxIdsPerRequest": 1, "maxRequestBytes": 1 << 16},
    {"maxIdsPerRequest": 1 << 26, "maxRequestBytes": 1 << 30},
], ids=["smallest", "largest"])
def test_every_limit_the_api_admits_the_server_starts_with(limits):
    config = server_config(example_spec(lookupLimits=limits))
    assert config.limits == contract.LookupLimits(limits["maxIdsPerRequest"],
                                                  limits["maxRequestBytes"])


def test_the_server_reads_its_stream():
    spec = example_spec()
    config = server_config(spec)
    assert config.kafka_bootstrap == ",".join(spec.stream.brokers)
    assert config.topic == spec.stream.topic
    assert config.stream_auth is None


MECHANISMS = typing.get_args(StreamAuth.model_fields["mechanism"].annotation)


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("tls", [True, False], ids=["SASL_SSL", "SASL_PLAINTEXT"])
def test_the_server_reads_its_stream_credentials(mechanism, tls):
    config = server_config(with_stream_auth(example_spec(), mechanism=mechanism, tls=tls))
    assert config.stream_auth == contract.StreamAuth(
        "SASL_SSL" if tls else "SASL_PLAINTEXT", mechanism, "<kafka-emb/user>",
        "<kafka-emb/password>")


def test_the_server_reads_its_admin_token_and_tls_files():
    spec = example_spec(adminAuth={"tokenSecret": {"name": "a", "key": "t"}, "tlsSecret": "b"})
    config = server_config(spec)
    mounts = {m["mountPath"] for m in container(spec)["volumeMounts"]}
    for path in (config.admin_token_file, config.admin_tls_cert, config.admin_tls_key):
        assert path.rsplit("/", 1)[0] in mounts
    plain = server_config(example_spec(adminAuth=None))
    assert (plain.admin_token_file, plain.admin_tls_cert, plain.admin_tls_key) == ("", "", "")


@pytest.mark.parametrize("spec", [
    example_spec(adminAuth=None),
    with_stream_auth(example_spec()),
    example_spec(adminAuth={"tokenSecret": {"name": "a", "key": "t"}, "tlsSecret": "b"}),
], ids=["plain", "stream-auth", "admin-auth-tls"])
def test_every_variable_a_shard_pod_gets_is_one_the_server_reads(spec):
    names = [e["name"] for e in container(spec)["env"]]
    assert len(names) == len(set(names))
    assert set(names) <= contract.ENV, f"read by nothing: {set(names) - contract.ENV}"


def test_triton_gets_only_the_storage_credentials():
    env = triton_deployment(OWNER, example_spec())["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in env["env"]} <= {"AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3",
                                               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
