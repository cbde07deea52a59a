"""Session fixtures: a real MinIO (S3) and a real Apache Kafka broker, started through
devstack. If either cannot start, the tests that need it fail: they never skip."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from devstack import kafka as local_kafka
from devstack import minio as local_minio

BUCKET = "recop-embedding-tests"
_prefixes = itertools.count(1)


@dataclass
class S3:
    handle: local_minio.MinioHandle
    client: object
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        return self.handle.env

    def uri(self, name: str) -> str:
        """A fresh checkpoint prefix per call, so tests never see each other's objects."""
        return f"s3://{self.bucket}/{name}-{next(_prefixes)}"


@pytest.fixture(scope="session")
def s3():
    handle = local_minio.start()
    try:
        client = handle.client()
        client.create_bucket(Bucket=BUCKET)
        yield S3(handle, client, BUCKET)
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def kafka():
    handle = local_kafka.start()
    try:
        yield handle
    finally:
        handle.stop()
