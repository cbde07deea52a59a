//! The hot path of RecOp's embedding lookups, called from embedding/native.py.
//!
//! Server side: an open-addressing hash index over a shard's sorted ids (O(1) per id, four
//! bytes per slot at load <= 0.7, beside the ids the checkpoint already holds), and a gather
//! that writes every row straight into the bytes object gRPC sends, converting the stored
//! dtype to the wire dtype on the way. Client side: routing ids to shards (splitmix64, the
//! partition function of embedding/partition.py) and scattering each reply's rows, read in
//! place from the received bytes, into the result in request order.
//!
//! Every loop runs with the GIL released; inputs are checked before any raw access.

mod codec;
mod error;
mod gather;
mod index;
mod prefetch;
mod route;
mod scatter;

use pyo3::prelude::*;

#[pymodule]
fn embedding_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(index::build_index, m)?)?;
    m.add_function(wrap_pyfunction!(index::positions, m)?)?;
    m.add_function(wrap_pyfunction!(gather::reply, m)?)?;
    m.add_function(wrap_pyfunction!(scatter::scatter, m)?)?;
    m.add_function(wrap_pyfunction!(route::route, m)?)?;
    m.add("EMPTY_SLOT", index::EMPTY)?;
    Ok(())
}
