"""Hypothesis strategies for custom resources near the valid ones: each valid example in
crds/examples/valid with one to three mutations (a value replaced by another of any JSON
type, a key dropped, an unknown key added, a list emptied or an element repeated), so
that generated specs fall on both sides of every rule.

RECOP_FUZZ_EXAMPLES sets how many specs a fuzz test tries (default small, for CI);
`RECOP_FUZZ_EXAMPLES=5000 pytest tests/api/test_fuzz_api.py e2e/test_fuzz_crds.py` is the
long run.
"""

from __future__ import annotations

import copy
import json
import os
import re

import yaml
from hypothesis import strategies as st
from pydantic import ValidationError

from recop.api import BY_KIND
from tests.examples import valid_examples

EXAMPLES = int(os.environ.get("RECOP_FUZZ_EXAMPLES", "200"))

VALID = [yaml.safe_load(p.read_text()) for p in valid_examples()]

def _yaml_printable(char: str) -> bool:
    code = ord(char)
    return (char in "\t\n\r\x85" or 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF
            or 0xE000 <= code <= 0xFFFD or code >= 0x10000)


# Bounds the schemas use, and one past them.
_EDGES = [0, -1, 1, 2, 7, 8, 16, 63, 64, 100, 101, 255, 256, 1023, 1024, 1025, 4096, 4097,
          65535, 65536, 10**12, 10**12 + 1, 2**31, 2**63 - 1, -(2**63)]
SCALARS = st.one_of(
    st.sampled_from(_EDGES),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    # Only characters YAML can carry: a server-side apply body is YAML, whose decoder on the
    # API server refuses the others (DEL, U+FFFE, ...) before any validation.
    st.text(st.characters(blacklist_categories=("Cs",)).filter(_yaml_printable),
            max_size=16),
    st.sampled_from(["", "0", "1.5", "16Gi", "500m", "fp16", "KIND_CPU", "External", "a" * 64,
                     "s3://bucket/x", "90s", "1h30m", "UPPER", "with space", "-lead"]),
)
VALUES = st.one_of(SCALARS, st.builds(dict), st.builds(list), st.lists(SCALARS, max_size=3))
KEYS = st.from_regex(r"[a-z][a-zA-Z0-9]{0,11}", fullmatch=True)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _parent(doc, path):
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutated(draw, docs=VALID) -> dict:
    """A valid example (its spec at least) with 1-3 mutations."""
    doc = copy.deepcopy(draw(st.sampled_from(docs)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc["spec"]) if p]
        path = draw(st.sampled_from(paths))
        parent, last = _parent(doc["spec"], path), path[-1]
        target = parent[last]
        op = draw(st.sampled_from(["set", "set", "set", "drop", "add", "empty", "repeat"]))
        if op == "drop" and isinstance(parent, dict):
            del parent[last]
        elif op == "add" and isinstance(target, dict):
            target[draw(KEYS)] = draw(VALUES)
        elif op == "empty" and isinstance(target, dict | list):
            target.clear()
        elif op == "repeat" and isinstance(target, list) and target:
            target.append(copy.deepcopy(target[0]))
        else:
            parent[last] = draw(VALUES)
    return doc


def field_path(loc: tuple) -> str:
    """A pydantic error location written as the API server writes field paths."""
    out = "spec"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def pydantic_verdict(doc: dict) -> list[str] | None:
    """None when the spec validates; else the field paths pydantic names. Strict JSON
    validation, as the API server is strict about types ("1" is no integer there)."""
    model = BY_KIND[doc["kind"]].spec
    try:
        model.model_validate_json(json.dumps(doc["spec"]), strict=True)
    except ValidationError as err:
        return [field_path(e["loc"]) for e in err.errors()]
    return None


# Map keys may hold dots and slashes (nodeSelector's `nvidia.com/gpu.present`), which the
# server writes unquoted: a path runs to the `:` or space after it.
_SERVER_PATH = re.compile(r"\.?(spec(?:\.[A-Za-z0-9_./-]+|\[\d+\])*)")


def server_paths(message: str) -> list[str]:
    return [m.group(1).rstrip(".") for m in _SERVER_PATH.finditer(message)]


def same_field(ours: list[str], theirs: list[str]) -> bool:
    """Some field both name, one path equal to or inside the other (a rule on an object
    is reported at the object by one side and at its field by the other)."""
    return any(a == b or a.startswith((b + ".", b + "[")) or b.startswith((a + ".", a + "["))
               for a in ours for b in theirs)
