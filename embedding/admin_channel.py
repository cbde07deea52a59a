"""The operator's end of the embedding servers' admin API: a grpc.aio stub that carries
the bearer token and, with a CA, speaks TLS.

The token goes in per-call metadata (`authorization: Bearer <token>`) by an interceptor
rather than as call credentials, because gRPC attaches call credentials to TLS channels
only and a token must also work on a plaintext admin port.
"""

from __future__ import annotations

import grpc

from embedding.proto import GRPC_OPTIONS
from embedding.proto import embedding_pb2_grpc as rpc


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(self, continuation, details, request):
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self.header)
        return await continuation(details._replace(metadata=metadata), request)


class AdminStub(rpc.EmbeddingAdminStub):
    """The generated stub, holding its channel: grpc.aio closes a channel nothing refers
    to, even under a call an interceptor has yet to start. Keep the stub while calling."""

    def __init__(self, channel: grpc.aio.Channel):
        super().__init__(channel)
        self.channel = channel


def admin_stub(address: str, token: str | None = None, ca_pem: bytes | None = None,
               server_name: str | None = None) -> AdminStub:
    """A stub on a new channel to one server's admin port (`host:port`); `close()` its
    `channel` when done.

    `ca_pem`: verify the server over TLS against this CA (else plaintext). Servers are
    reached by pod IP, so `server_name` is the name their certificate must hold (the shard
    Service's DNS name, `<model>-emb-<shard>.<namespace>.svc`); None checks the address.
    """
    interceptors = [_Bearer(token)] if token else None
    if ca_pem is None:
        channel = grpc.aio.insecure_channel(address, options=GRPC_OPTIONS,
                                            interceptors=interceptors)
    else:
        options = [*GRPC_OPTIONS] + ([("grpc.ssl_target_name_override", server_name)]
                                     if server_name else [])
        channel = grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca_pem),
                                          options=options, interceptors=interceptors)
    return AdminStub(channel)
