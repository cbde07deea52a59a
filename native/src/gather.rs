//! The server's reply: every table's rows gathered into the one bytes object gRPC sends.

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::codec::{decode, encode, row_bytes, INT4, INT8};
use crate::error::err;
use crate::prefetch::{prefetch, AHEAD};

/// One table's rows into the reply: `pos[i]` >= 0 copies stored row pos[i] to output row
/// i, -1 writes zeros (an absent id), -2 leaves row i as an earlier job wrote it.
#[derive(FromPyObject)]
pub(crate) struct Job<'py>(
    PyReadonlyArray2<'py, u8>,           // stored rows, as bytes [rows, row bytes]
    u8,                                  // stored dtype
    Option<PyReadonlyArray1<'py, f32>>,  // per-row scales (int8, int4)
    Option<PyReadonlyArray1<'py, f32>>,  // per-row bias (int4)
    PyReadonlyArray1<'py, i64>,          // positions
    usize,                               // dim
    usize,                               // byte offset of output row 0 in the values region
    usize,                               // index of output row 0 in the scales region
);

struct Plan<'a> {
    src: &'a [u8],
    src_row: usize,
    kind: u8,
    scales: &'a [f32],
    bias: &'a [f32],
    pos: &'a [i64],
    dim: usize,
    values_off: usize,
    row_off: usize,
}

fn plan<'a>(job: &'a Job, wire: u8, values_len: usize, scale_rows: usize) -> Result<Plan<'a>, String> {
    let Job(src, kind, scales, bias, pos, dim, values_off, row_off) = job;
    let (src_rows, src_row) = (src.shape()[0], src.shape()[1]);
    let (kind, dim) = (*kind, *dim);
    if src_row != row_bytes(kind, dim)? {
        return Err(format!("rows of {src_row} bytes are not dim {dim} of dtype code {kind}"));
    }
    let src = src.as_slice().map_err(|e| e.to_string())?;
    let scales = match scales { Some(s) => s.as_slice().map_err(|e| e.to_string())?, None => &[] };
    let bias = match bias { Some(b) => b.as_slice().map_err(|e| e.to_string())?, None => &[] };
    if (kind == INT8 || kind == INT4) && scales.len() != src_rows {
        return Err("quantised rows need one scale per row".into());
    }
    if kind == INT4 && bias.len() != src_rows {
        return Err("int4 rows need one bias per row".into());
    }
    let pos = pos.as_slice().map_err(|e| e.to_string())?;
    if pos.iter().any(|&p| p < -2 || p >= src_rows as i64) {
        return Err("a position is outside the stored rows".into());
    }
    let end = values_off + pos.len() * row_bytes(wire, dim)?;
    if end > values_len || (wire == INT8 && row_off + pos.len() > scale_rows) {
        return Err("a table's rows overrun the reply".into());
    }
    Ok(Plan { src, src_row, kind, scales, bias, pos, dim, values_off: *values_off, row_off: *row_off })
}

fn gather(p: &Plan, wire: u8, values: &mut [u8], scales_out: &mut [u8]) {
    let wire_row = row_bytes(wire, p.dim).unwrap_or(0);
    let copy = p.kind == wire;
    let mut tmp = vec![0f32; p.dim];
    for (i, &r) in p.pos.iter().enumerate() {
        if let Some(&next) = p.pos.get(i + AHEAD) {
            if next >= 0 {
                prefetch(&p.src[next as usize * p.src_row]);
            }
        }
        if r == -2 {
            continue;
        }
        let dst = &mut values[p.values_off + i * wire_row..p.values_off + (i + 1) * wire_row];
        let mut scale = 0f32;
        if r < 0 {
            dst.fill(0);
        } else {
            let r = r as usize;
            let row = &p.src[r * p.src_row..(r + 1) * p.src_row];
            if copy {
                dst.copy_from_slice(row);
                if wire == INT8 {
                    scale = p.scales[r];
                }
            } else {
                let (s, b) = (p.scales.get(r).copied().unwrap_or(0.0),
                              p.bias.get(r).copied().unwrap_or(0.0));
                decode(p.kind, row, s, b, &mut tmp);
                scale = encode(wire, &tmp, dst);
            }
        }
        if wire == INT8 {
            let at = (p.row_off + i) * 4;
            scales_out[at..at + 4].copy_from_slice(&scale.to_le_bytes());
        }
    }
}

/// The whole serialised reply in one bytes object: `head`, a values region of
/// `values_len` bytes, `mid`, a scales region of `scales_len` bytes (int8 wire only), each
/// region filled by the jobs in order. Rows are written once, where gRPC reads them.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub(crate) fn reply<'py>(
    py: Python<'py>,
    head: &[u8],
    values_len: usize,
    mid: &[u8],
    scales_len: usize,
    wire: u8,
    jobs: Vec<Job<'py>>,
) -> PyResult<Bound<'py, PyBytes>> {
    if wire > INT8 {
        return err(format!("unknown wire dtype code {wire}"));
    }
    let plans = jobs
        .iter()
        .map(|j| plan(j, wire, values_len, scales_len / 4))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PyValueError::new_err)?;
    let total = head.len() + values_len + mid.len() + scales_len;
    PyBytes::new_with(py, total, |buf: &mut [u8]| {
        let (h, rest) = buf.split_at_mut(head.len());
        h.copy_from_slice(head);
        let (values, rest) = rest.split_at_mut(values_len);
        let (m, scales) = rest.split_at_mut(mid.len());
        m.copy_from_slice(mid);
        py.detach(|| {
            for p in &plans {
                gather(p, wire, values, scales);
            }
        });
        Ok(())
    })
}
