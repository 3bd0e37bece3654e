//! Locally-connected layer: a convolution whose weights are not shared across positions.
//! Same windows, same shapes as [`Conv`](super::Conv), but output position `p` has its own
//! `W_p` `[Cout, K]` and bias `b_p`: it separates locality from weight sharing.
//! Built on the convolution's im2col: `y[b,p,:] = cols[b,p,:]·W_pᵀ + b_p`, backward
//! `dW_p = dy[:,p,:]ᵀ·cols[:,p,:]`, `db_p = Σ_b dy[b,p,:]`, `dcols[:,p,:] = dy[:,p,:]·W_p`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::init::{fan_in_bound, uniform, InitRng};
use crate::core::ops::conv2d::{image_dims, window_out_shape, WindowGeom};
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// The backend kernels of a locally-connected layer: a convolution's windows, each output
/// position with its own weights.
pub trait LocallyConnectedOps: BackendBase {
    /// `y[b,p,o] = bias[p,o] + Σ_k cols[b,p,k]·w[p,o,k]`.
    #[allow(clippy::too_many_arguments)]
    fn lc_forward(
        cols: &Self::Buf,
        w: &Self::Buf,
        bias: &Self::Buf,
        y: &mut Self::Buf,
        n: usize,
        p: usize,
        k: usize,
        cout: usize,
    );
    /// Writes `dw`, `db` and, if given, `dcols`.
    #[allow(clippy::too_many_arguments)]
    fn lc_backward(
        cols: &Self::Buf,
        w: &Self::Buf,
        dy: &Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
        dcols: Option<&mut Self::Buf>,
        n: usize,
        p: usize,
        k: usize,
        cout: usize,
    );
}

/// The locally-connected layer (1-D or 2-D by its input's rank).
pub struct LocallyConnected<B: Backend> {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    /// Input spatial size `(h, w)` the untied weights were made for.
    pub input_hw: (usize, usize),
    pub weight: Param<B>,
    pub bias: Param<B>,
    cols: Tensor<B>,
    dcols: Tensor<B>,
}

impl<B: Backend> LocallyConnected<B> {
    /// For inputs of spatial size `input_hw` (1-D: `(1, L)`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cin: usize,
        cout: usize,
        input_hw: (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        rng: &mut InitRng,
    ) -> Result<Self> {
        let g = WindowGeom::new(1, input_hw.0, input_hw.1, cin, kernel, stride, padding)?;
        let (p, k) = (g.positions(), g.k());
        let bound = fan_in_bound(k);
        let w = uniform(rng, p * cout * k, bound);
        let b = uniform(rng, p * cout, bound);
        Ok(Self {
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding,
            input_hw,
            weight: Param::new("weight", &[p, cout, k], &w, true),
            bias: Param::new("bias", &[p, cout], &b, false),
            cols: Tensor::empty(),
            dcols: Tensor::empty(),
        })
    }

    fn geom(&self, shape: &[usize]) -> Result<WindowGeom> {
        let (n, h, w, c) =
            image_dims(shape).ok_or_else(|| Error::Shape(format!("{} got {shape:?}", self.describe())))?;
        if c != self.in_channels || (h, w) != self.input_hw {
            return Err(Error::Shape(format!(
                "{} expects {:?} positions of {} channels, got {shape:?}",
                self.describe(),
                self.input_hw,
                self.in_channels
            )));
        }
        WindowGeom::new(n, h, w, c, self.kernel, self.stride, self.padding)
    }
}

