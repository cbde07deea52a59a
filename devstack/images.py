"""RecOp's images, built from the repository's own Dockerfiles with buildah (no daemon).

    python -m devstack.images          # build what changed, print every image

The Dockerfiles take their base as `ARG BASE`; here a base made from Debian packages
(mmdebstrap) stands in for the Python slim image, which cannot be pulled. Each tag is a
hash of everything the build reads (Dockerfile, base, the files of the build context
that .dockerignore lets in), so an unchanged tree finds its image in buildah's storage
in well under a second and a changed one gets a new tag, never a stale image under an
old name. The storage lives in the cache beside the Go builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from devstack.common import cache_dir, progress

REPO = Path(__file__).resolve().parent.parent
REGISTRY = "localhost/recop"
# What the Dockerfiles need of python:3.11-slim: python (3.11.2 in bookworm), venv with
# pip, CA roots, useradd.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd")
# The sandbox's pause process: holds the pod's namespaces, reaps orphans, ends on TERM.
PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction term = {.sa_handler = die}, child = {.sa_handler = reap};
  sigaction(SIGINT, &term, 0);
  sigaction(SIGTERM, &term, 0);
  sigaction(SIGCHLD, &child, 0);
  for (;;) pause();
}
"""
# name -> (Dockerfile, build context)
DOCKERFILES = {"operator": (REPO / "operator" / "Dockerfile", REPO),
               "embedding-server": (REPO / "embedding" / "Dockerfile", REPO),
               "triton-cpu": (REPO / "devstack" / "dockerfiles" / "triton-cpu.Dockerfile",
                              REPO / "devstack" / "dockerfiles")}
# Build arguments that name another of these images (built first, part of the tag).
IMAGE_ARGS = {"triton-cpu": {"DATA_PLANE": "embedding-server"}}


