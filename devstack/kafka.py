"""A real Apache Kafka broker (KRaft mode, one combined broker+controller) on loopback,
or on another local address when clients elsewhere must reach it (`start(host=...)`).

The jars come from Maven Central through `mvn dependency:copy-dependencies` (a tiny pom,
one directory per Kafka version in the cache); the broker runs on the system java with a
small heap. Usage: `python -m devstack.kafka build|up|down`.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.common import (
    LOOPBACK,
    ManagedProcess,
    cache_dir,
    free_port,
    progress,
    remove_state,
    state_dir,
    stop_pid_file,
    wait_for_port,
)

KAFKA_VERSION = "4.1.1"
NAME = "kafka"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.recop</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def build(version: str = KAFKA_VERSION) -> Path:
    """Fetch kafka_2.13 and its runtime dependencies into the cache; return the jar dir."""
    libs = cache_dir() / "kafka" / version / "libs"
    if (libs / f"kafka_2.13-{version}.jar").exists():
        return libs
    progress(f"fetching Apache Kafka {version} jars from Maven Central (first time only)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "pom.xml").write_text(_POM.format(version=version))
        staging = Path(work) / "libs"
        subprocess.run(
            ["mvn", "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={staging}"],
            cwd=work, check=True,
        )
        libs.parent.mkdir(parents=True, exist_ok=True)
        # Move into place only when complete, so a failed fetch is retried next time.
        shutil.rmtree(libs, ignore_errors=True)
        shutil.move(str(staging), libs)
    progress(f"fetched Kafka {version} ({len(list(libs.iterdir()))} jars) "
             f"in {time.monotonic() - started:.0f}s")
    return libs


@dataclass
class KafkaHandle:
    port: int
    process: ManagedProcess
    host: str = LOOPBACK

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


async def create_topic(bootstrap: str, topic: str, partitions: int, **client) -> None:
    """Create `topic` with one replica per partition (a one-broker cluster); `client`:
    more AIOKafkaAdminClient arguments (SASL settings)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1)])
    finally:
        await admin.close()


def _java(libs: Path, main: str, *args: str, heap: str = "512m") -> list[str]:
    return ["java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            "-cp", f"{libs}/*", main, *args]


def _listener(host: str, port: int, controller_port: int,
              plain_users: dict[str, str] | None) -> list[str]:
    """The client listener on `host` (PLAINTEXT, or SASL_PLAINTEXT with PLAIN when users
    are given), which also carries inter-broker traffic; the controller listener stays
    PLAINTEXT on loopback. Clients connect to the advertised address after bootstrap, so
    it is the one they reach the broker by, never loopback for clients elsewhere."""
    kind = "SASL_PLAINTEXT" if plain_users else "PLAINTEXT"
    lines = [
        f"listeners={kind}://{host}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        f"advertised.listeners={kind}://{host}:{port}",
        f"inter.broker.listener.name={kind}",
        f"listener.security.protocol.map={kind}:{kind},CONTROLLER:PLAINTEXT",
    ]
    if plain_users:
        # The broker logs in to itself as a user of its own, so no test user is needed
        # for inter-broker traffic.
        broker = uuid.uuid4().hex
        users = " ".join(f'user_{name}="{password}"'
                         for name, password in {**plain_users, "broker": broker}.items())
        lines += [
            "sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.inter.broker.protocol=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="broker" password="{broker}" {users};',
        ]
    return lines


def start(port: int | None = None, version: str = KAFKA_VERSION, heap: str = "512m",
          timeout: float = 90, plain_users: dict[str, str] | None = None,
          host: str = LOOPBACK) -> KafkaHandle:
    """Format a fresh KRaft log dir and start the broker; return once it accepts clients.
    `plain_users` (name -> password): clients must authenticate with SASL PLAIN. `host`:
    the address clients connect to, on an interface of this machine (the real node's
    pods reach devstack.netns.HOST_IP); never a wildcard."""
    libs = build(version)
    port = port or free_port()
    controller_port = free_port()
    run_dir = state_dir(NAME)
    data = run_dir / f"data-{port}"
    shutil.rmtree(data, ignore_errors=True)
    config = run_dir / f"server-{port}.properties"
    config.write_text("\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{LOOPBACK}:{controller_port}",
        *_listener(host, port, controller_port, plain_users),
        "controller.listener.names=CONTROLLER",
        f"log.dirs={data}",
        "num.partitions=1",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "",
    ]))
    # A Kafka cluster id is 16 random bytes in unpadded url-safe base64.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    fmt = subprocess.run(
        _java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
              heap="256m"),
        capture_output=True, text=True,
    )
    if fmt.returncode != 0:
        raise RuntimeError(f"kafka storage format failed:\n{fmt.stdout}\n{fmt.stderr}")
    process = ManagedProcess(NAME, _java(libs, "kafka.Kafka", str(config), heap=heap))
    try:
        wait_for_port(port, timeout, host=host, proc=process.proc)
    except (RuntimeError, TimeoutError) as err:
        process.stop()
        raise RuntimeError(f"kafka did not start on {host}:{port}: {err}\n"
                           f"{process.log_tail()}") from err
    return KafkaHandle(port=port, process=process, host=host)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.kafka")
    parser.add_argument("command", choices=["build", "up", "down"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("RECOP_KAFKA_PORT", 0)))
    args = parser.parse_args()
    if args.command == "build":
        print(build())
    elif args.command == "up":
        handle = start(port=args.port or None)
        print(f"kafka {KAFKA_VERSION} up: bootstrap {handle.bootstrap}")
    else:
        stop_pid_file(state_dir(NAME) / f"{NAME}.pid")
        remove_state(NAME)


if __name__ == "__main__":
    main()
