//! What a model will occupy, estimated from its description before anything is allocated, so
//! that a run too large for the machine is refused with the estimate instead of aborting in
//! the allocator. Counts are upper-bound estimates (parameters exactly for the dense and
//! convolution weights that dominate; activations summed over every layer's output).

use crate::error::{Error, Result};
pub use crate::limits::check_fits;
use crate::models::{cnn, dnn, text, ImageArch, ModelKind};

/// Values (f32) a model holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Footprint {
    /// Trainable values.
    pub params: f64,
    /// Layer outputs for one example (forward pass).
    pub activations: f64,
}

impl Footprint {
    /// Bytes of a training run at `batch`: each parameter with its gradient and two optimizer
    /// moments; each activation with its gradient and a scratch copy.
    pub fn training_bytes(&self, batch: usize) -> f64 {
        4.0 * (4.0 * self.params + 3.0 * batch as f64 * self.activations)
    }

    /// Bytes of a training run at `batch` that evaluates `eval` examples at a time:
    /// [`Footprint::training_bytes`], and where evaluation takes more rows than a training
    /// batch, the layer outputs of the rows beyond it (evaluation runs the same layers, whose
    /// outputs grow to its rows, and keeps no gradients). Against the peak of the CUDA
    /// emulator's allocations (the same as a GPU's but for cuBLAS's and cuDNN's workspaces),
    /// the full preset's networks on 32x32 images at batches of 32 to 128 and evaluation chunks
    /// of 32 to 1000, 2026-11-29: from 5% (the Mixer at 1000) to 2.2 times (the LCN at 32, its
    /// weights' moments counted twice for SGD's one) above it. Counting evaluation's rows as
    /// training ones, as before, asked up to 2.6 times the peak (21.2 GiB for a CNN run that
    /// peaked at 8.0), which refused runs that fit on a 16 or 24 GB GPU.
    pub fn run_bytes(&self, batch: usize, eval: usize) -> f64 {
        self.training_bytes(batch) + 4.0 * eval.saturating_sub(batch) as f64 * self.activations
    }
}

/// Largest width of any layer a user may ask for (wider layers are refused before building).
pub const MAX_WIDTH: usize = 1 << 16;

impl ImageArch {
    /// Refuses zero or absurd widths and pooling after a convolution that does not exist.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: usize| Error::Config(format!("{what} must be between 1 and {MAX_WIDTH}, got {v}"));
        for &w in &self.cnn_widths {
            if w == 0 || w > MAX_WIDTH {
                return Err(bad("every convolution width", w));
            }
        }
        for &h in self.mlp_hidden.iter().chain(&self.sequence_mlp_hidden) {
            if h == 0 || h > MAX_WIDTH {
                return Err(bad("every MLP hidden width", h));
            }
        }
        for (what, v) in [
            ("the Mixer's patch", self.mixer_patch),
            ("the Mixer's channels", self.mixer.dim),
            ("the Mixer's depth", self.mixer.depth),
            ("the Mixer's token hidden width", self.mixer.token_hidden),
            ("the Mixer's channel hidden width", self.mixer.channel_hidden),
        ] {
            if v == 0 || v > MAX_WIDTH {
                return Err(bad(what, v));
            }
        }
        if let Some(&i) = self.pool_after.iter().find(|&&i| i >= self.cnn_widths.len()) {
            return Err(Error::Config(format!(
                "pooling after convolution {i}, but there are {} convolutions (0-based)",
                self.cnn_widths.len()
            )));
        }
        Ok(())
    }
}

fn dense(dims: &[f64]) -> (f64, f64) {
    let params = dims.windows(2).map(|d| (d[0] + 1.0) * d[1]).sum();
    let acts = dims[1..].iter().sum::<f64>() * 2.0;
    (params, acts)
}

/// The footprint of `kind` for examples of `example_shape` (channels last) and `classes`.
pub fn footprint(kind: ModelKind, example_shape: &[usize], classes: usize, arch: &ImageArch) -> Footprint {
    footprint_input(kind, example_shape, None, classes, arch)
}

