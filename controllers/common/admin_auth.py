"""The credentials the operator presents to the embedding servers' admin API, read from
the Secrets a RecModel names (embeddingServer.adminAuth).

Secret values are returned, never logged or put in an error message: errors name the
Secret and key only.
"""

from __future__ import annotations

from controllers.common.kube import Kube
from controllers.common.secrets import SecretError, secret_value
from recop.api.recmodel import RecModelSpec


async def admin_credentials(kube: Kube, namespace: str,
                            spec: RecModelSpec) -> tuple[str | None, bytes | None]:
    """(bearer token, CA certificate PEM) for the model's admin API; (None, None) when
    the spec sets no adminAuth. The CA is the TLS Secret's ca.crt, else its tls.crt (a
    self-signed certificate is its own CA). Raises SecretError when a named Secret is
    unusable."""
    auth = spec.embedding_server.admin_auth
    if auth is None:
        return None, None
    ref = auth.token_secret
    token = await secret_value(kube, namespace, ref.name, ref.key)
    if not token or not token.strip():
        raise SecretError(f"Secret {namespace}/{ref.name} has no key {ref.key} "
                          "(or it is empty)")
    ca = None
    if auth.tls_secret:
        ca = (await secret_value(kube, namespace, auth.tls_secret, "ca.crt")
              or await secret_value(kube, namespace, auth.tls_secret, "tls.crt"))
        if not ca:
            raise SecretError(f"Secret {namespace}/{auth.tls_secret} has neither "
                              "ca.crt nor tls.crt")
    return token.decode().strip(), ca
