"""Hypothesis over the API models, without a cluster: specs near the valid examples are
either parsed (and then round-trip through their wire form) or refused with a
ValidationError that points at a field of the spec; nothing else ever escapes.

e2e/test_fuzz_crds.py holds the same specs against the generated CRDs on a real API
server.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from recop.api import BY_KIND
from tests.fuzz_specs import EXAMPLES, mutated, pydantic_verdict

FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _exists(spec, loc: tuple) -> bool:
    node = spec
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if not (in_dict or in_list):
            return False
        node = node[part]
    return True


@FUZZ
@given(mutated())
def test_a_spec_parses_and_round_trips_or_is_refused_at_a_field(doc):
    model = BY_KIND[doc["kind"]].spec
    try:
        parsed = model.model_validate(doc["spec"])
    except ValidationError as err:
        for error in err.errors():
            loc = error["loc"]
            # The field itself, or (a missing one) its parent, is in the spec.
            assert _exists(doc["spec"], loc) or _exists(doc["spec"], loc[:-1]), error
        assert pydantic_verdict(doc) is not None, "strict accepts what lax refuses"
        return
    wire = parsed.to_wire()
    assert model.model_validate(json.loads(json.dumps(wire))) == parsed
    assert pydantic_verdict({"kind": doc["kind"], "spec": wire}) is None