/// [`footprint`] for inputs that may be token ids of a `vocab`ulary (`[L, 1]` examples).
pub fn footprint_input(
    kind: ModelKind,
    example_shape: &[usize],
    vocab: Option<usize>,
    classes: usize,
    arch: &ImageArch,
) -> Footprint {
    match (vocab, example_shape) {
        (Some(v), &[len, 1]) => return tokens(kind, len as f64, v as f64, classes as f64),
        (None, &[len, c]) if kind.sequences_only() => {
            let (params, activations) = sequence_model(kind, len as f64, c as f64, 1.0, classes as f64);
            return Footprint { params, activations };
        }
        _ => {}
    }
    let classes = classes as f64;
    let (params, activations) = match *example_shape {
        [h, w, c] => {
            let (h, w, c) = (h as f64, w as f64, c as f64);
            match kind {
                ModelKind::Logistic => dense(&[h * w * c, classes]),
                ModelKind::Mlp => {
                    let dims: Vec<f64> = std::iter::once(h * w * c)
                        .chain(arch.mlp_hidden.iter().map(|&d| d as f64))
                        .chain(std::iter::once(classes))
                        .collect();
                    dense(&dims)
                }
                ModelKind::Cnn | ModelKind::Lcn => {
                    let (mut params, mut acts, mut cin, mut hw) = (0.0, 0.0, c, (h, w));
                    for (i, &width) in arch.cnn_widths.iter().enumerate() {
                        let width = width as f64;
                        let weights = 9.0 * cin * width;
                        params += if kind == ModelKind::Lcn { weights * hw.0 * hw.1 } else { weights } + 3.0 * width;
                        // convolution, normalisation and activation outputs (and the im2col rows)
                        acts += hw.0 * hw.1 * width * 3.0 + hw.0 * hw.1 * 9.0 * cin;
                        if arch.pool_after.contains(&i) {
                            hw = ((hw.0 / 2.0).floor(), (hw.1 / 2.0).floor());
                            acts += hw.0 * hw.1 * width;
                        }
                        cin = width;
                    }
                    let head = if arch.global_pool { cin } else { cin * hw.0 * hw.1 };
                    (params + (head + 1.0) * classes, acts + head + classes)
                }
                ModelKind::Dnn => {
                    let p = arch.mixer_patch as f64;
                    let m = arch.mixer;
                    let tokens = (h / p).floor() * (w / p).floor();
                    let (dim, th, ch) = (m.dim as f64, m.token_hidden as f64, m.channel_hidden as f64);
                    let block = 2.0 * tokens * th + 2.0 * dim * ch;
                    let params = p * p * c * dim + m.depth as f64 * block + (dim + 1.0) * classes;
                    // per block (see `mixer_block_outputs`), the patches, their embedding and
                    // the final LayerNorm
                    let acts = m.depth as f64 * mixer_block_outputs(tokens, dim, th, ch);
                    (params, acts + tokens * p * p * c + 2.0 * tokens * dim)
                }
                // never built for images
                ModelKind::Transformer1 | ModelKind::Transformer2 | ModelKind::Bag => (0.0, 0.0),
            }
        }
        [len, c] => {
            let (len, c) = (len as f64, c as f64);
            match kind {
                ModelKind::Logistic => dense(&[len * c, classes]),
                ModelKind::Mlp => {
                    let dims: Vec<f64> = std::iter::once(len * c)
                        .chain(arch.sequence_mlp_hidden.iter().map(|&d| d as f64))
                        .chain(std::iter::once(classes))
                        .collect();
                    dense(&dims)
                }
                ModelKind::Cnn | ModelKind::Lcn => {
                    conv_stack_1d(&cnn::CNN_1D_LAYERS, cnn::CNN_1D_CHANNELS, (len, c), kind == ModelKind::Lcn, classes)
                }
                ModelKind::Dnn => {
                    let m = dnn::MIXER_1D;
                    let (dim, th, ch) = (m.dim as f64, m.token_hidden as f64, m.channel_hidden as f64);
                    let params = c * dim + m.depth as f64 * (2.0 * len * th + 2.0 * dim * ch) + (dim + 1.0) * classes;
                    (params, m.depth as f64 * mixer_block_outputs(len, dim, th, ch) + 2.0 * len * dim)
                }
                ModelKind::Transformer1 | ModelKind::Transformer2 | ModelKind::Bag => (0.0, 0.0),
            }
        }
        _ => (0.0, 0.0),
    };
    Footprint { params, activations }
}

