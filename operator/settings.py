"""Every setting the operator takes from its environment, read once at startup.

The controllers get theirs (controllers.common.settings.Settings) through Kopf's memo;
the process-level ones (metrics endpoint, peering priority) stay here.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from controllers.common.settings import Settings

# In a pod, the namespace of its ServiceAccount is the pod's own.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class OperatorConfig:
    controllers: Settings
    metrics_port: int = 8080  # 0: no metrics endpoint
    metrics_addr: str = "0.0.0.0"
    pod_name: str = ""

    @property
    def pod_priority(self) -> int:
        """Distinct peering priorities for replicas of one Deployment.

        Kopf pauses every operator that sees a peer with its own priority, so identical
        replicas would all stand still; a priority from the pod name lets exactly one act
        and another take over when its peering record expires.
        """
        return zlib.crc32(self.pod_name.encode()) % 10_000 + 1


def _operator_namespace(environ: Mapping[str, str]) -> str | None:
    """POD_NAMESPACE (the chart sets it from the downward API), else the
    ServiceAccount's; None outside a cluster."""
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def load(environ: Mapping[str, str] = os.environ,
         prometheus_url: str | None = None) -> OperatorConfig:
    """The settings from the environment; `prometheus_url` (the --prometheus-url flag)
    takes precedence over RECOP_PROMETHEUS_URL."""
    return OperatorConfig(
        controllers=Settings(
            prometheus_url=prometheus_url or environ.get("RECOP_PROMETHEUS_URL") or None,
            operator_namespace=_operator_namespace(environ),
            abtest_interval=float(environ.get("RECOP_ABTEST_INTERVAL", "30"))),
        metrics_port=int(environ.get("RECOP_METRICS_PORT", "8080")),
        metrics_addr=environ.get("RECOP_METRICS_ADDR", "0.0.0.0"),
        pod_name=environ.get("POD_NAME", ""))
