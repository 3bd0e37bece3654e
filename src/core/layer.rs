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
    /// Containers: starts (or, with `false`, stops) timing the layers inside, for the nested
    /// rows of a profile (see [`Sequential::profile`]). Leaves have nothing inside.
    fn profile_inside(&mut self, _on: bool) {}
    /// Containers: the rows of the layers inside, timed since [`Layer::profile_inside`].
    fn inside_profile(&self) -> Vec<LayerTime> {
        Vec::new()
    }
}

/// Layers applied one after another; keeps every intermediate activation and gradient.
pub struct Sequential<B: Backend> {
    layers: Vec<Box<dyn Layer<B>>>,
    acts: Vec<Tensor<B>>,
    grads: Vec<Tensor<B>>,
    /// Per layer, when profiling (see [`Sequential::profile`]): its time and work so far.
    times: Option<Vec<LayerTime>>,
}

/// One layer's row in [`Sequential::profile_report`]: its time in each pass since profiling
/// started, and the work those passes did by count: floating-point operations (two a
/// multiply-add; the backward pass's as the forward's once for the weights' gradient and once
/// more where the input's is asked for) and the bytes no implementation can avoid moving
/// (forward: the input, the output and the parameters; backward: the input, the output's
/// gradient, the parameters and their gradient, and the input's gradient where asked for).
/// Over the time they give the rate a layer ran at, to set against the device's peaks. A
/// container's bytes are its own input and output only: its rows inside show where its
/// intermediates went.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerTime {
    pub layer: String,
    /// 0 for a model's own layers, 1 for the layers inside one of them, and so on.
    pub depth: usize,
    pub forward_seconds: f64,
    pub backward_seconds: f64,
    pub forward_flops: f64,
    pub backward_flops: f64,
    pub forward_bytes: f64,
    pub backward_bytes: f64,
}

impl LayerTime {
    /// Divides the times and the work by `steps` (per-step figures; the rates stay).
    pub fn per(&mut self, steps: usize) {
        let n = steps.max(1) as f64;
        for v in [
            &mut self.forward_seconds,
            &mut self.backward_seconds,
            &mut self.forward_flops,
            &mut self.backward_flops,
            &mut self.forward_bytes,
            &mut self.backward_bytes,
        ] {
            *v /= n;
        }
    }

    /// Operations a second over both passes (None where the layer did none).
    pub fn flops_per_second(&self) -> Option<f64> {
        let (work, secs) = (self.forward_flops + self.backward_flops, self.forward_seconds + self.backward_seconds);
        (work > 0.0 && secs > 0.0).then(|| work / secs)
    }

    /// The bytes it could not avoid moving a second, over both passes.
    pub fn bytes_per_second(&self) -> Option<f64> {
        let (work, secs) = (self.forward_bytes + self.backward_bytes, self.forward_seconds + self.backward_seconds);
        (work > 0.0 && secs > 0.0).then(|| work / secs)
    }
}

/// Which pass [`Sequential`]'s profile adds a timing to.
#[derive(Clone, Copy)]
enum Pass {
    Forward,
    Backward,
}