/// The values a Mixer block's layers hold for one example of `tokens` positions of `dim`
/// channels: eight of the block's width (each half's LayerNorm output, the token half's two
/// transposes, each half's output projection, and each residual's inner output and sum) and
/// each MLP's hidden layer three times (`token_hidden` per channel, `channel_hidden` per
/// position: the projection, GELU's output and the derivative GELU keeps for the backward
/// pass). Evaluation's rows took 1.01 times the full preset Mixer's count each at the CUDA
/// emulator's peak (2026-11-29); the count of six widths and two hidden layers before took 1.5.
fn mixer_block_outputs(tokens: f64, dim: f64, token_hidden: f64, channel_hidden: f64) -> f64 {
    8.0 * tokens * dim + 3.0 * dim * token_hidden + 3.0 * tokens * channel_hidden
}

/// A 1-D stack of convolutions (or, `local`, locally-connected layers) of `width` channels
/// over `(len, channels)` inputs, then flatten and a linear classifier: (params, activations).
fn conv_stack_1d(
    layers: &[(usize, usize, usize)],
    width: usize,
    (len, channels): (f64, f64),
    local: bool,
    classes: f64,
) -> (f64, f64) {
    let width = width as f64;
    let (mut params, mut acts, mut cin, mut l) = (0.0, 0.0, channels, len);
    for &(k, st, pad) in layers {
        let out = ((l + 2.0 * pad as f64 - k as f64) / st as f64).floor().max(0.0) + 1.0;
        let untied = if local { out } else { 1.0 };
        params += (k as f64 * cin * width + width) * untied;
        acts += 2.0 * out * width + out * k as f64 * cin;
        (cin, l) = (width, out);
    }
    (params + (l * width + 1.0) * classes, acts)
}

/// The transformers and the bag: (params, activations) with an input layer of `inputs`
/// values per position (`per_input` weights each: 1 for a token table, `dim` for a linear map).
fn sequence_model(kind: ModelKind, len: f64, inputs: f64, per_input: f64, classes: f64) -> (f64, f64) {
    let size = match kind {
        ModelKind::Transformer1 => text::TRANSFORMER_1,
        ModelKind::Transformer2 => text::TRANSFORMER_2,
        _ => {
            let (e, h) = (text::EMBED as f64, text::BAG_HIDDEN as f64);
            let params = inputs * e * per_input.min(1.0) + e + e * h + h + h * h + h + (h + 1.0) * classes;
            return (params, len * e + 4.0 * h + classes);
        }
    };
    let (d, h, heads) = (size.dim as f64, size.hidden as f64, size.heads as f64);
    let block = 4.0 * d * d + 4.0 * d + 2.0 * d * h + h + d + 4.0 * d;
    let params = inputs * d + d + len * d + size.layers as f64 * block + 2.0 * d + (d + 1.0) * classes;
    // per block: LN, q|k|v, attention output, projection, two sums, LN, MLP; scores kept 3x
    let block_acts = len * (12.0 * d + 2.0 * h) + 3.0 * heads * len * len;
    (params, 2.0 * len * d + size.layers as f64 * block_acts + d + classes)
}

