"""Secret keys a spec names, read through the API client."""

from __future__ import annotations

import base64

import pytest

from controllers.common.secrets import SecretError, secret_key, secret_value
from recop.api.common import SecretKeyRef


class FakeKube:
    def __init__(self, secrets: dict[str, dict[str, bytes]]):
        self.secrets = secrets

    async def get(self, api_version, kind, namespace, name):
        assert (api_version, kind, namespace) == ("v1", "Secret", "ns")
        if name not in self.secrets:
            return None
        return {"data": {k: base64.b64encode(v).decode() for k, v in self.secrets[name].items()}}


async def test_a_key_is_decoded_and_a_missing_one_named_without_values():
    kube = FakeKube({"s3": {"id": b"AKIA", "secret": b"hush"}})
    assert await secret_key(kube, "ns", SecretKeyRef(name="s3", key="id")) == b"AKIA"
    assert await secret_value(kube, "ns", "s3", "nope") is None
    with pytest.raises(SecretError, match="Secret ns/s3 has no key nope") as err:
        await secret_key(kube, "ns", SecretKeyRef(name="s3", key="nope"))
    assert "hush" not in str(err.value) and "AKIA" not in str(err.value)
    with pytest.raises(SecretError, match="Secret ns/absent does not exist"):
        await secret_value(kube, "ns", "absent", "id")