impl<B: Backend> Layer<B> for LocallyConnected<B> {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Window {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            weighted: true,
        }
    }
    fn describe(&self) -> String {
        format!(
            "local({}->{}, k{}x{}, s{}, p{})",
            self.in_channels, self.out_channels, self.kernel.0, self.kernel.1, self.stride.1, self.padding.1
        )
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geom(input)?;
        Ok(window_out_shape(input, &g, self.out_channels).to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let Ok(g) = self.geom(x.shape()) else { return };
        let (p, k, cout) = (g.positions(), g.k(), self.out_channels);
        self.cols.resize(&[g.n * p, k]);
        B::im2col(x.buf(), &g, self.cols.buf_mut(), 0, g.n);
        y.resize(&window_out_shape(x.shape(), &g, cout));
        B::lc_forward(self.cols.buf(), self.weight.value.buf(), self.bias.value.buf(), y.buf_mut(), g.n, p, k, cout);
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let Ok(g) = self.geom(x.shape()) else { return };
        let (p, k, cout) = (g.positions(), g.k(), self.out_channels);
        let want_dx = dx.is_some();
        if want_dx {
            self.dcols.resize(&[g.n * p, k]);
        }
        B::lc_backward(
            self.cols.buf(),
            self.weight.value.buf(),
            dy.buf(),
            self.weight.grad.buf_mut(),
            self.bias.grad.buf_mut(),
            if want_dx { Some(self.dcols.buf_mut()) } else { None },
            g.n,
            p,
            k,
            cout,
        );
        if let Some(dx) = dx {
            dx.resize(x.shape());
            B::col2im(self.dcols.buf(), &g, dx.buf_mut(), 0, g.n);
        }
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
    fn visit_params_ref(&self, f: &mut dyn FnMut(&Param<B>)) {
        f(&self.weight);
        f(&self.bias);
    }
    fn macs(&self, input: &[usize]) -> u64 {
        self.geom(input).map(|g| (g.n * g.positions() * g.k() * self.out_channels) as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::ops::Conv;
    use crate::core::Cpu;
    use rand::SeedableRng;

    #[test]
    fn gradient_check_1d_and_2d() {
        let mut rng = InitRng::seed_from_u64(12);
        let mut l = LocallyConnected::<Cpu>::new(2, 3, (1, 9), (1, 3), (1, 2), (0, 1), &mut rng).unwrap();
        check_layer(&mut l, &[2, 9, 2], random_input(36, 13, 0.0), 1e-2, 3e-3);
        let mut l = LocallyConnected::<Cpu>::new(2, 2, (4, 4), (3, 3), (1, 1), (1, 1), &mut rng).unwrap();
        check_layer(&mut l, &[2, 4, 4, 2], random_input(64, 14, 0.0), 1e-2, 3e-3);
    }

    #[test]
    fn tied_weights_reduce_to_a_convolution() {
        let mut rng = InitRng::seed_from_u64(3);
        let mut conv = Conv::<Cpu>::new(2, 3, (1, 3), (1, 2), (0, 1), &mut rng);
        let mut lc = LocallyConnected::<Cpu>::new(2, 3, (1, 7), (1, 3), (1, 2), (0, 1), &mut rng).unwrap();
        let (w, b) = (conv.weight.value.to_vec(), conv.bias.value.to_vec());
        let p = 4;
        let tiled_w: Vec<f32> = (0..p).flat_map(|_| w.iter().copied()).collect();
        let tiled_b: Vec<f32> = (0..p).flat_map(|_| b.iter().copied()).collect();
        lc.weight.value = Tensor::from_slice(&[p, 3, 6], &tiled_w);
        lc.bias.value = Tensor::from_slice(&[p, 3], &tiled_b);
        let x = Tensor::<Cpu>::from_slice(&[2, 7, 2], &random_input(28, 4, 0.0));
        let (mut y1, mut y2) = (Tensor::empty(), Tensor::empty());
        conv.forward(&x, &mut y1, Mode::Eval);
        lc.forward(&x, &mut y2, Mode::Eval);
        for (a, b) in y1.to_vec().iter().zip(y2.to_vec()) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    /// Layers large enough that the CPU runs their positions' GEMMs side by side, on several
    /// threads (32 × 256 positions × 36 × 32 = 9.4M multiply-adds, over the threshold): the
    /// same bits as on one thread, where they run one after another, and a plain triple loop's
    /// values (each position's outputs land in its own columns).
    #[test]
    fn positions_side_by_side_give_the_one_thread_numbers() {
        use crate::core::cpu::with_intra_op_threads;
        let (n, p, k, cout) = (32, 256, 36, 32);
        assert!(n * p * k * cout >= crate::core::cpu::PARALLEL_GEMM_MIN_MACS);
        let cols = random_input(n * p * k, 1, 0.0);
        let w = random_input(p * cout * k, 2, 0.0);
        let bias = random_input(p * cout, 3, 0.0);
        let dy = random_input(n * p * cout, 4, 0.0);
        let run = |threads| {
            with_intra_op_threads(threads, || {
                let mut y = vec![0.0; n * p * cout];
                let (mut dw, mut db, mut dcols) = (vec![0.0; p * cout * k], vec![0.0; p * cout], vec![0.0; n * p * k]);
                Cpu::lc_forward(&cols, &w, &bias, &mut y, n, p, k, cout);
                Cpu::lc_backward(&cols, &w, &dy, &mut dw, &mut db, Some(&mut dcols), n, p, k, cout);
                [y, dw, db, dcols]
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(run(threads) == one, "{threads} threads changed the numbers");
        }
        let [y, dw, _, dcols] = &one;
        let close = |a: f32, b: f64| (a as f64 - b).abs() < 1e-4 * (1.0 + b.abs());
        for (b, pos) in [(0, 0), (5, 17), (15, 255)] {
            for o in [0, 7, cout - 1] {
                let want: f64 = bias[pos * cout + o] as f64
                    + (0..k)
                        .map(|i| cols[(b * p + pos) * k + i] as f64 * w[(pos * cout + o) * k + i] as f64)
                        .sum::<f64>();
                assert!(close(y[(b * p + pos) * cout + o], want), "y[{b},{pos},{o}]");
                let want_dw: f64 =
                    (0..n).map(|m| dy[(m * p + pos) * cout + o] as f64 * cols[(m * p + pos) * k + o] as f64).sum();
                assert!(close(dw[(pos * cout + o) * k + o], want_dw), "dw[{pos},{o},{o}]");
            }
            for i in [0, 11, k - 1] {
                let want: f64 =
                    (0..cout).map(|o| dy[(b * p + pos) * cout + o] as f64 * w[(pos * cout + o) * k + i] as f64).sum();
                assert!(close(dcols[(b * p + pos) * k + i], want), "dcols[{b},{pos},{i}]");
            }
        }
    }
}
