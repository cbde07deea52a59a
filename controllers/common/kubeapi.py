"""The operator's one API client, shared by every handler."""

from __future__ import annotations

import asyncio

from controllers.common.kube import Kube

_client: Kube | None = None
_lock = asyncio.Lock()


async def kube() -> Kube:
    global _client
    async with _lock:
        if _client is None:
            _client = await Kube.connect()
    return _client


async def close() -> None:
    global _client
    if _client is not None:
        await _client.close()
        _client = None
