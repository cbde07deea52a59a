"""Checkpoints from what trainers write: Parquet tables (an int64 id column and a vector
column, via pyarrow), safetensors files, NumPy .npz archives and PyTorch state dicts
(TorchRec EmbeddingBagCollection / EmbeddingCollection keys included), converted in
bounded memory into a full or incremental checkpoint (docs/checkpoint-format.md) for a
RecModel's shard count and dtypes, the manifest written last. Bad input (ids not int64,
ragged vectors, duplicate ids, NaN or Inf, a dimension that does not match) raises
ImportRefused naming the file, table and row, before anything is written.

Data plane: imports embedding's checkpoint format only. The readers' libraries are
optional extras: `recop[import]` (pyarrow, safetensors, tqdm), `recop[torch]`.
CLI: `python -m embedding.importers --help`.
"""

from embedding.importers.run import Options, Source, import_checkpoint
from embedding.importers.target import ImportRefused, TableSpec, Target, target_from_recmodel

__all__ = ["ImportRefused", "Options", "Source", "TableSpec", "Target", "import_checkpoint",
           "target_from_recmodel"]
