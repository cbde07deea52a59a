"""Credentials never leak: the operator (a real process) lands a version on embedding
servers that demand an admin token over TLS, reading S3 keys, token and CA only from the
Secrets a RecModel names; then none of the S3 secret key, the admin token or the TLS
private key appears in the operator's log, the servers' logs, any RecOp object (spec,
status, annotations) or any Event of the namespace.

The MinIO access key id is the fixed word `recop` (devstack.minio), too common to
search for; the secret key beside it is random.
"""

from __future__ import annotations

import base64
import json
import secrets

import numpy as np
import pytest
from kubernetes_asyncio import client as kube_client
from kubernetes_asyncio import config

from controllers.common.admin_auth import admin_credentials
from controllers.common.kube import Kube
from controllers.common.secrets import SecretError
from devstack import minio as local_minio
from devstack.external import external_model, shard_slice
from devstack.shards import LocalAdminAuth, LocalCluster
from e2e.support import OperatorProcess, get_json, wait_for
from embedding.checkpoint import CheckpointWriter
from recop.api.recmodel import RecModelSpec
from tests.certs import self_signed

NS = "e2e-secrets"
BUCKET = "recop-e2e-secrets"
MODEL = "ranker"
TOKEN = secrets.token_urlsafe(24)


def apply(cluster, obj: dict) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=e2e", "-f", "-",
                    input=json.dumps(obj))


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def secret(name: str, data: dict[str, str | bytes], kind: str = "Opaque") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind,
            "metadata": {"name": name, "namespace": NS},
            "data": {k: b64(v) for k, v in data.items()}}


def model(endpoint: str) -> dict:
    return external_model(NS, MODEL, [{"name": "user", "dimension": 8, "rows": 1000}], 1,
                          BUCKET, endpoint, embeddingServer={
                              "deployment": "External", "adminAuth": {
                                  "tokenSecret": {"name": "admin", "key": "token"},
                                  "tlsSecret": "admin-tls"}})


def version(name: str, source: str) -> dict:
    return {"apiVersion": "serving.recop.dev/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"model": MODEL, "kind": "full", "source": source}}


@pytest.fixture(scope="module")
def parts(cluster):
    cluster.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found",
                    timeout=180)
    cluster.kubectl("create", "namespace", NS)
    s3 = local_minio.start()
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    ids = np.arange(1000, dtype=np.int64)
    CheckpointWriter(client, f"s3://{BUCKET}/v1", 1).write_full(
        1, {"user": (ids, np.ones((1000, 8), np.float32))})
    CheckpointWriter(client, f"s3://{BUCKET}/bad", 1).write_full(
        2, {"user": (ids, np.full((1000, 8), np.nan, np.float32))})
    # Valid for loopback and every Service name of the namespace (the shard Services').
    cert, key = self_signed("127.0.0.1", f"*.{NS}.svc")
    servers = LocalCluster(1, env=s3.env,
                           auth=LocalAdminAuth(token=TOKEN, tls_cert=cert, tls_key=key))
    operator = None
    try:
        apply(cluster, secret("s3", {"id": s3.access_key, "secret": s3.secret_key}))
        apply(cluster, secret("admin", {"token": TOKEN}))
        apply(cluster, secret("admin-tls", {"tls.crt": cert, "tls.key": key},
                              "kubernetes.io/tls"))
        apply(cluster, model(s3.endpoint))
        proc = servers.processes[0]
        apply(cluster, shard_slice(NS, MODEL, 0, {"lookup": proc.lookup_port,
                                                  "admin": proc.admin_port}))
        operator = OperatorProcess(cluster.kubeconfig, NS, name="secrets-operator")
        yield cluster, servers, operator, s3, key
    finally:
        if operator is not None:
            operator.stop()
        servers.stop()
        s3.stop()
        cluster.kubectl("delete", "namespace", NS, "--wait=false")


async def test_admin_credentials_come_from_the_models_secrets(parts):
    cluster, *_ = parts
    await config.load_kube_config(config_file=str(cluster.kubeconfig))
    kube = Kube(kube_client.ApiClient())
    try:
        await _check_admin_credentials(cluster, kube)
    finally:
        await kube.close()


async def _check_admin_credentials(cluster, kube: Kube) -> None:
    spec = RecModelSpec.model_validate(get_json(cluster, "-n", NS, "recmodel", MODEL)["spec"])
    token, ca = await admin_credentials(kube, NS, spec)
    assert token == TOKEN
    # No ca.crt in the Secret: a self-signed tls.crt is its own CA.
    assert ca == base64.b64decode(get_json(cluster, "-n", NS, "secret", "admin-tls")
                                  ["data"]["tls.crt"])
    for wrong, says in (({"name": "admin", "key": "nope"}, "has no key nope"),
                        ({"name": "absent", "key": "token"}, "absent does not exist")):
        bad = spec.model_copy(deep=True)
        bad.embedding_server.admin_auth.token_secret = (
            type(bad.embedding_server.admin_auth.token_secret).model_validate(wrong))
        with pytest.raises(SecretError, match=says) as err:
            await admin_credentials(kube, NS, bad)
        assert TOKEN not in str(err.value)
    bare = spec.model_copy(deep=True)
    bare.embedding_server.admin_auth = None
    assert await admin_credentials(kube, NS, bare) == (None, None)


def test_an_update_through_token_and_tls_leaks_no_secret(parts):
    cluster, servers, operator, s3, tls_key = parts

    def phase(name: str) -> str | None:
        return get_json(cluster, "-n", NS, "modelversion", name).get("status", {}).get("phase")

    apply(cluster, version("v1", f"s3://{BUCKET}/v1"))
    wait_for(lambda: phase("v1") == "Active", timeout=90,
             what="v1 Active: the operator must present the token from adminAuth.tokenSecret "
                  "over TLS verified with adminAuth.tlsSecret (controllers/admin_auth, "
                  "embedding/admin_channel)")
    assert {p.admin.status().active_version for p in servers.processes} == {1}
    # Refusals put S3 and validation errors into status and Events: they must not carry
    # the credentials either.
    apply(cluster, version("bad", f"s3://{BUCKET}/bad"))
    apply(cluster, version("missing", f"s3://{BUCKET}/nothing-here"))
    wait_for(lambda: phase("bad") == "Failed" and phase("missing") == "Failed", timeout=60,
             what="the NaN and the missing checkpoints refused")

    key_body = "".join(tls_key.decode().splitlines()[1:-1])
    needles = {"S3 secret key": s3.secret_key, "admin token": TOKEN,
               "TLS private key": key_body[:40]}
    needles |= {f"{what} (base64)": b64(value)[:-4] for what, value in
                (("S3 secret key", s3.secret_key), ("admin token", TOKEN))}
    sources = {"operator log": operator.log()}
    for proc in servers.processes:
        sources[f"server log {proc.lookup_port}"] = proc.process.log_path.read_text()
    for kind in ("recmodels", "modelversions", "events", "endpointslices"):
        sources[kind] = json.dumps(get_json(cluster, "-n", NS, kind))
    assert "Failed" in sources["modelversions"] and sources["events"].count('"reason"') > 0
    leaks = [f"{what} in {where}" for where, text in sources.items()
             for what, needle in needles.items() if needle in text]
    assert not leaks, leaks
