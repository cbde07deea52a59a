"""The API server under an update: restarted mid-update, and written to by a second writer
while the operator writes the same ModelVersion. The operator must keep running, finish
the update and leave its status consistent; other writers' conflicts are theirs."""

from __future__ import annotations

import json
import threading
import time

import pytest

from devstack.faultproxy import Fault
from e2e.reliability import Figures, Reader, Stack, serving_v1
from e2e.support import restart_apiserver, wait_for

NS = "e2e-faults-apiserver"


@pytest.fixture(scope="module")
def stack(cluster):
    with serving_v1(cluster, NS) as stack:
        yield stack


def test_api_server_restarted_mid_update(stack, record_property):
    figures = Figures(record_property,
                      "kube-apiserver stopped for 10 s while v2 loads (S3 held), S3 healed "
                      "while it is down, then started again on the same etcd",
                      "the operator process survives, reconnects and finishes: v2 Active on "
                      "every server, status written, lookups unaffected")
    stack.server_proxy.set(Fault("blackhole", path=r"/tables/"))
    reader = Reader(stack)
    operator = stack.operators[-1]
    try:
        stack.version("v2", f"s3://{stack.bucket}/v2")
        wait_for(lambda: all(h.get(2) == "loading" for h in stack.held()), timeout=90,
                 what="v2 loading")
        healer = threading.Timer(5, stack.server_proxy.heal)
        healer.start()
        figures["api_unreachable_s"] = restart_apiserver(stack.cluster, down_for=10)
        back = time.monotonic()
        final = stack.wait_phase("v2", "Active", "Failed", timeout=240)
        figures["api_back_to_active_s"] = time.monotonic() - back
        end = wait_for(lambda: (c := stack.consistent(2))["ok"] and c, timeout=60,
                       what="v2 on every server")
        figures["versions_per_replica"] = str(end["actives"])
    finally:
        figures.update(reader.stop())
        stack.server_proxy.heal()
    figures["operator_alive"] = operator.proc.poll() is None
    assert final["phase"] == "Active"
    assert operator.proc.poll() is None, "the operator must ride out an API server restart"
    assert reader.failed == 0 and reader.mixed == 0


class SecondWriter:
    """Writes the ModelVersion the operator is driving, in a loop, three ways: merge
    patches of an annotation and of status.message (no resourceVersion: last writer wins),
    and a server-side apply of status.phase without force (the API server answers 409
    when another manager, the operator, owns the field)."""

    def __init__(self, stack: Stack, name: str):
        self.stack, self.name = stack, name
        self.writes = self.conflicts = self.other_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        kubectl = self.stack.cluster.kubectl
        i = 0
        while not self._stop.is_set():
            i += 1
            results = [
                kubectl("-n", self.stack.ns, "annotate", "--overwrite", "modelversion",
                        self.name, f"e2e.recop.dev/touch={i}", check=False),
                kubectl("-n", self.stack.ns, "patch", "modelversion", self.name,
                        "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"message": f"second writer {i}"}}),
                        check=False),
                kubectl("apply", "--server-side", "--field-manager=second-writer",
                        "--subresource=status", "-f", "-", check=False, input=json.dumps({
                            "apiVersion": "serving.recop.dev/v1alpha1",
                            "kind": "ModelVersion",
                            "metadata": {"name": self.name, "namespace": self.stack.ns},
                            "status": {"phase": "Failed"}})),
            ]
            for result in results:
                self.writes += 1
                if result.returncode == 0:
                    continue
                if "conflict" in result.stderr.lower():
                    self.conflicts += 1
                else:
                    self.other_errors += 1
            time.sleep(0.2)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(60)
        return {"second_writer_writes": self.writes, "second_writer_409s": self.conflicts,
                "second_writer_other_errors": self.other_errors}


def test_a_second_writer_on_the_same_modelversion(stack, record_property):
    figures = Figures(record_property,
                      "while v3 loads and commits, a second writer patches its annotations "
                      "and status.message and tries a non-forced apply of status.phase",
                      "the second writer's apply of phase gets 409 Conflict (the operator "
                      "owns it); the operator never fails on a conflict; v3 ends Active "
                      "everywhere")
    stack.wait_phase("v2", "Active")
    operator = stack.operators[-1]
    log_before = len(operator.log())
    stack.server_proxy.set(Fault("stall", delay=1.0, path=r"/tables/"))
    stack.version("v3", f"s3://{stack.bucket}/v3")
    writer = SecondWriter(stack, "v3")
    try:
        wait_for(lambda: writer.writes >= 9, timeout=60, what="the second writer started")
        stack.server_proxy.heal()
        final = stack.wait_phase("v3", "Active", "Failed", timeout=180)
    finally:
        figures.update(writer.stop())
        stack.server_proxy.heal()
    end = wait_for(lambda: (c := stack.consistent(3))["ok"] and c, timeout=60,
                   what="v3 on every server")
    log = operator.log()[log_before:]
    figures["operator_conflicts_logged"] = log.count("409") + log.count("Conflict")
    figures["versions_per_replica"] = str(end["actives"])
    figures["final_message"] = stack.status("v3").get("message", "")
    assert final["phase"] == "Active"
    assert writer.conflicts > 0, "a non-forced apply of an operator-owned field must conflict"
    assert operator.proc.poll() is None
