//! The server's hash index over a shard's ids: open addressing, four bytes per slot.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::err;
use crate::prefetch::{prefetch, AHEAD};

pub(crate) const EMPTY: u32 = u32::MAX;

/// The index's own hash (murmur3's finaliser): every id of a shard has the same
/// splitmix64 residue modulo the shard count, so the partition hash would cluster slots.
#[inline(always)]
fn index_hash(id: i64) -> u64 {
    let mut z = id as u64;
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// Multiply-shift range reduction: any capacity, not only powers of two (memory counts).
#[inline(always)]
fn home(id: i64, capacity: usize) -> usize {
    ((index_hash(id) as u128 * capacity as u128) >> 64) as usize
}

/// Slots for `n` ids at load factor <= 0.7.
pub fn capacity(n: usize) -> usize {
    n + n * 3 / 7 + 1
}

fn build(ids: &[i64]) -> Result<Vec<u32>, String> {
    if ids.len() >= EMPTY as usize {
        return Err(format!("{} rows in one shard's table: at most {}", ids.len(), EMPTY - 1));
    }
    let cap = capacity(ids.len());
    let mut slots = vec![EMPTY; cap];
    for (row, &id) in ids.iter().enumerate() {
        let mut s = home(id, cap);
        loop {
            let held = slots[s];
            if held == EMPTY {
                slots[s] = row as u32;
                break;
            }
            if ids[held as usize] == id {
                return Err(format!("id {id} appears twice"));
            }
            s += 1;
            if s == cap {
                s = 0;
            }
        }
    }
    Ok(slots)
}

#[inline(always)]
fn find(slots: &[u32], ids: &[i64], id: i64) -> i64 {
    let cap = slots.len();
    let mut s = home(id, cap);
    loop {
        let held = slots[s];
        if held == EMPTY {
            return -1;
        }
        if ids[held as usize] == id {
            return held as i64;
        }
        s += 1;
        if s == cap {
            s = 0;
        }
    }
}

fn check_index(slots: &[u32], ids: &[i64]) -> PyResult<()> {
    if slots.len() != capacity(ids.len()) {
        return err("index does not belong to these ids");
    }
    Ok(())
}

/// The hash index of `ids` (unique): slot -> row, EMPTY for a free slot.
#[pyfunction]
pub(crate) fn build_index<'py>(py: Python<'py>, ids: PyReadonlyArray1<'py, i64>) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let ids = ids.as_slice()?;
    let slots = py.detach(|| build(ids)).map_err(PyValueError::new_err)?;
    Ok(slots.into_pyarray(py))
}

/// Row of every query id in the indexed `ids`, -1 where absent; and how many are absent.
#[pyfunction]
pub(crate) fn positions<'py>(
    py: Python<'py>,
    slots: PyReadonlyArray1<'py, u32>,
    ids: PyReadonlyArray1<'py, i64>,
    query: PyReadonlyArray1<'py, i64>,
) -> PyResult<(Bound<'py, PyArray1<i64>>, usize)> {
    let (slots, ids, query) = (slots.as_slice()?, ids.as_slice()?, query.as_slice()?);
    check_index(slots, ids)?;
    let (pos, missing) = py.detach(|| {
        let mut pos = vec![-1i64; query.len()];
        let mut missing = 0;
        if !ids.is_empty() {
            let cap = slots.len();
            for (i, &id) in query.iter().enumerate() {
                if let Some(&next) = query.get(i + AHEAD) {
                    prefetch(&slots[home(next, cap)]);
                }
                pos[i] = find(slots, ids, id);
            }
        }
        for &p in &pos {
            missing += (p < 0) as usize;
        }
        (pos, missing)
    });
    Ok((pos.into_pyarray(py), missing))
}
