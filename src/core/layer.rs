//! Layers: ops with parameters and the activations they keep for backward, and
//! [`Sequential`], the container every model is built from.
//!
//! The contract, llm.c style: `forward(x) -> y` fills `y` (resizing it; memory is reused
//! once warm), `backward(x, y, dy) -> dx` writes (not accumulates) the parameter gradients
//! and, when asked, the input gradient. Each layer is used once per forward pass.

use crate::core::backend::Backend;
use crate::core::tensor::Tensor;
use crate::error::Result;

/// Training uses batch statistics (BatchNorm) and keeps what backward needs; evaluation
/// uses running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// How a layer's outputs depend on input positions: what the receptive-field and
/// effective-dimension analyses need to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Each output position reads only the same input position (ReLU, normalisation, …).
    Pointwise,
    /// Each output position reads a window (`kernel`, `stride`, `padding` as (rows, columns);
    /// 1-D layers have one row); `weighted`: a convolution or locally-connected layer.
    Window { kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize), weighted: bool },
    /// A linear map of the last dimension: each unit reads `inputs` values.
    Linear { inputs: usize },
    /// Anything else (flattening, transposes, blocks).
    Other,
}

/// A trainable tensor with its gradient.
pub struct Param<B: Backend> {
    pub name: &'static str,
    pub value: Tensor<B>,
    pub grad: Tensor<B>,
    /// Whether weight decay applies (weights yes; biases and norm scales no).
    pub decay: bool,
}

impl<B: Backend> Param<B> {
    pub fn new(name: &'static str, shape: &[usize], values: &[f32], decay: bool) -> Self {
        Self { name, value: Tensor::from_slice(shape, values), grad: Tensor::zeros(shape), decay }
    }
}

/// What [`Layer::visit_activations`] calls: a leaf layer, the input it saw and the output it
/// produced.
pub type ActivationVisitor<'a, B> = dyn FnMut(&dyn Layer<B>, &Tensor<B>, &Tensor<B>) + 'a;

/// Any layer as a trait object (lets [`Layer::visit_activations`]' default hand `self` out).
pub trait AsDynLayer<B: Backend> {
    fn as_dyn(&self) -> &dyn Layer<B>;
}

impl<B: Backend, T: Layer<B>> AsDynLayer<B> for T {
    fn as_dyn(&self) -> &dyn Layer<B> {
        self
    }
}

