//! The client's reassembly: each reply's rows into the result, in request order.

use numpy::{PyReadonlyArray1, PyReadwriteArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::codec::{decode, row_bytes, FP16, FP32, INT8};
use crate::error::err;

/// Rows of one reply (read in place from the received bytes) into `out[index[i]]`, as
/// fp32: a copy for fp32 on the wire, a conversion for fp16, q * scale for int8.
#[pyfunction]
pub(crate) fn scatter<'py>(
    py: Python<'py>,
    mut out: PyReadwriteArray2<'py, f32>,
    index: PyReadonlyArray1<'py, i64>,
    raw: &[u8],
    offset: usize,
    wire: u8,
    scales_offset: usize,
) -> PyResult<()> {
    let (rows, dim) = (out.shape()[0], out.shape()[1]);
    let index = index.as_slice()?;
    let out = out.as_slice_mut()?;
    let wire_row = row_bytes(wire, dim).map_err(PyValueError::new_err)?;
    if wire > INT8 {
        return err(format!("unknown wire dtype code {wire}"));
    }
    if offset + index.len() * wire_row > raw.len()
        || (wire == INT8 && scales_offset + index.len() * 4 > raw.len())
    {
        return err("the reply is shorter than its rows");
    }
    if index.iter().any(|&i| i < 0 || i as usize >= rows) {
        return err("an index is outside the result");
    }
    py.detach(|| {
        for (i, &at) in index.iter().enumerate() {
            let src = &raw[offset + i * wire_row..offset + (i + 1) * wire_row];
            let dst = &mut out[at as usize * dim..(at as usize + 1) * dim];
            match wire {
                FP32 => decode(FP32, src, 0.0, 0.0, dst),
                FP16 => decode(FP16, src, 0.0, 0.0, dst),
                _ => {
                    let s = &raw[scales_offset + i * 4..scales_offset + i * 4 + 4];
                    decode(INT8, src, f32::from_le_bytes([s[0], s[1], s[2], s[3]]), 0.0, dst)
                }
            }
        }
    });
    Ok(())
}
