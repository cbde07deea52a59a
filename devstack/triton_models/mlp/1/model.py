"""A tiny dense model for tests: score = tanh(sum(user * item) * SCALE) per row.

A real computation from the embedding inputs, so a smoke inference and a golden-set
comparison see different versions give different answers (version 2 scales by 2)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

SCALE = 1.0


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        # The operator's load override names only serving settings; inputs come from here.
        for name in ("user", "item"):
            config.add_input({"name": name, "data_type": "TYPE_FP32", "dims": [-1]})
        config.add_output({"name": "score", "data_type": "TYPE_FP32", "dims": [1]})
        return config

    def initialize(self, args):
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        out = []
        for request in requests:
            user = pb_utils.get_input_tensor_by_name(request, "user").as_numpy()
            item = pb_utils.get_input_tensor_by_name(request, "item").as_numpy()
            score = np.tanh((user * item).sum(axis=1, keepdims=True) * SCALE)
            out.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("score", score.astype(np.float32))]))
        return out
