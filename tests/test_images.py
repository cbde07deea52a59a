"""Invariants of the two Dockerfiles: pinned default bases, a non-root numeric USER that
matches what the pods ask for, nothing but the virtualenv in the final stage, a
dependency selection that covers the imports, and in each image exactly the project
packages it runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from controllers.recmodel.objects import Owner, embedding_deployment
from recop.api.recmodel import RecModelSpec
from tests.examples import EXAMPLES

REPO = Path(__file__).resolve().parent.parent
OPERATOR = REPO / "operator" / "Dockerfile"
EMBEDDING = REPO / "embedding" / "Dockerfile"
# The module each image runs: its imports must be covered by the image's selection.
ENTRY_MODULES = {OPERATOR: ["recop_operator.main", "recop_operator.cli"],
                 EMBEDDING: ["embedding.server"]}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, heredoc bodies skipped."""
    steps: list[tuple[str, str]] = []
    heredoc_end = None
    for line in re.sub(r"\\\n", " ", path.read_text()).splitlines():
        line = line.strip()
        if heredoc_end is not None:
            heredoc_end = None if line == heredoc_end else heredoc_end
        elif line and not line.startswith("#"):
            op, arg = line.split(None, 1)
            steps.append((op, arg))
            marker = re.search(r"<<-?'?(\w+)'?", arg)
            heredoc_end = marker.group(1) if marker else None
    return steps


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def canonical(name: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", name).group().lower().replace("_", "-")


def selection(path: Path) -> set[str]:
    return set(re.findall(r'"([^"]+)"', re.search(r"wanted = \{([^}]*)\}",
                                                  path.read_text()).group(1)))


def base_defaults(path: Path) -> dict[str, str]:
    """`ARG NAME=default` before the first FROM: what `FROM $NAME` means by default."""
    return dict(arg.split("=", 1) for op, arg in instructions(path) if op == "ARG" and "=" in arg)


@pytest.mark.parametrize("path", [OPERATOR, EMBEDDING], ids=["operator", "embedding"])
def test_bases_are_pinned_and_final_stage_is_lean_and_non_root(path):
    defaults = base_defaults(path)
    bases = [re.sub(r"^\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], arg)
             for op, arg in instructions(path) if op == "FROM"]
    assert len(bases) >= 2, "multi-stage: build in one stage, copy the result"
    for base in bases:
        image = base.split()[0]
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-[\w.-]+", image), (
            f"{image}: pin an exact release tag")
    final = final_stage(path)
    for op, arg in final:
        assert not (op == "RUN" and re.search(r"apt-get|pip |gcc|make", arg)), (
            f"build step in the final stage: {arg}")
    users = [arg for op, arg in final if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), (
        "the final stage must end as a numeric non-root USER")


def test_operator_image_matches_the_chart():
    final = dict(final_stage(OPERATOR))
    assert json.loads(final["ENTRYPOINT"]) == ["recop"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "recop" in scripts
    template = (REPO / "charts" / "recop" / "templates" / "deployment.yaml").read_text()
    uid = re.search(r"runAsUser: (\d+)", template).group(1)
    assert final["USER"].split(":")[0] == uid


def test_embedding_image_runs_what_the_controller_asks():
    spec = RecModelSpec.model_validate(
        yaml.safe_load((EXAMPLES / "valid" / "recmodel.yaml").read_text())["spec"])
    pod = embedding_deployment(Owner("m", "ns", "uid"), spec, 0)["spec"]["template"]["spec"]
    final = dict(final_stage(EMBEDDING))
    # The controller sets `args`, which replace CMD and would follow any ENTRYPOINT.
    assert "ENTRYPOINT" not in final
    assert json.loads(final["CMD"]) == pod["containers"][0]["args"]
    assert final["USER"].split(":")[0] == str(pod["securityContext"]["runAsUser"])


@pytest.mark.parametrize("path", [OPERATOR, EMBEDDING], ids=["operator", "embedding"])
def test_dependency_selection_covers_the_imports(path):
    declared = {canonical(d) for d in
                tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    wanted = selection(path)
    assert wanted <= declared, f"not in pyproject.toml: {wanted - declared}"
    code = ("import importlib, json, sys\n"
            f"for m in {ENTRY_MODULES[path]!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                                       capture_output=True, text=True, timeout=120).stdout)
    owners = metadata.packages_distributions()
    used = {canonical(dist) for top in loaded for dist in owners.get(top, [])}
    assert (used & declared) <= wanted, (
        f"{path.relative_to(REPO)} imports {sorted((used & declared) - wanted)} "
        "but does not install them")


# The Rust extension of the lookup path and the crate folder an image builds it from.
NATIVE = {"embedding_native": "native"}


def project_packages_loaded(modules: list[str]) -> set[str]:
    """The repository's top-level packages (as the build context names their folders)
    that importing `modules` loads."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder = {p: project.get("package-dir", {}).get(p, p) for p in project["packages"]}
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                                       capture_output=True, text=True, timeout=120).stdout)
    folder |= NATIVE
    return {folder[top] for top in loaded if top in folder}


@pytest.mark.parametrize("path", [OPERATOR, EMBEDDING], ids=["operator", "embedding"])
def test_each_image_holds_exactly_the_packages_it_runs(path):
    allowed = {line[1:].rstrip("/") for line in
               (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    copied = {source.rstrip("/") for op, arg in instructions(path)
              if op == "COPY" and "--from" not in arg for source in arg.split()[:-1]}
    copied.discard("pyproject.toml")
    runs = project_packages_loaded(ENTRY_MODULES[path])
    assert runs <= allowed, f".dockerignore keeps out {sorted(runs - allowed)}"
    assert copied == runs, (
        f"{path.relative_to(REPO)}: copies {sorted(copied)} but runs {sorted(runs)}")
