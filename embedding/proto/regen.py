"""Regenerate the committed gRPC stubs: `python -m embedding.proto.regen`."""

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    # Run from the repository root so the generated imports read `from embedding.proto ...`.
    rc = protoc.main(["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={ROOT}",
                      f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}",
                      str(ROOT / "embedding/proto/embedding.proto")])
    if rc != 0:
        raise SystemExit(rc)


if __name__ == "__main__":
    main()
