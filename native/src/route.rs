//! The client's routing: ids grouped by the shard that owns them.

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::err;

/// splitmix64's finaliser, bit for bit embedding/partition.py's `mix64`.
#[inline(always)]
fn splitmix64(id: i64) -> u64 {
    let mut z = (id as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Ids grouped by owning shard: (request positions grouped by shard, in request order
/// within a shard; where each shard's group starts, shards + 1 entries; each shard's ids
/// as packed little-endian int64 bytes, ready for the request).
#[pyfunction]
#[allow(clippy::type_complexity)]
pub(crate) fn route<'py>(
    py: Python<'py>,
    ids: PyReadonlyArray1<'py, i64>,
    shards: usize,
) -> PyResult<(Bound<'py, PyArray1<i64>>, Vec<usize>, Vec<Bound<'py, PyBytes>>)> {
    if shards == 0 {
        return err("shard_count must be >= 1");
    }
    let ids = ids.as_slice()?;
    let (order, starts) = py.detach(|| {
        let owner: Vec<u32> = ids.iter().map(|&id| (splitmix64(id) % shards as u64) as u32).collect();
        let mut starts = vec![0usize; shards + 1];
        for &o in &owner {
            starts[o as usize + 1] += 1;
        }
        for s in 0..shards {
            starts[s + 1] += starts[s];
        }
        let mut next = starts.clone();
        let mut order = vec![0i64; ids.len()];
        for (i, &o) in owner.iter().enumerate() {
            order[next[o as usize]] = i as i64;
            next[o as usize] += 1;
        }
        (order, starts)
    });
    let mut packed = Vec::with_capacity(shards);
    for s in 0..shards {
        let group = &order[starts[s]..starts[s + 1]];
        packed.push(PyBytes::new_with(py, group.len() * 8, |buf: &mut [u8]| {
            for (c, &i) in buf.chunks_exact_mut(8).zip(group) {
                c.copy_from_slice(&ids[i as usize].to_le_bytes());
            }
            Ok(())
        })?);
    }
    Ok((order.into_pyarray(py), starts, packed))
}
