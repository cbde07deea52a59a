"""The committed CRDs are exactly what the models generate, and are structural."""

from __future__ import annotations

import yaml

from recop import crdgen
from recop.api import RESOURCES


def test_committed_crds_match_the_models():
    assert crdgen.main(["--check"]) == 0, "run `python -m recop.crdgen` and commit crds/"


def _walk(node, path="$"):
    yield path, node
    for key in ("properties", "additionalProperties"):
        children = node.get(key)
        if isinstance(children, dict) and key == "properties":
            for name, child in children.items():
                yield from _walk(child, f"{path}.{name}")
        elif isinstance(children, dict):
            yield from _walk(children, f"{path}.*")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schemas_are_structural():
    for resource in RESOURCES:
        doc = yaml.safe_load(crdgen.crd_path(resource).read_text())
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "type" in node or node.get("x-kubernetes-int-or-string"), path
            assert not {"$ref", "anyOf", "oneOf", "allOf", "title"} & node.keys(), path
            if "properties" in node:
                assert "additionalProperties" not in node, path


def test_status_is_a_subresource_with_its_own_schema():
    for resource in RESOURCES:
        version = crdgen.crd(resource)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert "conditions" in version["schema"]["openAPIV3Schema"]["properties"]["status"][
            "properties"]
