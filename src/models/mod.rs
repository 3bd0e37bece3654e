//! The networks the experiments compare. Every model is a [`Sequential`] of core layers, built
//! for an example shape (channels last): `[L, C]` sequences or `[H, W, C]` images.
//!
//! - `logistic`: one linear layer;
//! - `mlp`: fully connected, every unit sees the whole input;
//! - `cnn`: small local windows, shared weights, stacked to grow the receptive field;
//! - `dnn`: an MLP-Mixer — mixes channels at each position, then mixes across all positions;
//!   of comparable compute to the CNN, but every layer sees the whole input;
//! - `lcn`: the CNN's locally-connected twin (same windows, weights not shared);
//! - `transformer1`, `transformer2`: attention over every pair of positions (sequences);
//! - `bag`: the mean embedding, order-free (sequences).
//!
//! Token sequences (`[L, 1]` ids of a vocabulary, [`crate::data::Dataset::vocab`]) get the
//! models of [`text`], each starting from a learned token embedding.

pub mod cnn;
pub mod dnn;
pub mod footprint;
pub mod logistic;
pub mod mlp;
pub mod text;

use crate::core::init::InitRng;
use crate::core::layer::Sequential;
use crate::core::{Backend, Layer};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The model families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Logistic,
    Mlp,
    Cnn,
    Dnn,
    Lcn,
    Transformer1,
    Transformer2,
    Bag,
}

crate::named_enum!(ModelKind {
    Logistic => "logistic",
    Mlp => "mlp",
    Cnn => "cnn",
    Dnn => "dnn",
    Lcn => "lcn",
    Transformer1 => "transformer1",
    Transformer2 => "transformer2",
    Bag => "bag",
});

impl ModelKind {
    pub const ALL: [ModelKind; 8] = [
        ModelKind::Logistic,
        ModelKind::Mlp,
        ModelKind::Cnn,
        ModelKind::Dnn,
        ModelKind::Lcn,
        ModelKind::Transformer1,
        ModelKind::Transformer2,
        ModelKind::Bag,
    ];
    /// The models of the image experiments and MNIST-1D (every kind builds for images but the
    /// sequence-only ones).
    pub const CLASSIC: [ModelKind; 5] =
        [ModelKind::Logistic, ModelKind::Mlp, ModelKind::Cnn, ModelKind::Dnn, ModelKind::Lcn];
    /// The models of the text experiments (`reproduce --dataset recall|rotten-tomatoes`).
    pub const TEXT: [ModelKind; 6] = [
        ModelKind::Cnn,
        ModelKind::Transformer1,
        ModelKind::Transformer2,
        ModelKind::Dnn,
        ModelKind::Mlp,
        ModelKind::Bag,
    ];

    /// Built for sequences only (not for `[H, W, C]` images).
    pub fn sequences_only(&self) -> bool {
        matches!(self, ModelKind::Transformer1 | ModelKind::Transformer2 | ModelKind::Bag)
    }

    /// The name a user types (the list is in `named_enum!` above).
    pub fn name(&self) -> &'static str {
        crate::Named::name(self)
    }

    /// One line on what the model is and why it is in the comparison.
    pub fn summary(&self) -> &'static str {
        match self {
            ModelKind::Logistic => "linear classifier on the raw input",
            ModelKind::Mlp => "fully connected; every unit sees the whole input",
            ModelKind::Cnn => "local windows with shared weights; receptive field grows with depth",
            ModelKind::Dnn => "MLP-Mixer: per-position channel MLP, then MLP across all positions",
            ModelKind::Lcn => "the CNN's windows without weight sharing (locality alone)",
            ModelKind::Transformer1 => "one attention layer: scores every pair of positions, learned positions",
            ModelKind::Transformer2 => "two attention layers: can find a token, then read its neighbour",
            ModelKind::Bag => "mean embedding, then an MLP: which tokens occur, not where",
        }
    }
}

/// A built network and what it was built for.
pub struct Model<B: Backend> {
    pub kind: ModelKind,
    pub net: Sequential<B>,
    pub example_shape: Vec<usize>,
    pub classes: usize,
}

/// Architecture choices for image models (`[H, W, C]` inputs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageArch {
    /// Widths of the 3×3 convolutions (padding 1) of the CNN and its locally-connected twin.
    pub cnn_widths: Vec<usize>,
    /// Convolutions (0-based) followed by 2×2 max-pooling.
    pub pool_after: Vec<usize>,
    /// BatchNorm after each convolution.
    pub batch_norm: bool,
    /// Average the last feature map over positions (true) or flatten it (false) before the
    /// classifier.
    pub global_pool: bool,
    /// Hidden widths of the MLP.
    pub mlp_hidden: Vec<usize>,
    /// Hidden widths of the MLP for sequences (MNIST-1D: the notebook's 100-100; the lottery
    /// ticket study uses 500-500).
    #[serde(default = "ImageArch::sequence_mlp_default")]
    pub sequence_mlp_hidden: Vec<usize>,
    /// Mixer patch size (1: every pixel is a token, the video's network).
    pub mixer_patch: usize,
    pub mixer: dnn::MixerSize,
}

