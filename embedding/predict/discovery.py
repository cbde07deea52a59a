"""The shard replicas' addresses, re-resolved in the background: a name (a headless
Service) stands for every ready pod behind it, and pods come and go."""

from __future__ import annotations

import socket
import threading

from embedding.client import EmbeddingClient, NoHealthyReplica

REFRESH_SECONDS = 5.0


def resolve(address: str) -> list[str]:
    """host:port -> every address the host resolves to, as host:port (IPs stay as
    they are; a name that does not resolve yet gives nothing)."""
    host, _, port = address.rpartition(":")
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({f"[{a[4][0]}]:{port}" if ":" in a[4][0] else f"{a[4][0]}:{port}"
                   for a in found})


class Shards:
    """An EmbeddingClient over the resolved replicas, rebuilt when they change."""

    def __init__(self, shards: list[list[str]], timeout: float):
        self._names = shards
        self._timeout = timeout
        self._lock = threading.Lock()
        self._resolved: list[list[str]] = []
        self._client: EmbeddingClient | None = None
        self._stop = threading.Event()
        self.refresh()
        self._thread = threading.Thread(target=self._loop, name="recop-discovery",
                                        daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        resolved = [sorted({a for name in names for a in resolve(name)})
                    for names in self._names]
        if resolved == self._resolved or not all(resolved):
            return  # a shard with no address keeps the last ones that answered
        client = EmbeddingClient(resolved, timeout=self._timeout, keep_freed_memory=False)
        with self._lock:
            old, self._client, self._resolved = self._client, client, resolved
        if old is not None:
            # Calls in flight on the old client finish first: channels close when idle.
            threading.Timer(self._timeout * 2, old.close).start()

    def client(self) -> EmbeddingClient:
        if self._client is None:
            self.refresh()  # the pods came up after the server did: no waiting for the loop
        with self._lock:
            if self._client is None:
                raise NoHealthyReplica("no address resolves yet for shards " + "; ".join(
                    ",".join(names) for names in self._names))
            return self._client

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._client is not None:
                self._client.close()

    def _loop(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self.refresh()