/// One op or block with its forward and backward.
pub trait Layer<B: Backend>: Send + AsDynLayer<B> {
    /// A short human-readable description, e.g. `conv(1->25, k5, s2, p1)`.
    fn describe(&self) -> String;
    /// The output shape for an input shape (batch first). Errors when the input does not fit.
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>>;
    /// Computes `y` from `x`.
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, mode: Mode);
    /// Given `dy`, writes parameter gradients and, if `dx` is given, the input gradient.
    fn backward(&mut self, x: &Tensor<B>, y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>);
    /// Visits every parameter in a fixed order (optimizers key their state by it).
    fn visit_params(&mut self, _f: &mut dyn FnMut(&mut Param<B>)) {}
    /// Visits every parameter read-only, in the same order.
    fn visit_params_ref(&self, _f: &mut dyn FnMut(&Param<B>)) {}
    /// Visits every non-trainable state tensor (BatchNorm's running statistics) in a fixed
    /// order: what a checkpoint must keep besides the parameters.
    fn visit_buffers(&mut self, _f: &mut dyn FnMut(&'static str, &mut Tensor<B>)) {}
    /// Visits the same buffers read-only.
    fn visit_buffers_ref(&self, _f: &mut dyn FnMut(&'static str, &Tensor<B>)) {}
    /// Multiply-adds of one forward pass for this input shape (batch included).
    fn macs(&self, _input: &[usize]) -> u64 {
        0
    }
    /// How outputs depend on input positions.
    fn reads(&self) -> Reads {
        Reads::Other
    }
    /// Whether this is an element-wise nonlinearity (ReLU, GELU): the analyses measure how
    /// many of its outputs are zero.
    fn is_nonlinearity(&self) -> bool {
        false
    }
    /// Calls `f` on every leaf layer with the input and output of its last forward pass
    /// (`x`, `y`: this layer's). Containers recurse; leaves report themselves.
    fn visit_activations(&self, x: &Tensor<B>, y: &Tensor<B>, f: &mut ActivationVisitor<B>) {
        f(self.as_dyn(), x, y)
    }
    /// Direct children, for analyses that walk a model (empty for leaf ops).
    fn children(&self) -> Vec<&dyn Layer<B>> {
        Vec::new()
    }
    /// Permutes the rows of every learned position table by `perm` (`row i ← row perm[i]`,
    /// the order [`crate::data::permutation::permute_one`] gives inputs); returns how many
    /// tables it permuted. A model with learned positions and no other use of order then
    /// computes on permuted inputs exactly what it computed on the originals.
    fn permute_positions(&mut self, _perm: &[usize]) -> Result<usize> {
        Ok(0)
    }
}

/// Layers applied one after another; keeps every intermediate activation and gradient.
pub struct Sequential<B: Backend> {
    layers: Vec<Box<dyn Layer<B>>>,
    acts: Vec<Tensor<B>>,
    grads: Vec<Tensor<B>>,
    /// Per layer: forward and backward time so far, when profiling (see [`Sequential::profile`]).
    times: Option<Vec<[std::time::Duration; 2]>>,
}

/// One layer's share of the time in [`Sequential::profile_report`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerTime {
    pub layer: String,
    pub forward_seconds: f64,
    pub backward_seconds: f64,
}

impl<B: Backend> Sequential<B> {
    pub fn new(layers: Vec<Box<dyn Layer<B>>>) -> Self {
        let inner = layers.len().saturating_sub(1);
        Self {
            layers,
            acts: (0..inner).map(|_| Tensor::empty()).collect(),
            grads: (0..inner).map(|_| Tensor::empty()).collect(),
            times: None,
        }
    }

    /// Starts (or, with `false`, stops) timing each layer's forward and backward pass. Timing
    /// waits for the device before and after each layer ([`BackendBase::synchronize`]), so a
    /// GPU's queue is drained at every layer: profiled steps run slower than unprofiled ones.
    ///
    /// [`BackendBase::synchronize`]: crate::core::BackendBase::synchronize
    pub fn profile(&mut self, on: bool) {
        self.times = on.then(|| vec![[std::time::Duration::ZERO; 2]; self.layers.len()]);
    }

    /// Time per layer since profiling started, in layer order.
    pub fn profile_report(&self) -> Vec<LayerTime> {
        let Some(times) = &self.times else { return Vec::new() };
        self.layers
            .iter()
            .zip(times)
            .map(|(l, t)| LayerTime {
                layer: l.describe(),
                forward_seconds: t[0].as_secs_f64(),
                backward_seconds: t[1].as_secs_f64(),
            })
            .collect()
    }

    /// Runs `f`, adding its duration to layer `i`'s `pass` (0 forward, 1 backward) when
    /// profiling.
    fn timed<R>(times: &mut Option<Vec<[std::time::Duration; 2]>>, i: usize, pass: usize, f: impl FnOnce() -> R) -> R {
        let Some(times) = times else { return f() };
        B::synchronize();
        let start = std::time::Instant::now();
        let out = f();
        B::synchronize();
        times[i][pass] += start.elapsed();
        out
    }

    pub fn layers(&self) -> &[Box<dyn Layer<B>>] {
        &self.layers
    }

    /// The output of layer `i` from the last forward pass (the last layer's is the caller's).
    pub fn activation(&self, i: usize) -> Option<&Tensor<B>> {
        self.acts.get(i)
    }

    /// Backpropagates `d_out`, a gradient with respect to the output of layer `last`, down to
    /// the input, after a forward pass of `x`; writes the input gradient into `dx`. Parameter
    /// gradients of layers `0..=last` are overwritten. `last` must be an inner layer.
    pub fn backward_from(&mut self, x: &Tensor<B>, last: usize, d_out: &Tensor<B>, dx: &mut Tensor<B>) -> Result<()> {
        if last >= self.acts.len() {
            return Err(crate::error::Error::Config(format!("layer {last} is not an inner layer")));
        }
        if d_out.shape() != self.acts[last].shape() {
            return Err(crate::error::Error::Shape(format!(
                "gradient of shape {:?} for an output of shape {:?}",
                d_out.shape(),
                self.acts[last].shape()
            )));
        }
        for i in (0..=last).rev() {
            let input = if i == 0 { x } else { &self.acts[i - 1] };
            let output = &self.acts[i];
            let (g_before, g_after) = self.grads.split_at_mut(i);
            let grad_out = if i == last { d_out } else { &g_after[0] };
            let grad_in = if i == 0 { Some(&mut *dx) } else { Some(&mut g_before[i - 1]) };
            self.layers[i].backward(input, output, grad_out, grad_in);
        }
        Ok(())
    }

    /// Shapes after each layer, starting from `input`.
    pub fn shapes(&self, input: &[usize]) -> Result<Vec<Vec<usize>>> {
        let mut shapes = vec![input.to_vec()];
        for l in &self.layers {
            let next = l.output_shape(shapes.last().map(|s| s.as_slice()).unwrap_or(input))?;
            shapes.push(next);
        }
        Ok(shapes)
    }
}

impl<B: Backend> Layer<B> for Sequential<B> {
    fn describe(&self) -> String {
        self.layers.iter().map(|l| l.describe()).collect::<Vec<_>>().join(" -> ")
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let mut s = input.to_vec();
        for l in &self.layers {
            s = l.output_shape(&s)?;
        }
        Ok(s)
    }

    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, mode: Mode) {
        let n = self.layers.len();
        if n == 0 {
            y.copy_from(x);
            return;
        }
        for i in 0..n {
            let (before, after) = self.acts.split_at_mut(i);
            let input = if i == 0 { x } else { &before[i - 1] };
            let output = if i == n - 1 { &mut *y } else { &mut after[0] };
            let layer = &mut self.layers[i];
            Self::timed(&mut self.times, i, 0, || layer.forward(input, output, mode));
        }
    }

    fn backward(&mut self, x: &Tensor<B>, y: &Tensor<B>, dy: &Tensor<B>, mut dx: Option<&mut Tensor<B>>) {
        let n = self.layers.len();
        if n == 0 {
            if let Some(dx) = dx {
                dx.copy_from(dy);
            }
            return;
        }
        for i in (0..n).rev() {
            let input = if i == 0 { x } else { &self.acts[i - 1] };
            let output = if i == n - 1 { y } else { &self.acts[i] };
            let (g_before, g_after) = self.grads.split_at_mut(i);
            let grad_out = if i == n - 1 { dy } else { &g_after[0] };
            let grad_in = if i == 0 { dx.as_deref_mut() } else { Some(&mut g_before[i - 1]) };
            let layer = &mut self.layers[i];
            Self::timed(&mut self.times, i, 1, || layer.backward(input, output, grad_out, grad_in));
        }
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        for l in &mut self.layers {
            l.visit_params(f);
        }
    }

    fn visit_params_ref(&self, f: &mut dyn FnMut(&Param<B>)) {
        for l in &self.layers {
            l.visit_params_ref(f);
        }
    }

    fn visit_activations(&self, x: &Tensor<B>, y: &Tensor<B>, f: &mut ActivationVisitor<B>) {
        let last = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            let input = if i == 0 { x } else { &self.acts[i - 1] };
            l.visit_activations(input, if i == last { y } else { &self.acts[i] }, f);
        }
    }

    fn visit_buffers(&mut self, f: &mut dyn FnMut(&'static str, &mut Tensor<B>)) {
        for l in &mut self.layers {
            l.visit_buffers(f);
        }
    }

    fn visit_buffers_ref(&self, f: &mut dyn FnMut(&'static str, &Tensor<B>)) {
        for l in &self.layers {
            l.visit_buffers_ref(f);
        }
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let mut s = input.to_vec();
        let mut total = 0;
        for l in &self.layers {
            total += l.macs(&s);
            match l.output_shape(&s) {
                Ok(next) => s = next,
                Err(_) => break,
            }
        }
        total
    }

    fn children(&self) -> Vec<&dyn Layer<B>> {
        self.layers.iter().map(|l| l.as_ref()).collect()
    }

    fn permute_positions(&mut self, perm: &[usize]) -> Result<usize> {
        let mut n = 0;
        for l in &mut self.layers {
            n += l.permute_positions(perm)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ops::{Linear, Relu};
    use crate::core::{Cpu, Mode};
    use rand::SeedableRng;

    #[test]
    fn profile_times_every_layer_of_both_passes() {
        let mut rng = crate::core::init::InitRng::seed_from_u64(0);
        let mut net = Sequential::<Cpu>::new(vec![
            Box::new(Linear::new(64, 256, &mut rng)),
            Box::new(Relu),
            Box::new(Linear::new(256, 10, &mut rng)),
        ]);
        assert!(net.profile_report().is_empty(), "no report unless profiling");
        let x = Tensor::<Cpu>::from_slice(&[32, 64], &vec![0.5; 32 * 64]);
        let (mut y, dy) = (Tensor::empty(), Tensor::<Cpu>::from_slice(&[32, 10], &vec![1.0; 320]));
        net.profile(true);
        for _ in 0..3 {
            net.forward(&x, &mut y, Mode::Train);
            net.backward(&x, &y, &dy, None);
        }
        let report = net.profile_report();
        let names: Vec<&str> = report.iter().map(|l| l.layer.as_str()).collect();
        assert_eq!(names, ["linear(64->256)", "relu", "linear(256->10)"]);
        // the GEMM layers do measurable work in both passes
        for l in [&report[0], &report[2]] {
            assert!(l.forward_seconds > 0.0 && l.backward_seconds > 0.0, "{l:?}");
        }
        net.profile(false);
        assert!(net.profile_report().is_empty());
    }
}