impl ImageArch {
    fn sequence_mlp_default() -> Vec<usize> {
        vec![100, 100]
    }

    /// Small networks for quick runs on 28×28 or 32×32 images.
    pub fn small() -> Self {
        Self {
            cnn_widths: vec![16, 32, 64],
            pool_after: vec![1, 2],
            batch_norm: true,
            global_pool: false,
            mlp_hidden: vec![256, 256],
            sequence_mlp_hidden: Self::sequence_mlp_default(),
            mixer_patch: 1,
            mixer: dnn::MixerSize { dim: 16, depth: 2, token_hidden: 64, channel_hidden: 32 },
        }
    }

    /// The networks of the full runs (CIFAR-10 CNN past 85% with the full preset's recipe).
    pub fn standard() -> Self {
        Self {
            cnn_widths: vec![64, 128, 256, 256],
            pool_after: vec![1, 2],
            batch_norm: true,
            global_pool: true,
            mlp_hidden: vec![1024, 512],
            sequence_mlp_hidden: Self::sequence_mlp_default(),
            mixer_patch: 1,
            mixer: dnn::MixerSize { dim: 64, depth: 3, token_hidden: 256, channel_hidden: 256 },
        }
    }
}

/// Changes to an [`ImageArch`], as a user gives them (unset: the recipe's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchOverrides {
    /// Widths of the CNN's (and LCN's) 3×3 convolutions.
    pub widths: Option<Vec<usize>>,
    /// Convolutions (0-based) followed by 2×2 max-pooling.
    pub pool_after: Option<Vec<usize>>,
    pub batch_norm: Option<bool>,
    pub global_pool: Option<bool>,
    /// Hidden widths of the MLP (images and sequences).
    pub mlp_hidden: Option<Vec<usize>>,
    pub patch: Option<usize>,
    pub mixer_dim: Option<usize>,
    pub mixer_depth: Option<usize>,
}

