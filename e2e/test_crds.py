"""The generated CRDs on a real API server: examples accepted, invalid specs refused
with a message naming the field, immutable fields kept immutable."""

from __future__ import annotations

import json

import pytest

from tests.examples import invalid_examples, valid_examples

NAMESPACE = "recsys"


@pytest.fixture(scope="module")
def ns(cluster):
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    return NAMESPACE


@pytest.mark.parametrize("path", valid_examples(), ids=lambda p: p.stem)
def test_valid_example_passes_server_side_validation(cluster, ns, path):
    cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(path))


@pytest.mark.parametrize("case", invalid_examples(), ids=lambda c: c.id)
def test_invalid_example_is_refused_naming_the_field(cluster, ns, case):
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                             input=json.dumps(case.doc), check=False)
    assert result.returncode != 0, f"{case.id} was accepted"
    assert case.field in result.stderr, result.stderr
    assert case.api_error.lower() in result.stderr.lower(), result.stderr


def test_a_modelversion_cannot_be_edited(cluster, ns):
    path = next(p for p in valid_examples() if p.stem == "modelversion-full")
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    try:
        result = cluster.kubectl(
            "-n", ns, "patch", "modelversion", "ctr-ranker-20261123-full", "--type=merge",
            "-p", '{"spec": {"source": "s3://recop-models/elsewhere"}}', check=False)
        assert result.returncode != 0
        assert "a ModelVersion is immutable" in result.stderr
    finally:
        cluster.kubectl("delete", "-f", str(path), "--wait=false", check=False)


def test_shard_count_cannot_change_on_a_live_model(cluster, ns):
    path = next(p for p in valid_examples() if p.stem == "recmodel")
    cluster.kubectl("apply", "--server-side", "-f", str(path))
    try:
        result = cluster.kubectl(
            "-n", ns, "patch", "recmodel", "ctr-ranker", "--type=merge",
            "-p", '{"spec": {"sharding": {"shards": 16}}}', check=False)
        assert result.returncode != 0
        assert "shards cannot change on a live RecModel" in result.stderr
    finally:
        cluster.kubectl("delete", "-f", str(path), "--wait=false", check=False)


def test_kubectl_shows_printer_columns_and_short_names(cluster, ns):
    out = cluster.kubectl("get", "rmodel,mv,abt", "-n", ns, "-o", "wide").stdout
    assert out is not None  # an empty list prints "No resources found" on stderr
    heads = cluster.kubectl("get", "crd", "recmodels.serving.recop.dev", "-o",
                            "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}").stdout
    assert "Ready-Shards" in heads
