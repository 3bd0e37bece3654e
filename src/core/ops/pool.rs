//! Pooling over windows, channels last, 1-D or 2-D by the input's rank: max, average and
//! L2 (`√Σx²`, as in the MNIST-1D pooling study). No padding.
//! Backward: max routes `dy` to the first maximum of its window (found again from `x` and
//! `y`, so no index buffer is kept); average spreads `dy/|window|`; L2 gives `dy·x/y`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{for_each_chunk_mut, Cpu};
use crate::core::ops::conv2d::{image_dims, window_out_shape, WindowGeom};
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
    L2,
}

pub trait PoolOps: BackendBase {
    fn pool_forward(kind: PoolKind, x: &Self::Buf, g: &WindowGeom, y: &mut Self::Buf);
    fn pool_backward(kind: PoolKind, x: &Self::Buf, y: &Self::Buf, dy: &Self::Buf, g: &WindowGeom, dx: &mut Self::Buf);
}

/// Calls `f(input_offset)` for each in-image position of output (oy, ox)'s window.
#[inline]
fn for_window(g: &WindowGeom, oy: usize, ox: usize, mut f: impl FnMut(usize)) {
    for ki in 0..g.kh {
        let iy = oy * g.sh + ki;
        for kj in 0..g.kw {
            let ix = ox * g.sw + kj;
            f((iy * g.w + ix) * g.c);
        }
    }
}

impl PoolOps for Cpu {
    fn pool_forward(kind: PoolKind, x: &Vec<f32>, g: &WindowGeom, y: &mut Vec<f32>) {
        let (c, in_len, out_len) = (g.c, g.h * g.w * g.c, g.positions() * g.c);
        let per_task = if g.n * out_len < 1 << 15 { g.n } else { 1 };
        let inv = 1.0 / (g.kh * g.kw) as f32;
        for_each_chunk_mut(&mut y[..g.n * out_len], per_task * out_len, |t, out| {
            for (i, yo) in out.chunks_exact_mut(out_len).enumerate() {
                let b = t * per_task + i;
                let img = &x[b * in_len..(b + 1) * in_len];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = &mut yo[(oy * g.ow + ox) * c..(oy * g.ow + ox + 1) * c];
                        match kind {
                            PoolKind::Max => o.fill(f32::NEG_INFINITY),
                            _ => o.fill(0.0),
                        }
                        for_window(g, oy, ox, |src| {
                            let v = &img[src..src + c];
                            match kind {
                                PoolKind::Max => o.iter_mut().zip(v).for_each(|(o, v)| *o = o.max(*v)),
                                PoolKind::Avg => o.iter_mut().zip(v).for_each(|(o, v)| *o += v),
                                PoolKind::L2 => o.iter_mut().zip(v).for_each(|(o, v)| *o += v * v),
                            }
                        });
                        match kind {
                            PoolKind::Max => {}
                            PoolKind::Avg => o.iter_mut().for_each(|o| *o *= inv),
                            PoolKind::L2 => o.iter_mut().for_each(|o| *o = o.sqrt()),
                        }
                    }
                }
            }
        });
    }

    fn pool_backward(kind: PoolKind, x: &Vec<f32>, y: &Vec<f32>, dy: &Vec<f32>, g: &WindowGeom, dx: &mut Vec<f32>) {
        let (c, in_len, out_len) = (g.c, g.h * g.w * g.c, g.positions() * g.c);
        let per_task = if g.n * in_len < 1 << 15 { g.n } else { 1 };
        let inv = 1.0 / (g.kh * g.kw) as f32;
        for_each_chunk_mut(&mut dx[..g.n * in_len], per_task * in_len, |t, out| {
            for (i, dimg) in out.chunks_exact_mut(in_len).enumerate() {
                let b = t * per_task + i;
                dimg.fill(0.0);
                let img = &x[b * in_len..(b + 1) * in_len];
                let (yo, go) = (&y[b * out_len..(b + 1) * out_len], &dy[b * out_len..(b + 1) * out_len]);
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let base = (oy * g.ow + ox) * c;
                        match kind {
                            PoolKind::Max => {
                                for ch in 0..c {
                                    let mut routed = false;
                                    for_window(g, oy, ox, |src| {
                                        if !routed && img[src + ch] == yo[base + ch] {
                                            dimg[src + ch] += go[base + ch];
                                            routed = true;
                                        }
                                    });
                                }
                            }
                            PoolKind::Avg => for_window(g, oy, ox, |src| {
                                for ch in 0..c {
                                    dimg[src + ch] += go[base + ch] * inv;
                                }
                            }),
                            PoolKind::L2 => for_window(g, oy, ox, |src| {
                                for ch in 0..c {
                                    let n = yo[base + ch];
                                    if n > 0.0 {
                                        dimg[src + ch] += go[base + ch] * img[src + ch] / n;
                                    }
                                }
                            }),
                        }
                    }
                }
            }
        });
    }
}

