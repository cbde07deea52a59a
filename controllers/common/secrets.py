"""Values of the Secrets a spec names (SecretKeyRef). Secret values are returned, never
logged or put in an error message: errors name the Secret and key only."""

from __future__ import annotations

import base64

from controllers.common.kube import Kube
from recop.api.common import SecretKeyRef


class SecretError(RuntimeError):
    """A Secret a spec names is missing, or lacks the key it names."""


async def secret_value(kube: Kube, namespace: str, name: str, key: str) -> bytes | None:
    """The decoded value of `key`, None when the Secret has no such key; raises
    SecretError when the Secret does not exist."""
    secret = await kube.get("v1", "Secret", namespace, name)
    if secret is None:
        raise SecretError(f"Secret {namespace}/{name} does not exist")
    data = secret.get("data") or {}
    return base64.b64decode(data[key]) if key in data else None


async def secret_key(kube: Kube, namespace: str, ref: SecretKeyRef) -> bytes:
    """The value `ref` points at; raises SecretError when the Secret or its key is
    missing."""
    value = await secret_value(kube, namespace, ref.name, ref.key)
    if value is None:
        raise SecretError(f"Secret {namespace}/{ref.name} has no key {ref.key}")
    return value
