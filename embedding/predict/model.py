"""The entry model as Triton's python backend runs it (`repository/predict/1/model.py`).

One request is one ranking call: per table a 1-D INT64 tensor of ids (one per candidate
row), optional FP32 dense features, an optional `version` pin. The rows are looked up on
the shard servers (embedding.client: one version across every shard, failover between
replicas), then the dense model runs through BLS at the dense version the servers paired
with those rows (`LookupResult.dense_version`), never at whatever Triton loaded last. A
dense version that is reloading or was unloaded between the two calls (an update
committed meanwhile) is tried again from a fresh lookup until the configured deadline.
Errors go back to the caller as messages, never traces.
"""

from __future__ import annotations

import json
import logging
import os
import time

import grpc
import numpy as np
import triton_python_backend_utils as pb_utils

from embedding.client import EmbeddingLookupFailed, NoHealthyReplica
from embedding.predict.contract import (
    CONFIG_ENV,
    CONFIG_PARAMETER,
    DENSE_VERSION_OUTPUT,
    EMBEDDING_VERSION_OUTPUT,
    VERSION_INPUT,
    BadRequest,
    EntryConfig,
)
from embedding.predict.discovery import Shards
from embedding.predict.metrics import EntryMetrics

log = logging.getLogger("recop.predict")
RETRY_SECONDS = 0.05
# A shard's refusal as the status the caller gets (HTTP 400 / 404, gRPC alike).
_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: "INVALID_ARG",
           grpc.StatusCode.NOT_FOUND: "NOT_FOUND",
           grpc.StatusCode.FAILED_PRECONDITION: "UNAVAILABLE"}


def _config(model_config: dict) -> EntryConfig:
    """From the model config's parameter (a load with a config override), else from the
    environment the server's pod gives it."""
    parameter = model_config.get("parameters", {}).get(CONFIG_PARAMETER, {})
    return EntryConfig.parse(parameter.get("string_value") or os.environ.get(CONFIG_ENV, ""))


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        inputs, outputs = _config(auto_complete_model_config.as_dict()).io()
        for tensor in inputs:
            auto_complete_model_config.add_input(tensor)
        for tensor in outputs:
            auto_complete_model_config.add_output(tensor)
        return auto_complete_model_config

    def initialize(self, args):
        self.config = _config(json.loads(args["model_config"]))
        self.shards = Shards(self.config.shards, self.config.timeout_seconds)
        self.metrics = EntryMetrics(pb_utils, args["model_name"])

    def finalize(self):
        self.shards.close()

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        started = time.perf_counter()
        try:
            response = self._predict(request)
        except BadRequest as err:
            return self._error("bad_request", str(err), "INVALID_ARG")
        except NoHealthyReplica as err:
            return self._error("shard_unavailable", f"embedding lookup failed: {err}",
                               "UNAVAILABLE")
        except EmbeddingLookupFailed as err:
            return self._error("lookup", f"embedding lookup failed: {err}", "UNAVAILABLE")
        except _DenseFailed as err:
            return self._error("dense", str(err), "INTERNAL")
        except grpc.RpcError as err:  # a shard's refusal (a pin not loaded, a limit)
            return self._error("lookup", f"embedding lookup failed: {err.details()}",
                               _STATUS.get(err.code(), "INTERNAL"))
        except Exception as err:  # the caller gets the message, the log the trace
            log.exception("predict failed")
            return self._error("internal", f"internal error: {err}", "INTERNAL")
        self.metrics.stage("total", time.perf_counter() - started)
        return response

    def _predict(self, request):
        ids = {t: _input(request, t) for t in self.config.tables}
        dense = {n: _input(request, n) for n in self.config.dense_inputs}
        self.config.check(ids, dense)
        pin = pb_utils.get_input_tensor_by_name(request, VERSION_INPUT)
        version = int(pin.as_numpy().reshape(-1)[0]) if pin is not None else 0
        # A dense version unloaded since the lookup (an update committed) or one Triton is
        # reloading (a load with a new version set reloads them all) is transient: look
        # the rows up again, at whatever version now serves, until the deadline.
        deadline = time.monotonic() + self.config.timeout_seconds
        while True:
            started = time.perf_counter()
            looked = self.shards.client().lookup(ids, version=version, default_rows=(
                self.config.tables if self.config.zero_rows_when_shard_unavailable else None))
            self.metrics.stage("lookup", time.perf_counter() - started)
            self.metrics.rows(sum(len(v) for v in ids.values()))
            if looked.defaulted_shards:
                self.metrics.defaulted(looked.defaulted_shards)
            started = time.perf_counter()
            answer = self._dense(looked, dense)
            self.metrics.stage("dense", time.perf_counter() - started)
            if not answer.has_error():
                self.metrics.served(looked.version, looked.dense_version)
                return self._response(answer, looked)
            error = answer.error().message()
            if not _transient(error) or time.monotonic() > deadline:
                raise _DenseFailed(f"dense model {self.config.dense_model!r} version "
                                   f"{looked.dense_version or 'default'}: {error}")
            self.metrics.retry()
            time.sleep(RETRY_SECONDS)

    def _dense(self, looked, dense):
        inputs = [pb_utils.Tensor(name, np.ascontiguousarray(rows))
                  for name, rows in looked.values.items()]
        inputs += [pb_utils.Tensor(name, values) for name, values in dense.items()]
        return pb_utils.InferenceRequest(
            model_name=self.config.dense_model,
            model_version=looked.dense_version or -1,
            requested_output_names=self.config.outputs, inputs=inputs).exec()

    def _response(self, answer, looked):
        outputs = []
        for name in self.config.outputs:
            values = pb_utils.get_output_tensor_by_name(answer, name).as_numpy()
            outputs.append(pb_utils.Tensor(name, np.asarray(values, np.float32).reshape(
                len(values), -1)))
        outputs += [pb_utils.Tensor(EMBEDDING_VERSION_OUTPUT, np.array([looked.version])),
                    pb_utils.Tensor(DENSE_VERSION_OUTPUT, np.array([looked.dense_version]))]
        return pb_utils.InferenceResponse(output_tensors=outputs)

    def _error(self, kind: str, message: str, status: str):
        self.metrics.error(kind)
        log.warning("predict %s: %s", kind, message)
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
            message, getattr(pb_utils.TritonError, status)))


class _DenseFailed(RuntimeError):
    pass


def _transient(error: str) -> bool:
    """Triton's words for a model version that is loading, reloading or gone."""
    return any(words in error for words in ("is not ready", "is not found", "unknown model",
                                            "not available"))


def _input(request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:  # declared required, so Triton refuses the request first
        raise BadRequest(f"input {name!r} is missing")
    return tensor.as_numpy()