/// The parameters' values in a layer.
fn param_count<B: Backend>(l: &dyn Layer<B>) -> usize {
    let mut n = 0;
    l.visit_params_ref(&mut |p| n += p.value.len());
    n
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
    /// The layers inside containers (residual blocks) are timed too, as nested rows.
    ///
    /// [`BackendBase::synchronize`]: crate::core::BackendBase::synchronize
    pub fn profile(&mut self, on: bool) {
        self.times =
            on.then(|| self.layers.iter().map(|l| LayerTime { layer: l.describe(), ..Default::default() }).collect());
        for l in &mut self.layers {
            l.profile_inside(on);
        }
    }

    /// Each layer's row since profiling started, in layer order, a container's followed by the
    /// rows of the layers inside it (one deeper).
    pub fn profile_report(&self) -> Vec<LayerTime> {
        let Some(times) = &self.times else { return Vec::new() };
        let mut rows = Vec::new();
        for (l, t) in self.layers.iter().zip(times) {
            rows.push(t.clone());
            rows.extend(l.inside_profile().into_iter().map(|r| LayerTime { depth: r.depth + 1, ..r }));
        }
        rows
    }

    /// Runs `f`, adding its duration to layer `i`'s `pass` when profiling, with the pass's
    /// `work` (operations and unavoidable bytes: see [`LayerTime`]; counted only then).
    fn timed<R>(
        times: &mut Option<Vec<LayerTime>>,
        i: usize,
        pass: Pass,
        work: Option<(f64, f64)>,
        f: impl FnOnce() -> R,
    ) -> R {
        let (Some(times), Some((flops, bytes))) = (times, work) else { return f() };
        B::synchronize();
        let start = std::time::Instant::now();
        let out = f();
        B::synchronize();
        let secs = start.elapsed().as_secs_f64();
        let t = &mut times[i];
        let (s, fl, by) = match pass {
            Pass::Forward => (&mut t.forward_seconds, &mut t.forward_flops, &mut t.forward_bytes),
            Pass::Backward => (&mut t.backward_seconds, &mut t.backward_flops, &mut t.backward_bytes),
        };
        (*s, *fl, *by) = (*s + secs, *fl + flops, *by + bytes);
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
            let work = self.times.is_some().then(|| {
                let l = layer.as_ref();
                let out: usize = l.output_shape(input.shape()).map(|s| s.iter().product()).unwrap_or(0);
                let flops = 2.0 * l.macs(input.shape()) as f64;
                (flops, 4.0 * (input.len() + out + param_count(l)) as f64)
            });
            Self::timed(&mut self.times, i, Pass::Forward, work, || layer.forward(input, output, mode));
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
            let work = self.times.is_some().then(|| {
                let (l, asked) = (layer.as_ref(), grad_in.is_some() as usize);
                let params = param_count(l);
                // the weights' gradient, and the input's where asked for, each a forward's work
                let flops = 2.0 * l.macs(input.shape()) as f64 * ((params > 0) as usize + asked) as f64;
                (flops, 4.0 * (input.len() * (1 + asked) + output.len() + 2 * params) as f64)
            });
            Self::timed(&mut self.times, i, Pass::Backward, work, || layer.backward(input, output, grad_out, grad_in));
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

    fn profile_inside(&mut self, on: bool) {
        self.profile(on);
    }

    fn inside_profile(&self) -> Vec<LayerTime> {
        self.profile_report()
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
    fn profile_times_every_layer_of_both_passes_and_counts_their_work() {
        use crate::core::ops::{Gelu, Residual};
        let mut rng = crate::core::init::InitRng::seed_from_u64(0);
        let mut net = Sequential::<Cpu>::new(vec![
            Box::new(Linear::new(64, 256, &mut rng)),
            Box::new(Relu),
            Box::new(Residual::new(vec![Box::new(Linear::new(256, 256, &mut rng)), Box::new(Gelu::default())])),
            Box::new(Linear::new(256, 10, &mut rng)),
        ]);
        assert!(net.profile_report().is_empty(), "no report unless profiling");
        let x = Tensor::<Cpu>::from_slice(&[32, 64], &vec![0.5; 32 * 64]);
        let (mut y, dy) = (Tensor::empty(), Tensor::<Cpu>::from_slice(&[32, 10], &vec![1.0; 320]));
        net.profile(true);
        let steps = 3;
        for _ in 0..steps {
            net.forward(&x, &mut y, Mode::Train);
            net.backward(&x, &y, &dy, None);
        }
        let mut report = net.profile_report();
        let rows: Vec<(&str, usize)> = report.iter().map(|l| (l.layer.as_str(), l.depth)).collect();
        assert_eq!(
            rows,
            [
                ("linear(64->256)", 0),
                ("relu", 0),
                ("residual(linear(256->256) -> gelu)", 0),
                ("linear(256->256)", 1),
                ("gelu", 1),
                ("linear(256->10)", 0)
            ]
        );
        // the GEMM layers do measurable work in both passes
        for l in [&report[0], &report[3], &report[5]] {
            assert!(l.forward_seconds > 0.0 && l.backward_seconds > 0.0, "{l:?}");
        }
        // a block's time holds the time of the layers inside it
        let inside: f64 = report[3..5].iter().map(|l| l.forward_seconds).sum();
        assert!(report[2].forward_seconds >= inside, "{report:?}");
        for l in &mut report {
            l.per(steps);
        }
        // the work by count: the first layer's input gradient is not asked for (its weights'
        // gradient is one forward's work); inside the block it is (two)
        let (first, inner, relu) = (&report[0], &report[3], &report[1]);
        let params = (64 * 256 + 256) as f64;
        assert_eq!(first.forward_flops, 2.0 * (32 * 64 * 256) as f64);
        assert_eq!(first.backward_flops, first.forward_flops);
        assert_eq!(first.forward_bytes, 4.0 * ((32 * 64 + 32 * 256) as f64 + params));
        assert_eq!(first.backward_bytes, 4.0 * ((32 * 64 + 32 * 256) as f64 + 2.0 * params));
        assert_eq!(inner.backward_flops, 2.0 * inner.forward_flops);
        assert_eq!(
            inner.backward_bytes,
            4.0 * (2.0 * (32 * 256) as f64 + (32 * 256) as f64 + 2.0 * (256 * 257) as f64)
        );
        assert_eq!((relu.forward_flops, relu.flops_per_second()), (0.0, None), "no arithmetic to count");
        assert_eq!(relu.forward_bytes, 4.0 * (2 * 32 * 256) as f64);
        let rate = first.flops_per_second();
        let want = (first.forward_flops + first.backward_flops) / (first.forward_seconds + first.backward_seconds);
        assert!(rate.is_some_and(|r| (r - want).abs() <= 1e-9 * want), "{rate:?} {want}");
        net.profile(false);
        assert!(net.profile_report().is_empty());
        assert!(net.layers()[2].inside_profile().is_empty(), "the block stopped timing too");
    }
}
