"""The benchmark's dense model: one candidate row is its 26 embeddings (dim 64) side by
side, scored by a 1664-256-1 MLP in numpy (fixed weights): a ranking model's shape and
cost per row, without a framework the CPU Triton here does not have."""

import numpy as np
import triton_python_backend_utils as pb_utils

TABLES = [f"f{i:02d}" for i in range(26)]
DIM = 64
HIDDEN = 256


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        for name in TABLES:
            config.add_input({"name": name, "data_type": "TYPE_FP32", "dims": [-1, DIM]})
        config.add_output({"name": "score", "data_type": "TYPE_FP32", "dims": [-1, 1]})
        return config

    def initialize(self, args):
        rng = np.random.default_rng(7)
        width = len(TABLES) * DIM
        self.w1 = (rng.standard_normal((width, HIDDEN)) / np.sqrt(width)).astype(np.float32)
        self.w2 = (rng.standard_normal((HIDDEN, 1)) / np.sqrt(HIDDEN)).astype(np.float32)

    def execute(self, requests):
        out = []
        for request in requests:
            rows = np.concatenate([pb_utils.get_input_tensor_by_name(request, t).as_numpy()
                                   for t in TABLES], axis=1)
            hidden = np.maximum(rows @ self.w1, 0)
            score = 1 / (1 + np.exp(-(hidden @ self.w2)))
            out.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("score", score.astype(np.float32))]))
        return out