/// Models over `len` token ids of `vocab`: the embedding table and the body of [`text`].
fn tokens(kind: ModelKind, len: f64, vocab: f64, classes: f64) -> Footprint {
    let e = text::EMBED as f64;
    let table = vocab * e;
    let (params, activations) = match kind {
        ModelKind::Transformer1 | ModelKind::Transformer2 | ModelKind::Bag => {
            let (p, a) = sequence_model(kind, len, vocab, 1.0, classes);
            // the input layer is a table of `vocab` rows, not a linear map with biases
            (p - if kind == ModelKind::Bag { 0.0 } else { e }, a)
        }
        ModelKind::Logistic => (table + (len * e + 1.0) * classes, len * e + classes),
        ModelKind::Mlp => {
            let dims: Vec<f64> = std::iter::once(len * e)
                .chain(text::TEXT_MLP_HIDDEN.iter().map(|&d| d as f64))
                .chain([classes])
                .collect();
            let (p, a) = dense(&dims);
            (table + p, a + len * e)
        }
        ModelKind::Cnn | ModelKind::Lcn => {
            let (p, a) =
                conv_stack_1d(&text::TEXT_CNN_LAYERS, text::TEXT_CNN_WIDTH, (len, e), kind == ModelKind::Lcn, classes);
            (table + p, a + len * e)
        }
        ModelKind::Dnn => {
            let m = text::TEXT_MIXER;
            let (dim, th, ch) = (m.dim as f64, m.token_hidden as f64, m.channel_hidden as f64);
            let params = table + m.depth as f64 * (2.0 * len * th + 2.0 * dim * ch) + (dim + 1.0) * classes;
            (params, len * e + m.depth as f64 * mixer_block_outputs(len, dim, th, ch) + 2.0 * len * dim)
        }
    };
    Footprint { params, activations }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::init::InitRng;
    use crate::core::Cpu;
    use crate::models::Model;
    use rand::SeedableRng;

    /// The estimate follows the real parameter counts of every model (within 25%).
    #[test]
    fn estimates_track_the_built_models() {
        for (shape, arch) in [(vec![40, 1], ImageArch::small()), (vec![28, 28, 1], ImageArch::small())] {
            for kind in ModelKind::ALL {
                if shape.len() == 3 && kind.sequences_only() {
                    continue;
                }
                let model = Model::<Cpu>::build_with(kind, &shape, 10, &arch, &mut InitRng::seed_from_u64(0)).unwrap();
                let real = model.param_count() as f64;
                let est = footprint(kind, &shape, 10, &arch).params;
                assert!((est - real).abs() <= 0.25 * real, "{kind:?} {shape:?}: estimate {est}, real {real}");
            }
        }
        // token models: the recall task's shape, and a large vocabulary
        for (len, vocab) in [(64, 33), (56, 20_000)] {
            for kind in ModelKind::ALL {
                let model = Model::<Cpu>::build_tokens(kind, len, vocab, 16, &mut InitRng::seed_from_u64(0)).unwrap();
                let real = model.param_count() as f64;
                let est = footprint_input(kind, &[len, 1], Some(vocab), 16, &ImageArch::small()).params;
                assert!(
                    (est - real).abs() <= 0.25 * real,
                    "{kind:?} tokens {len}/{vocab}: estimate {est}, real {real}"
                );
            }
        }
    }

    #[test]
    fn absurd_architectures_are_refused_before_building() {
        let mut arch = ImageArch::small();
        arch.cnn_widths = vec![16, 0];
        assert!(arch.validate().unwrap_err().to_string().contains("width"));
        arch.cnn_widths = vec![16];
        arch.pool_after = vec![3];
        assert!(arch.validate().unwrap_err().to_string().contains("pooling after convolution 3"));
        let mut arch = ImageArch::small();
        arch.mlp_hidden = vec![5, 0];
        assert!(arch.validate().is_err());
        // a million-wide MLP on CIFAR would need terabytes: refused with the estimate
        arch.mlp_hidden = vec![60_000, 60_000];
        let need = footprint(ModelKind::Mlp, &[32, 32, 3], 10, &arch).training_bytes(128);
        assert!(need > 1e10);
        assert!(check_fits("this", 1e30).unwrap_err().to_string().contains("GiB"));
    }
}
