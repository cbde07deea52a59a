"""grpc.health.v1 of one shard server, served on its lookup port."""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

from embedding.config import LIVENESS_HEALTH_SERVICE, LOOKUP_HEALTH_SERVICE


class Health:
    """The lookup service (and the server overall) serves once a version is active;
    LIVENESS_HEALTH_SERVICE serves while the process runs."""

    def __init__(self):
        self.servicer = health.aio.HealthServicer()

    async def follow(self, active: int) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if active
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in (health.OVERALL_HEALTH, LOOKUP_HEALTH_SERVICE):
            await self.servicer.set(service, status)
        await self.servicer.set(LIVENESS_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)