impl ArchOverrides {
    /// The set fields that only image models read (sequence models have fixed architectures
    /// apart from the MLP's widths).
    pub fn image_only_given(&self) -> Vec<&'static str> {
        [
            ("widths", self.widths.is_some()),
            ("pool_after", self.pool_after.is_some()),
            ("batch_norm", self.batch_norm.is_some()),
            ("global_pool", self.global_pool.is_some()),
            ("patch", self.patch.is_some()),
            ("mixer_dim", self.mixer_dim.is_some()),
            ("mixer_depth", self.mixer_depth.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

impl ImageArch {
    /// Applies every set override.
    pub fn apply(&mut self, o: &ArchOverrides) {
        if let Some(w) = &o.widths {
            self.cnn_widths = w.clone();
        }
        if let Some(p) = &o.pool_after {
            self.pool_after = p.clone();
        }
        if let Some(h) = &o.mlp_hidden {
            self.mlp_hidden = h.clone();
            self.sequence_mlp_hidden = h.clone();
        }
        if let Some(b) = o.batch_norm {
            self.batch_norm = b;
        }
        if let Some(g) = o.global_pool {
            self.global_pool = g;
        }
        if let Some(p) = o.patch {
            self.mixer_patch = p;
        }
        if let Some(d) = o.mixer_dim {
            self.mixer.dim = d;
        }
        if let Some(d) = o.mixer_depth {
            self.mixer.depth = d;
        }
    }
}

impl<B: Backend> Model<B> {
    /// Builds `kind` for examples of `example_shape`, initialised from `rng` (image models use
    /// [`ImageArch::small`]).
    pub fn build(kind: ModelKind, example_shape: &[usize], classes: usize, rng: &mut InitRng) -> Result<Self> {
        Self::build_with(kind, example_shape, classes, &ImageArch::small(), rng)
    }

    /// Builds `kind` with the given image architecture.
    pub fn build_with(
        kind: ModelKind,
        example_shape: &[usize],
        classes: usize,
        arch: &ImageArch,
        rng: &mut InitRng,
    ) -> Result<Self> {
        arch.validate()?;
        if example_shape.contains(&0) || classes < 2 {
            return Err(Error::Config(format!(
                "no model for examples of shape {example_shape:?} in {classes} classes (need a positive shape and 2 classes or more)"
            )));
        }
        // refuse (with the estimate) what would not fit, before allocating any of it
        let fp = footprint::footprint(kind, example_shape, classes, arch);
        footprint::check_fits(&format!("the {} model", kind.name()), 4.0 * 4.0 * fp.params)?;
        let layers: Vec<Box<dyn Layer<B>>> = match example_shape {
            [h, w, c] => match kind {
                ModelKind::Logistic => logistic::build(h * w * c, classes, rng),
                ModelKind::Mlp => mlp::build(h * w * c, &arch.mlp_hidden, false, classes, rng),
                ModelKind::Cnn => cnn::build_2d(*h, *w, *c, classes, arch, false, rng)?,
                ModelKind::Lcn => cnn::build_2d(*h, *w, *c, classes, arch, true, rng)?,
                ModelKind::Dnn => dnn::build_2d(*h, *w, *c, classes, arch, rng)?,
                ModelKind::Transformer1 | ModelKind::Transformer2 | ModelKind::Bag => {
                    return Err(Error::Config(format!(
                        "{} is built for sequences (recall, rotten-tomatoes, mnist1d), not images of shape {example_shape:?}",
                        kind.name()
                    )))
                }
            },
            [len, channels] => match kind {
                ModelKind::Logistic => logistic::build(len * channels, classes, rng),
                ModelKind::Mlp => mlp::build(len * channels, &arch.sequence_mlp_hidden, true, classes, rng),
                ModelKind::Cnn => cnn::build_1d(*len, *channels, classes, false, rng)?,
                ModelKind::Dnn => dnn::build_1d(*len, *channels, classes, rng),
                ModelKind::Lcn => cnn::build_1d(*len, *channels, classes, true, rng)?,
                ModelKind::Transformer1 => text::transformer(*len, *channels, None, classes, text::TRANSFORMER_1, rng),
                ModelKind::Transformer2 => text::transformer(*len, *channels, None, classes, text::TRANSFORMER_2, rng),
                ModelKind::Bag => text::bag(*channels, None, classes, rng),
            },
            _ => {
                return Err(Error::Config(format!(
                    "no {} architecture for examples of shape {example_shape:?}",
                    kind.name()
                )))
            }
        };
        Self::assemble(kind, layers, example_shape, classes)
    }

    /// Builds `kind` for `data`: the token models of [`text`] where it holds token ids,
    /// [`Model::build_with`] otherwise.
    pub fn build_for(
        kind: ModelKind,
        data: &crate::data::Dataset,
        arch: &ImageArch,
        rng: &mut InitRng,
    ) -> Result<Self> {
        match (data.vocab, data.example_shape.as_slice()) {
            (Some(vocab), [len, 1]) => Self::build_tokens(kind, *len, vocab, data.classes, rng),
            (Some(_), shape) => Err(Error::Shape(format!("token ids come as [L, 1] examples, not {shape:?}"))),
            (None, shape) => Self::build_with(kind, shape, data.classes, arch, rng),
        }
    }

    /// Builds `kind` for sequences of `len` token ids in `0..vocab` (examples `[len, 1]`).
    pub fn build_tokens(kind: ModelKind, len: usize, vocab: usize, classes: usize, rng: &mut InitRng) -> Result<Self> {
        let shape = [len, 1];
        if len == 0 || vocab == 0 || classes < 2 {
            return Err(Error::Config(format!(
                "no model for {len} tokens of a vocabulary of {vocab} in {classes} classes (need positive sizes and 2 classes or more)"
            )));
        }
        let fp = footprint::footprint_input(kind, &shape, Some(vocab), classes, &ImageArch::small());
        footprint::check_fits(&format!("the {} model", kind.name()), 4.0 * 4.0 * fp.params)?;
        let layers: Vec<Box<dyn Layer<B>>> = match kind {
            ModelKind::Logistic => text::mlp(len, vocab, &[], classes, rng),
            ModelKind::Mlp => text::mlp(len, vocab, &text::TEXT_MLP_HIDDEN, classes, rng),
            ModelKind::Cnn => text::cnn(len, vocab, classes, false, rng)?,
            ModelKind::Lcn => text::cnn(len, vocab, classes, true, rng)?,
            ModelKind::Dnn => text::mixer(len, vocab, classes, rng),
            ModelKind::Transformer1 => text::transformer(len, 1, Some(vocab), classes, text::TRANSFORMER_1, rng),
            ModelKind::Transformer2 => text::transformer(len, 1, Some(vocab), classes, text::TRANSFORMER_2, rng),
            ModelKind::Bag => text::bag(1, Some(vocab), classes, rng),
        };
        Self::assemble(kind, layers, &shape, classes)
    }

    /// The model of `layers`, checked to map one example to `classes` logits.
    fn assemble(
        kind: ModelKind,
        layers: Vec<Box<dyn Layer<B>>>,
        example_shape: &[usize],
        classes: usize,
    ) -> Result<Self> {
        let model = Model { kind, net: Sequential::new(layers), example_shape: example_shape.to_vec(), classes };
        let out = model.net.output_shape(&model.batch_shape(1))?;
        if out != [1, classes] {
            return Err(Error::Shape(format!("{} produces {out:?}, expected [1, {classes}]", kind.name())));
        }
        Ok(model)
    }

    /// `[batch, example_shape..]`.
    pub fn batch_shape(&self, batch: usize) -> Vec<usize> {
        let mut s = vec![batch];
        s.extend_from_slice(&self.example_shape);
        s
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        self.net.visit_params_ref(&mut |p| n += p.value.len());
        n
    }

    /// Forward FLOPs for one example (2 per multiply-add).
    pub fn flops_per_example(&self) -> u64 {
        2 * self.net.macs(&self.batch_shape(1))
    }
}
