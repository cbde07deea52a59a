"""Tensor containers, each read a chunk of rows at a time: safetensors files (through the
safetensors library), NumPy .npz archives (their .npy members streamed out of the zip,
compressed or not) and PyTorch state dicts (torch.load with mmap, weights only)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from embedding.importers.sources import Array, TableSource, container_tables

# safetensors' dtype names -> numpy's
_SAFETENSORS = {"F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16",
                "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}


def missing(extra: str, module: str) -> ImportError:
    return ImportError(f"reading this format needs {module}: pip install 'recop[{extra}]'")


def safetensors_tables(path: Path, label: str | None) -> list[TableSource]:
    try:
        from safetensors import safe_open
    except ImportError as err:
        raise missing("import", "safetensors") from err
    arrays = {}
    with safe_open(str(path), framework="numpy") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safe_open handle is no dict)
            piece = handle.get_slice(key)
            arrays[key] = Array(tuple(piece.get_shape()), _SAFETENSORS[piece.get_dtype()],
                                _safetensors_chunks(path, key))
    return container_tables(path, arrays, label)


def _safetensors_chunks(path: Path, key: str):
    def chunks(rows: int) -> Iterator[np.ndarray]:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            piece = handle.get_slice(key)
            total = piece.get_shape()[0] if piece.get_shape() else 0
            if piece.get_dtype() == "BF16":
                raise ValueError(f"{path}: {key} is bfloat16, which NumPy cannot read: save "
                                 "it as float32 or float16")
            for start in range(0, total, rows):
                yield piece[start:min(start + rows, total)]
    return chunks


def npz_tables(path: Path, label: str | None) -> list[TableSource]:
    arrays = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                shape, fortran, dtype = _npy_header(stream)
            if fortran and len(shape) > 1:
                raise ValueError(f"{path}: {member} is in Fortran order: save it C-ordered")
            arrays[member.removesuffix(".npy")] = Array(shape, dtype.name,
                                                        _npz_chunks(path, member))
    return container_tables(path, arrays, label)


def _npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return read(stream)


def _npz_chunks(path: Path, member: str):
    def chunks(rows: int) -> Iterator[np.ndarray]:
        with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
            shape, _, dtype = _npy_header(stream)
            row_shape = shape[1:]
            row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
            left = shape[0] if shape else 0
            while left:
                n = min(rows, left)
                raw = stream.read(n * row_bytes)
                if len(raw) != n * row_bytes:
                    raise ValueError(f"{path}: {member} ends early (truncated archive)")
                yield np.frombuffer(raw, dtype).reshape((n, *row_shape))
                left -= n
    return chunks


def torch_tables(path: Path, label: str | None) -> list[TableSource]:
    try:
        import torch
    except ImportError as err:
        raise missing("torch", "torch") from err
    state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (a {type(state).__name__})")
    if isinstance(state.get("state_dict"), dict):  # a training checkpoint wrapping it
        state = state["state_dict"]
    arrays = {key: Array(tuple(t.shape), str(t.dtype).removeprefix("torch."),
                         _torch_chunks(t))
              for key, t in state.items() if isinstance(t, torch.Tensor)}
    return container_tables(path, arrays, label)


def _torch_chunks(tensor):
    def chunks(rows: int) -> Iterator[np.ndarray]:
        import torch

        wide = torch.float32 if tensor.is_floating_point() else tensor.dtype
        for start in range(0, tensor.shape[0] if tensor.dim() else 0, rows):
            yield tensor[start:start + rows].to(wide).numpy()
    return chunks
