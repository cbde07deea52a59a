"""Who may call the embedding servers' admin API: the credentials the operator presents
(read from the Secrets a RecModel names) and the namespace its pods run in (which the
RecModel's NetworkPolicy lets through to the admin port).

Secret values are returned, never logged or put in an error message: errors name the
Secret and key only.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from controllers.common.kube import Kube
from recop.api.recmodel import RecModelSpec

# In a pod, the namespace of its ServiceAccount is the pod's own.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class AdminCredentialsError(RuntimeError):
    pass


async def _secret_value(kube: Kube, namespace: str, name: str, key: str) -> bytes | None:
    secret = await kube.get("v1", "Secret", namespace, name)
    if secret is None:
        raise AdminCredentialsError(f"Secret {namespace}/{name} does not exist")
    data = secret.get("data") or {}
    return base64.b64decode(data[key]) if key in data else None


async def admin_credentials(kube: Kube, namespace: str,
                            spec: RecModelSpec) -> tuple[str | None, bytes | None]:
    """(bearer token, CA certificate PEM) for the model's admin API; (None, None) when
    the spec sets no adminAuth. The CA is the TLS Secret's ca.crt, else its tls.crt (a
    self-signed certificate is its own CA)."""
    auth = spec.embedding_server.admin_auth
    if auth is None:
        return None, None
    ref = auth.token_secret
    token = await _secret_value(kube, namespace, ref.name, ref.key)
    if not token or not token.strip():
        raise AdminCredentialsError(f"Secret {namespace}/{ref.name} has no key {ref.key} "
                                    "(or it is empty)")
    ca = None
    if auth.tls_secret:
        ca = (await _secret_value(kube, namespace, auth.tls_secret, "ca.crt")
              or await _secret_value(kube, namespace, auth.tls_secret, "tls.crt"))
        if not ca:
            raise AdminCredentialsError(f"Secret {namespace}/{auth.tls_secret} has neither "
                                        "ca.crt nor tls.crt")
    return token.decode().strip(), ca


def operator_namespace() -> str | None:
    """The namespace the operator runs in: POD_NAMESPACE (the chart sets it from the
    downward API), else the ServiceAccount's; None outside a cluster."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
