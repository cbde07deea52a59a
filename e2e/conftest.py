"""End-to-end tests run against a real Kubernetes API server.

By default the session starts the local control plane (devstack.cluster: etcd,
kube-apiserver, controller-manager, scheduler, KWOK nodes) and stops it at the end,
unless it was already running (`python -m devstack.cluster up`), which is then
reused and left running. With RECOP_KUBECONFIG set, that cluster (kind, a real one)
is used instead and nothing is started or stopped.

A cluster that cannot be had fails the tests with the reason; they are never skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from devstack import cluster as local_cluster

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "crds"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def cluster():
    external = os.environ.get("RECOP_KUBECONFIG")
    started_here = not external and local_cluster.running() is None
    where = f"RECOP_KUBECONFIG={external}" if external else "the local control plane"
    try:
        # A failed start stops what it started and keeps the logs; the error names them.
        info = local_cluster.attach(Path(external)) if external else local_cluster.ensure_up()
    except Exception as error:
        pytest.fail(f"no cluster for the e2e tests ({where}): {error}", pytrace=False)
    try:
        install_crds(info)
    except Exception as error:
        if started_here:
            local_cluster.down()
        pytest.fail(f"the CRDs in {CRDS} do not install on {where}: {error}", pytrace=False)
    yield info
    if started_here:
        local_cluster.down()


def install_crds(info: local_cluster.ClusterInfo) -> None:
    """Server-side apply every CRD of the repo and wait until the API serves them."""
    files = sorted(CRDS.glob("*.yaml"))
    for path in files:
        info.kubectl("apply", "--server-side", "--force-conflicts",
                     "--field-manager=recop-e2e", "-f", str(path))
    names = [doc["metadata"]["name"] for path in files
             for doc in yaml.safe_load_all(path.read_text())
             if doc and doc.get("kind") == "CustomResourceDefinition"]
    if names:
        info.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     *(f"customresourcedefinition/{name}" for name in names), timeout=90)
