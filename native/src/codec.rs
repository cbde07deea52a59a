//! Row encodings shared by the server's gather and the client's scatter.

use half::f16;
use half::slice::HalfFloatSliceExt;

// Storage and wire dtypes, as embedding/native.py numbers them.
pub(crate) const FP32: u8 = 0;
pub(crate) const FP16: u8 = 1;
pub(crate) const INT8: u8 = 2;
pub(crate) const INT4: u8 = 3;

pub(crate) fn row_bytes(kind: u8, dim: usize) -> Result<usize, String> {
    Ok(match kind {
        FP32 => dim * 4,
        FP16 => dim * 2,
        INT8 => dim,
        INT4 => dim.div_ceil(2),
        _ => return Err(format!("unknown dtype code {kind}")),
    })
}

/// One stored row as fp32 into `tmp`. int8: q * scale; int4: nibble * scale + bias.
#[inline(always)]
pub(crate) fn decode(kind: u8, row: &[u8], scale: f32, bias: f32, tmp: &mut [f32]) {
    match kind {
        FP32 => {
            for (t, c) in tmp.iter_mut().zip(row.chunks_exact(4)) {
                *t = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        FP16 => {
            // Rows in a reply sit at any byte offset: widen through an aligned copy, so
            // that half's converter can use F16C where the CPU has it.
            let mut halves = [f16::ZERO; 64];
            for (t, c) in tmp.chunks_mut(64).zip(row.chunks(128)) {
                let h = &mut halves[..t.len()];
                for (x, b) in h.iter_mut().zip(c.chunks_exact(2)) {
                    *x = f16::from_bits(u16::from_le_bytes([b[0], b[1]]));
                }
                h.convert_to_f32_slice(t);
            }
        }
        INT8 => {
            for (t, &q) in tmp.iter_mut().zip(row) {
                *t = q as i8 as f32 * scale;
            }
        }
        _ => {
            for (j, t) in tmp.iter_mut().enumerate() {
                let byte = row[j / 2];
                let q = if j % 2 == 0 { byte & 0x0f } else { byte >> 4 };
                *t = q as f32 * scale + bias;
            }
        }
    }
}

/// fp32 row -> wire row; returns the row's scale for int8 (value = q * scale).
#[inline(always)]
pub(crate) fn encode(wire: u8, tmp: &[f32], out: &mut [u8]) -> f32 {
    match wire {
        FP32 => {
            for (c, t) in out.chunks_exact_mut(4).zip(tmp) {
                c.copy_from_slice(&t.to_le_bytes());
            }
            0.0
        }
        FP16 => {
            let mut halves = [f16::ZERO; 64];
            for (o, t) in out.chunks_mut(128).zip(tmp.chunks(64)) {
                let h = &mut halves[..t.len()];
                h.convert_from_f32_slice(t);
                for (b, x) in o.chunks_exact_mut(2).zip(h.iter()) {
                    b.copy_from_slice(&x.to_bits().to_le_bytes());
                }
            }
            0.0
        }
        _ => {
            let max = tmp.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for (o, t) in out.iter_mut().zip(tmp) {
                *o = (t * inv).round().clamp(-127.0, 127.0) as i8 as u8;
            }
            scale
        }
    }
}
