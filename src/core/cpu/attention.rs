//! CPU kernels of the token embedding and the row softmax (traits in
//! `core/ops/{embedding,softmax}.rs`; `core/cuda/attention.rs` is the GPU side).

use crate::core::cpu::{chunking, for_each_chunk_mut, Cpu};
use crate::core::ops::embedding::EmbeddingOps;
use crate::core::ops::softmax::SoftmaxOps;

/// A token id as an index into a table of `vocab` rows (None: not one of them).
#[inline]
fn row_of(id: f32, vocab: usize) -> Option<usize> {
    (id >= 0.0 && id < vocab as f32 && id.fract() == 0.0).then_some(id as usize)
}

impl EmbeddingOps for Cpu {
    fn embedding_forward(ids: &Vec<f32>, table: &Vec<f32>, y: &mut Vec<f32>, tokens: usize, dim: usize) {
        let vocab = table.len() / dim.max(1);
        for (t, out) in y[..tokens * dim].chunks_exact_mut(dim).enumerate() {
            match row_of(ids[t], vocab) {
                Some(v) => out.copy_from_slice(&table[v * dim..(v + 1) * dim]),
                None => out.fill(0.0),
            }
        }
    }
    fn embedding_backward(
        ids: &Vec<f32>,
        dy: &Vec<f32>,
        dtable: &mut Vec<f32>,
        tokens: usize,
        vocab: usize,
        dim: usize,
    ) {
        dtable.fill(0.0);
        for (t, g) in dy[..tokens * dim].chunks_exact(dim).enumerate() {
            if let Some(v) = row_of(ids[t], vocab) {
                for (d, g) in dtable[v * dim..(v + 1) * dim].iter_mut().zip(g) {
                    *d += g;
                }
            }
        }
    }
}

impl SoftmaxOps for Cpu {
    fn softmax_forward(x: &Vec<f32>, y: &mut Vec<f32>, rows: usize, n: usize, scale: f32, causal: bool) {
        let y = &mut y[..rows * n];
        // whole rows per task (the same split for a thread count: deterministic)
        let per_task = chunking(rows, 64);
        for_each_chunk_mut(y, per_task * n, |chunk, out| {
            for (r, o) in out.chunks_exact_mut(n).enumerate() {
                let row = chunk * per_task + r;
                let seen = if causal { row % n + 1 } else { n };
                let xr = &x[row * n..row * n + seen];
                // scale > 0 (1/√d), so the largest scaled input is the scaled largest
                let m = xr.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v)) * scale;
                let mut z = 0.0f32;
                for (o, &v) in o[..seen].iter_mut().zip(xr) {
                    *o = (v * scale - m).exp();
                    z += *o;
                }
                let inv = 1.0 / z;
                o[..seen].iter_mut().for_each(|v| *v *= inv);
                o[seen..].fill(0.0);
            }
        });
    }
    fn softmax_backward(y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>, rows: usize, n: usize, scale: f32) {
        let dx = &mut dx[..rows * n];
        let per_task = chunking(rows, 64);
        for_each_chunk_mut(dx, per_task * n, |chunk, out| {
            for (r, o) in out.chunks_exact_mut(n).enumerate() {
                let row = chunk * per_task + r;
                let (yr, gr) = (&y[row * n..(row + 1) * n], &dy[row * n..(row + 1) * n]);
                let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                for ((o, &yv), &g) in o.iter_mut().zip(yr).zip(gr) {
                    *o = scale * yv * (g - dot);
                }
            }
        });
    }
}
