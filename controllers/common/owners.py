"""Owner references from a RecOp object to what it creates."""

from __future__ import annotations

from recop.api.common import API_VERSION


def controller_reference(kind: str, name: str, uid: str) -> dict:
    """The owner reference naming a RecOp object (of `kind`) the controller of a child:
    the garbage collector deletes the child with it, and a foreground deletion of the
    owner waits for the child."""
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}
