//! Bad input from Python surfaces as ValueError.

use pyo3::exceptions::PyValueError;
use pyo3::PyResult;

pub(crate) fn err<T>(msg: impl Into<String>) -> PyResult<T> {
    Err(PyValueError::new_err(msg.into()))
}
