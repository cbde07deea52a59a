"""The predict entry model: one Triton model that takes sparse ids per table (and dense
features), looks their rows up on the shard servers and runs the dense model at the
version paired with the rows, so that one answer never mixes two versions.

`repository/` is a Triton model repository holding it (`predict/1/model.py` imports
`embedding.predict.model`); its settings come in the model config's `recop` parameter
(`contract.EntryConfig`).
"""
