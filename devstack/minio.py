"""A real MinIO S3 server on loopback, built from its Go module.

MinIO publishes no semver tags (its releases are RELEASE.<date> tags), so the build pins
the proxy's pseudo-version of the final upstream commit. Usage:
`python -m devstack.minio build|up|down`.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from devstack.common import (
    LOOPBACK,
    ManagedProcess,
    free_port,
    go_install,
    remove_state,
    state_dir,
    stop_pid_file,
)

MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
NAME = "minio"


def build() -> Path:
    return go_install(NAME, MINIO_MODULE, MINIO_VERSION)


@dataclass
class MinioHandle:
    port: int
    access_key: str
    secret_key: str
    process: ManagedProcess

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS_* variables that point boto3 (and our servers) at this MinIO."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
        )

    def stop(self) -> None:
        self.process.stop()


def start(port: int | None = None, timeout: float = 60) -> MinioHandle:
    binary = build()
    port = port or free_port()
    console = free_port()
    data = state_dir(NAME) / f"data-{port}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    access_key, secret_key = "recop", secrets.token_hex(16)
    process = ManagedProcess(
        NAME,
        [str(binary), "server", str(data), "--address", f"{LOOPBACK}:{port}",
         "--console-address", f"{LOOPBACK}:{console}", "--quiet"],
        env={"MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key,
             "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"},
    )
    process.wait_listening(port, timeout=timeout, what="minio")
    return MinioHandle(port=port, access_key=access_key, secret_key=secret_key, process=process)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devstack.minio")
    parser.add_argument("command", choices=["build", "up", "down"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.command == "build":
        print(build())
    elif args.command == "up":
        handle = start(port=args.port or None)
        for key, value in handle.env.items():
            print(f"export {key}={value}")
    else:
        stop_pid_file(state_dir(NAME) / f"{NAME}.pid")
        remove_state(NAME)


if __name__ == "__main__":
    main()