def buildah(*args: str) -> str:
    result = subprocess.run(_buildah(*args), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed: {result.stderr.strip()[-3000:]}")
    return result.stdout.strip()


def exists(ref: str) -> bool:
    return subprocess.run(_buildah("inspect", "--type=image", ref),
                          capture_output=True).returncode == 0


def _buildah(*args: str) -> list[str]:
    root = cache_dir() / "buildah"
    # overlay, not vfs: vfs copies the whole root filesystem at every step (a fully
    # cached rebuild still took 95 s; overlay builds the server image cold in 24 s).
    return ["buildah", f"--root={root / 'storage'}", f"--runroot={root / 'run'}",
            "--storage-driver=overlay", *args]


def pause() -> str:
    """The CRI's sandbox image: a static pause binary alone in an image."""
    ref = _ref("pause", _digest(PAUSE_C.encode()))
    with _lock():
        if exists(ref):
            return ref
        with tempfile.TemporaryDirectory() as tmp:
            source, binary = Path(tmp, "pause.c"), Path(tmp, "pause")
            source.write_text(PAUSE_C)
            subprocess.run(["cc", "-Os", "-static", "-s", "-o", str(binary), str(source)],
                           check=True)
            container = buildah("from", "scratch")
            buildah("copy", container, str(binary), "/pause")
            # The nobody user, as the upstream pause image runs.
            buildah("config", "--entrypoint=[\"/pause\"]", "--user=65535:65535", container)
            buildah("commit", "--rm", container, ref)
        return ref


def base() -> str:
    """A minimal Debian with Python, from mmdebstrap, standing in for python:3.11-slim."""
    recipe = "\n".join([BASE_SUITE, *BASE_PACKAGES, *_MMDEBSTRAP_OPTIONS])
    ref = _ref("base", _digest(recipe.encode()))
    with _lock():
        if exists(ref):
            return ref
        started = time.monotonic()
        progress(f"making the base image {ref} from Debian {BASE_SUITE} packages")
        with tempfile.TemporaryDirectory() as tmp:
            tarball = Path(tmp, "rootfs.tar")
            subprocess.run(["mmdebstrap", "--quiet", *_MMDEBSTRAP_OPTIONS,
                            f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(tarball)],
                           check=True)
            container = buildah("from", "scratch")
            buildah("add", container, str(tarball), "/")
            buildah("config", "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                    "/sbin:/bin", "--env=LANG=C.UTF-8", "--cmd=[\"python3\"]", container)
            buildah("commit", "--rm", container, ref)
        progress(f"base image built in {time.monotonic() - started:.0f}s")
        return ref


_MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--aptopt=APT::Install-Recommends \"false\"",
    # Docs, man pages and translations: a third of the size, read by no one in a pod.
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
)


def build(name: str) -> str:
    """The image of one of the repository's Dockerfiles (DOCKERFILES), on the local base."""
    dockerfile, context = DOCKERFILES[name]
    args = {"BASE": base(), **{arg: build(image)
                               for arg, image in IMAGE_ARGS.get(name, {}).items()}}
    ref = content_ref(name, dockerfile, " ".join(args.values()), context)
    with _lock():
        if exists(ref):
            return ref
        started = time.monotonic()
        progress(f"building {ref} from {dockerfile.relative_to(REPO)}")
        buildah("bud", "--isolation=chroot",
                *(f"--build-arg={arg}={value}" for arg, value in args.items()),
                # pip in the build reaches PyPI through this machine's egress, whose CA
                # the host trusts and Debian's bundle may not: lent for the build only.
                "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",
                f"--file={dockerfile}", f"--tag={ref}", str(context))
        progress(f"built {ref} in {time.monotonic() - started:.0f}s")
        _prune(ref)
        return ref


def _prune(ref: str) -> None:
    """Drop the images of the same name that `ref` supersedes: every edit of the tree makes
    a new tag, and the storage would otherwise grow by an image each time."""
    repository = ref.rsplit(":", 1)[0]
    listed = buildah("images", "--format={{.Name}}:{{.Tag}}").split()
    stale = [other for other in listed if other.rsplit(":", 1)[0] == repository
             and other != ref]
    if stale:
        # --force: buildah 1.28 leaves the working container of a stage that another
        # image's build used (FROM $DATA_PLANE), which would pin the stale image.
        buildah("rmi", "--force", *stale)
        # The layers only they used (a build stage's, say).
        buildah("rmi", "--prune")


def content_ref(name: str, dockerfile: Path, base_ref: str, context: Path) -> str:
    """`name` tagged with a hash of the Dockerfile, the base and the build context."""
    digest = hashlib.sha256()
    for part in (dockerfile.read_bytes(), base_ref.encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    for path in context_files(context):
        relative = path.relative_to(context).as_posix().encode()
        content = path.read_bytes()
        digest.update(len(relative).to_bytes(8, "big") + relative)
        digest.update(len(content).to_bytes(8, "big") + content)
    return _ref(name, digest.hexdigest()[:16])


def all_images() -> dict[str, str]:
    return {"pause": pause(), **{name: build(name) for name in DOCKERFILES}}


def save(ref: str, archive: Path) -> Path:
    """The image as an OCI archive, the form `ctr images import` reads."""
    buildah("push", "--quiet", ref, f"oci-archive:{archive}:{ref}")
    return archive


def context_files(root: Path) -> list[Path]:
    """The files of the build context that `root/.dockerignore` lets in, sorted.

    Docker's rules: patterns in order, the last match decides, `!` re-includes, a pattern
    matches a path or any directory above it, `**` spans directories. A directory that is
    left out and that no `!` pattern reaches into is not walked (.git, .venv).
    """
    rules = []
    ignore = root / ".dockerignore"
    for line in (ignore.read_text() if ignore.exists() else "").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pattern = line.removeprefix("!").strip("/")
            rules.append((line.startswith("!"), pattern, _pattern_regex(pattern)))

    def kept(relative: str) -> bool:
        candidates = [*(p.as_posix() for p in PurePosixPath(relative).parents[:-1]), relative]
        keep = True
        for include, _, regex in rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                keep = include
        return keep

    def reachable(directory: str) -> bool:
        return kept(directory) or any(include and ("**" in pattern or pattern.startswith(
            directory + "/")) for include, pattern, _ in rules)

    found = []
    for current, dirs, files in os.walk(root):
        relative_dir = Path(current).relative_to(root).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        dirs[:] = [d for d in dirs if reachable(prefix + d)]
        found += [Path(current, f) for f in files if kept(prefix + f)]
    return sorted(found)


def _pattern_regex(pattern: str) -> re.Pattern:
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token))
    return re.compile(out)


def _ref(name: str, tag: str) -> str:
    return f"{REGISTRY}/{name}:{tag}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time per cache: buildah's storage is shared by every checkout."""
    with (cache_dir() / "images.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main() -> int:
    for name, ref in all_images().items():
        print(f"{name}: {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
