"""PyTorch state dicts written by torch itself (torch.save): tables laid out as TorchRec's
EmbeddingBagCollection (`embedding_bags.<table>.weight`) and EmbeddingCollection
(`embeddings.<table>.weight`) lay them out, under a model prefix, beside dense layers that
are left out; imported into a real MinIO and served by real embedding-server processes,
which return the model's own rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from devstack.shards import LocalCluster
from embedding.client import EmbeddingClient
from embedding.importers import ImportRefused, Options, Source, TableSpec, Target
from embedding.importers import import_checkpoint as run_import

pytestmark = pytest.mark.integration
SHARDS = 2


class Sparse(nn.Module):
    """The module layout of TorchRec's collections: a ModuleDict per collection."""

    def __init__(self):
        super().__init__()
        self.embedding_bags = nn.ModuleDict({"user": nn.EmbeddingBag(500, 8, mode="sum")})
        self.embeddings = nn.ModuleDict({"item": nn.Embedding(300, 8)})


class Ranker(nn.Module):
    def __init__(self):
        super().__init__()
        self.sparse_arch = Sparse()
        self.over = nn.Linear(16, 1)


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(3)
    ranker = Ranker()
    path = tmp_path / "ranker.pt"
    torch.save({"state_dict": ranker.state_dict(), "epoch": 7}, path)
    return ranker, path


def test_keys_are_torchrec_s(model):
    keys = set(model[0].state_dict())
    assert {"sparse_arch.embedding_bags.user.weight", "sparse_arch.embeddings.item.weight",
            "over.weight"} <= keys


def test_a_state_dict_is_served_as_the_model_holds_it(s3, model):
    ranker, path = model
    uri = s3.uri("import-torch")
    target = Target(SHARDS, {"user": TableSpec(8), "item": TableSpec(8, "fp16")})
    manifest = run_import([Source(path)], s3.client, uri, target, 1,
                          options=Options(progress=False))
    assert set(manifest.tables) == {"user", "item"}, "the dense layer is left out"
    servers = LocalCluster(SHARDS, env=s3.env)
    try:
        servers.prepare_full(1, uri)
        servers.commit(1)
        ids = np.array([0, 17, 299], dtype=np.int64)
        with EmbeddingClient(servers.lookup_addresses) as client:
            got = client.lookup({"user": ids, "item": ids})
        weights = ranker.sparse_arch
        np.testing.assert_array_equal(got.values["user"],
                                      weights.embedding_bags["user"].weight[ids].detach().numpy())
        np.testing.assert_allclose(got.values["item"],
                                   weights.embeddings["item"].weight[ids].detach().numpy(),
                                   rtol=1e-3)
    finally:
        servers.stop()


def test_bfloat16_tables_and_a_wrong_dimension(s3, tmp_path):
    table = nn.Embedding(40, 4).to(torch.bfloat16)
    path = tmp_path / "bf16.pt"
    torch.save(nn.ModuleDict({"embeddings": nn.ModuleDict({"t": table})}).state_dict(), path)
    uri = s3.uri("import-torch-bf16")
    run_import([Source(path)], s3.client, uri, Target(1, {"t": TableSpec(4)}), 1,
               options=Options(progress=False))
    bad = s3.uri("import-torch-dim")
    with pytest.raises(ImportRefused, match=r"bf16.pt: table t, row 0: vectors of 4 values"):
        run_import([Source(path)], s3.client, bad, Target(1, {"t": TableSpec(16)}), 1,
                   options=Options(progress=False))
