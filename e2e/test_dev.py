"""README's first command, `recop-dev up`, end to end in a state dir of its own: a second
control plane from the cached binaries, MinIO, Kafka, Prometheus, Triton on the CPU,
embedding-server processes, the operator; a RecModel Ready with its ModelVersion Active,
and a lookup and an inference answered; then `down` leaves no process and no state."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def recop_dev(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devstack.dev", *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.usefixtures("cluster")  # the binaries are built; this starts its own copy
def test_dev_up_status_down(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "RECOP_STATE": str(state)}
    try:
        up = recop_dev("up", env=env)
        assert up.returncode == 0, up.stderr[-3000:]
        lines = {line.split()[0]: line for line in up.stdout.splitlines() if line.strip()}
        assert "Ready" in lines["recmodel/demo"] and "active demo-v1" in lines["recmodel/demo"]
        assert "Active" in lines["modelversion/demo-v1"]
        assert "-> version 1" in lines["lookup"]
        assert "scores [" in lines["infer"]
        again = recop_dev("up", env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "already running" in again.stderr
        status = recop_dev("status", env=env)
        assert status.returncode == 0 and "2/2 shards" in status.stdout
    finally:
        down = recop_dev("down", env=env)
    assert down.returncode == 0, down.stderr
    assert not state.exists(), list(state.rglob("*"))
    left = subprocess.run(["pgrep", "-af", str(state)], capture_output=True, text=True)
    assert left.stdout == "", f"processes left behind: {left.stdout}"
