//! Pooling over windows, channels last, 1-D or 2-D by the input's rank: max, average and
//! L2 (`√Σx²`, as in the MNIST-1D pooling study). No padding.
//! Backward: max routes `dy` to the first maximum of its window (found again from `x` and
//! `y`, so no index buffer is kept); average spreads `dy/|window|`; L2 gives `dy·x/y`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::ops::conv2d::{image_dims, window_out_shape, WindowGeom};
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
    L2,
}

/// The backend kernels of window pooling (max, average, L2) and their backward passes.
pub trait PoolOps: BackendBase {
    fn pool_forward(kind: PoolKind, x: &Self::Buf, g: &WindowGeom, y: &mut Self::Buf);
    fn pool_backward(kind: PoolKind, x: &Self::Buf, y: &Self::Buf, dy: &Self::Buf, g: &WindowGeom, dx: &mut Self::Buf);
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
