"""The example manifests in crds/examples and the expectations written in them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

EXAMPLES = Path(__file__).resolve().parent.parent / "crds" / "examples"


@dataclass(frozen=True)
class Invalid:
    path: Path
    doc: dict
    field: str
    error: str
    api_error: str

    @property
    def id(self) -> str:
        return self.path.stem


def valid_examples() -> list[Path]:
    return sorted((EXAMPLES / "valid").glob("*.yaml"))


def invalid_examples() -> list[Invalid]:
    cases = []
    for path in sorted((EXAMPLES / "invalid").glob("*.yaml")):
        text = path.read_text()
        tags = dict(re.findall(r"^# ([a-z-]+): (.+)$", text, flags=re.M))
        cases.append(Invalid(path, yaml.safe_load(text), tags["field"], tags["error"],
                             tags.get("api-error", tags["error"])))
    return cases
