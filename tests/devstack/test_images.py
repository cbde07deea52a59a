"""devstack.images without buildah: which files make up a build context (Docker's
.dockerignore rules) and tags that follow the content."""

from __future__ import annotations

from pathlib import Path

from devstack import images

IGNORE = """# like the repository's
*
!pyproject.toml
!pkg/
**/__pycache__/
**/*.pyc
"""


def tree(root: Path) -> Path:
    files = {
        ".dockerignore": IGNORE,
        "pyproject.toml": "[project]\n",
        "README.md": "left out\n",
        "pkg/__init__.py": "",
        "pkg/sub/mod.py": "x = 1\n",
        "pkg/sub/__pycache__/mod.cpython-311.pyc": "bytecode",
        "pkg/stray.pyc": "bytecode",
        "other/mod.py": "left out\n",
        ".git/HEAD": "ref: refs/heads/main\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def names(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in images.context_files(root)]


def test_context_holds_what_dockerignore_lets_in(tmp_path):
    root = tree(tmp_path)
    assert names(root) == ["pkg/__init__.py", "pkg/sub/mod.py", "pyproject.toml"]


def test_repository_context_is_the_allowed_top_level_entries():
    allowed = {line[1:].rstrip("/") for line in
               (images.REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    tops = {p.relative_to(images.REPO).parts[0] for p in images.context_files(images.REPO)}
    assert tops <= allowed and "pyproject.toml" in tops
    assert not any(p.suffix == ".pyc" for p in images.context_files(images.REPO))


def test_tag_changes_with_the_context_and_only_with_it(tmp_path):
    root = tree(tmp_path)
    dockerfile = root / "pkg" / "Dockerfile"
    dockerfile.write_text("ARG BASE\nFROM $BASE\n")

    def ref(base: str = "localhost/recop/base:1") -> str:
        return images.content_ref("server", dockerfile, base, root)

    first = ref()
    assert first.startswith("localhost/recop/server:") and ref() == first
    (root / "other" / "mod.py").write_text("changed, but outside the context\n")
    (root / "pkg" / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_text("new bytecode")
    assert ref() == first
    (root / "pkg" / "sub" / "mod.py").write_text("x = 2\n")
    second = ref()
    assert second != first
    assert ref("localhost/recop/base:2") != second
    dockerfile.write_text("ARG BASE\nFROM $BASE\nUSER 10001\n")
    assert ref() != second