/// A pooling layer with window `kernel` and `stride` (1-D: `(1, k)`).
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
}

impl Pool {
    pub fn new_2d(kind: PoolKind, k: usize, s: usize) -> Self {
        Self { kind, kernel: (k, k), stride: (s, s) }
    }

    pub fn new_1d(kind: PoolKind, k: usize, s: usize) -> Self {
        Self { kind, kernel: (1, k), stride: (1, s) }
    }

    fn geom(&self, shape: &[usize]) -> Result<WindowGeom> {
        let (n, h, w, c) = image_dims(shape)
            .ok_or_else(|| Error::Shape(format!("pooling expects [B, L, C] or [B, H, W, C], got {shape:?}")))?;
        WindowGeom::new(n, h, w, c, self.kernel, self.stride, (0, 0))
    }
}

impl<B: Backend> Layer<B> for Pool {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Window { kernel: self.kernel, stride: self.stride, padding: (0, 0), weighted: false }
    }
    fn describe(&self) -> String {
        let name = match self.kind {
            PoolKind::Max => "max-pool",
            PoolKind::Avg => "avg-pool",
            PoolKind::L2 => "l2-pool",
        };
        format!("{name}(k{}x{}, s{})", self.kernel.0, self.kernel.1, self.stride.1)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geom(input)?;
        Ok(window_out_shape(input, &g, g.c).to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let Ok(g) = self.geom(x.shape()) else { return };
        y.resize(&window_out_shape(x.shape(), &g, g.c));
        B::pool_forward(self.kind, x.buf(), &g, y.buf_mut());
    }
    fn backward(&mut self, x: &Tensor<B>, y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let (Some(dx), Ok(g)) = (dx, self.geom(x.shape())) else {
            return;
        };
        dx.resize(x.shape());
        B::pool_backward(self.kind, x.buf(), y.buf(), dy.buf(), &g, dx.buf_mut());
    }
    fn macs(&self, input: &[usize]) -> u64 {
        self.geom(input).map(|g| (g.n * g.positions() * g.c * g.kh * g.kw) as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};

    /// Distinct values spaced well beyond the finite-difference step, so no window ties.
    fn spaced(len: usize, seed: u64) -> Vec<f32> {
        let r = random_input(len, seed, 0.0);
        let mut idx: Vec<usize> = (0..len).collect();
        idx.sort_by(|a, b| r[*a].total_cmp(&r[*b]));
        let mut out = vec![0.0; len];
        for (rank, i) in idx.into_iter().enumerate() {
            out[i] = rank as f32 * 0.1 - len as f32 * 0.05;
        }
        out
    }

    #[test]
    fn gradient_check_max_avg_l2_2d() {
        for kind in [PoolKind::Max, PoolKind::Avg, PoolKind::L2] {
            let mut p = Pool::new_2d(kind, 2, 2);
            check_layer(&mut p, &[2, 4, 4, 3], spaced(96, 3), 1e-2, 2e-3);
        }
    }

    #[test]
    fn gradient_check_1d_overlapping() {
        for kind in [PoolKind::Max, PoolKind::Avg, PoolKind::L2] {
            let mut p = Pool::new_1d(kind, 3, 2);
            assert_eq!(Layer::<crate::core::Cpu>::output_shape(&p, &[2, 9, 2]).unwrap(), vec![2, 4, 2]);
            check_layer(&mut p, &[2, 9, 2], spaced(36, 4), 1e-2, 2e-3);
        }
    }
}
