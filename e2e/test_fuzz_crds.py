"""Hypothesis over the generated CRDs on the real API server: specs near the valid
examples (tests/fuzz_specs.py) are accepted by both the API server (server-side dry run)
and the pydantic models, or refused by both, each naming a field the other names too.

Server accepts what pydantic refuses would be the harmful case (the operator could not
parse a stored object); the reverse would let a user apply what RecOp then rejects.
Specs go to the server in batches, one `kubectl apply` for many objects.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_specs import EXAMPLES, mutated, pydantic_verdict, same_field, server_paths

NS = "e2e-fuzz"
BATCH = 25


@pytest.fixture(scope="module")
def ns(cluster):
    cluster.kubectl("create", "namespace", NS, check=False)
    return cluster


def server_verdicts(cluster, docs: list[dict]) -> dict[str, str | None]:
    """name -> None (accepted) or the API server's refusal."""
    # A YAML stream, not a List: kubectl checks a List's items against its own copy of
    # the schema first and drops the whole batch on the first error.
    # Raw UTF-8, not \u escapes: YAML refuses the surrogate-pair escapes json.dumps writes
    # for characters beyond the BMP.
    stream = "\n---\n".join(json.dumps(d, ensure_ascii=False) for d in docs)
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                             input=stream, check=False)
    accepted = set(re.findall(r"/(fuzz-\d+) serverside-applied", result.stdout))
    refused = {}
    # One error per object; indented lines continue the one above.
    for error in re.split(r"\n(?=\S)", result.stderr):
        found = re.search(r"\b(fuzz-\d+)\b", error)
        if found:
            refused[found.group(1)] = error
    names = [d["metadata"]["name"] for d in docs]
    missing = [n for n in names if n not in accepted and n not in refused]
    assert not missing, f"no verdict for {missing}: {result.stdout[-1000:]}{result.stderr[-3000:]}"
    return {n: refused.get(n) for n in names}


@settings(max_examples=math.ceil(EXAMPLES / BATCH), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(mutated(), min_size=BATCH, max_size=BATCH))
def test_pydantic_and_the_api_server_agree(ns, docs):
    for i, doc in enumerate(docs):
        doc["metadata"] = {"name": f"fuzz-{i}", "namespace": NS}
    server = server_verdicts(ns, docs)
    disagreements = []
    for doc in docs:
        name = doc["metadata"]["name"]
        ours, theirs = pydantic_verdict(doc), server[name]
        if (ours is None) != (theirs is None):
            disagreements.append(f"{doc['kind']} pydantic {ours or 'accepts'}, API server "
                                 f"{theirs or 'accepts'}: {json.dumps(doc['spec'])}")
        elif ours is not None and not same_field(ours, server_paths(theirs)):
            disagreements.append(f"{doc['kind']} refused at different fields: pydantic "
                                 f"{ours}, API server {theirs}: {json.dumps(doc['spec'])}")
    assert not disagreements, "\n".join(disagreements)
