"""Generate the CRDs in crds/ from the pydantic models: `python -m recop.crdgen`.

`--check` exits non-zero when the committed YAML differs from what the models
generate, so CI fails on drift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from recop.api import GROUP, RESOURCES, VERSION, Resource

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "crds"
# Helm installs a chart's crds/ before its templates; the chart carries the same files.
CHART_CRD_DIR = REPO / "charts" / "recop" / "crds"
HEADER = "# Generated from recop/api by `python -m recop.crdgen`: do not edit.\n"

# JSON Schema keywords a structural OpenAPI v3 schema cannot hold, or that only
# document the Python side.
_DROPPED = {"title", "$defs", "propertyNames"}


def structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn pydantic's JSON Schema into a Kubernetes structural schema.

    Kubernetes wants every node typed and self-contained: no $ref, no anyOf for
    optionals, OpenAPI 3.0 exclusive bounds, no `additionalProperties: false` beside
    `properties` (unknown fields are pruned, and refused by strict field validation).
    """
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return structural({**target, **extra}, defs)
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {branches} structurally")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return structural({**branches[0], **rest}, defs)

    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "default":
            # Object and list defaults are filled in by the models when the operator
            # parses a spec; scalar defaults also show in `kubectl explain`.
            if value is not None and not isinstance(value, dict | list):
                out[key] = value
        elif key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = structural(value, defs)
        else:
            out[key] = value
    if out.get("type") == "string" and out.get("format") == "date-time":
        out.pop("pattern", None)
    return out


def _model_schema(model) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation",
                                  ref_template="#/$defs/{model}")
    return structural(raw, raw.get("$defs", {}))


def crd(resource: Resource) -> dict[str, Any]:
    spec_schema = _model_schema(resource.spec)
    status_schema = _model_schema(resource.status)
    status_schema.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": resource.crd_name,
                     "labels": {"app.kubernetes.io/part-of": "recop"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": resource.singular,
                "shortNames": list(resource.short_names),
                "categories": ["recop"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": c.name, "type": c.type, "jsonPath": c.json_path}
                    | ({"priority": c.priority} if c.priority else {})
                    for c in resource.columns
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": " ".join((resource.spec.__doc__ or resource.kind).split()),
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


def render(resource: Resource) -> str:
    return HEADER + yaml.safe_dump(crd(resource), sort_keys=False, width=100)


def crd_path(resource: Resource, directory: Path = CRD_DIR) -> Path:
    return directory / f"{resource.crd_name}.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if crds/ is out of date")
    parser.add_argument("--dir", type=Path, action="append",
                        help=f"where to write (default: {CRD_DIR} and {CHART_CRD_DIR})")
    args = parser.parse_args(argv)
    stale = []
    for resource, directory in ((r, d) for r in RESOURCES
                                for d in args.dir or (CRD_DIR, CHART_CRD_DIR)):
        path = crd_path(resource, directory)
        text = render(resource)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("CRDs out of date, run `python -m recop.crdgen`: "
              + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
