# Triton's python backend loads the model from this file; the code is RecOp's.
from embedding.predict.model import TritonPythonModel  # noqa: F401
