//! Models for token sequences (`[L, 1]` ids, `vocab` tokens) and the two sequence models that
//! need no tokens (transformer, bag of embeddings, also on `[L, C]` float sequences).
//!
//! Every token model starts with the same learned embedding of [`EMBED`] values per token
//! (the table is `vocab × EMBED` for all of them), then differs in how positions meet:
//!
//! - `cnn`: three 3-wide convolutions of stride 2 (receptive field 15 positions), flatten,
//!   linear: sees pairs only within its window;
//! - `transformer1`, `transformer2`: learned absolute positions, pre-LN blocks of 2-head
//!   attention, attention pooling, linear: scores every pair of positions;
//! - `dnn`: the MLP-Mixer (an MLP across all positions, per channel);
//! - `mlp`: flatten, fully connected; `logistic`: flatten, linear;
//! - `bag`: the mean embedding (order-free), then an MLP: the control that knows which tokens
//!   occur and nothing of where.
//!
//! Bodies are sized for about 30k parameters each at 64 positions and 16 classes (`cnnlab
//! models --dataset recall` prints them for the task's 32 positions). `transformer1` has the width of
//! `transformer2` and a wider MLP, so one layer against two is not a contest of sizes.

use crate::core::init::InitRng;
use crate::core::ops::{
    transformer_block, AttentionPool, Embedding, GlobalAvgPool, LayerNorm, Linear, PositionEmbedding, Relu,
};
use crate::core::{Backend, Layer};
use crate::error::Result;
use crate::models::dnn::{mixer_body, MixerSize};

/// Values per token embedding.
pub const EMBED: usize = 32;
/// (kernel, stride, padding) of the token CNN's convolutions.
pub const TEXT_CNN_LAYERS: [(usize, usize, usize); 3] = [(3, 2, 1), (3, 2, 1), (3, 2, 1)];
pub const TEXT_CNN_WIDTH: usize = 56;
/// The token Mixer.
pub const TEXT_MIXER: MixerSize = MixerSize { dim: EMBED, depth: 2, token_hidden: 64, channel_hidden: 96 };
/// Hidden widths of the token MLP (flattened embeddings: 64 × 32 inputs make a wide first layer).
pub const TEXT_MLP_HIDDEN: [usize; 2] = [14, 14];
/// Hidden width of the bag-of-embeddings MLP (two layers).
pub const BAG_HIDDEN: usize = 150;

/// A transformer's sizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformerSize {
    pub layers: usize,
    pub dim: usize,
    pub heads: usize,
    pub hidden: usize,
}

pub const TRANSFORMER_1: TransformerSize = TransformerSize { layers: 1, dim: EMBED, heads: 2, hidden: 384 };
pub const TRANSFORMER_2: TransformerSize = TransformerSize { layers: 2, dim: EMBED, heads: 2, hidden: 128 };

/// The input layer: a token table, or a linear map of each position's channels.
fn embed<B: Backend>(vocab: Option<usize>, channels: usize, dim: usize, rng: &mut InitRng) -> Box<dyn Layer<B>> {
    match vocab {
        Some(v) => Box::new(Embedding::new(v, dim, rng)),
        None => Box::new(Linear::new(channels, dim, rng)),
    }
}

/// Embedding, positions, `size.layers` blocks, final LayerNorm, attention pooling (the mean at
/// first; order-free like it), linear.
pub fn transformer<B: Backend>(
    len: usize,
    channels: usize,
    vocab: Option<usize>,
    classes: usize,
    size: TransformerSize,
    rng: &mut InitRng,
) -> Vec<Box<dyn Layer<B>>> {
    let mut layers = vec![embed(vocab, channels, size.dim, rng), Box::new(PositionEmbedding::new(len, size.dim, rng))];
    for _ in 0..size.layers {
        layers.push(Box::new(transformer_block(size.dim, size.heads, size.hidden, false, rng)));
    }
    layers.push(Box::new(LayerNorm::new(size.dim)));
    layers.push(Box::new(AttentionPool::new(size.dim)));
    layers.push(Box::new(Linear::new(size.dim, classes, rng)));
    layers
}

/// Mean embedding, then a two-layer MLP.
pub fn bag<B: Backend>(
    channels: usize,
    vocab: Option<usize>,
    classes: usize,
    rng: &mut InitRng,
) -> Vec<Box<dyn Layer<B>>> {
    vec![
        embed(vocab, channels, EMBED, rng),
        Box::new(GlobalAvgPool),
        Box::new(Linear::new(EMBED, BAG_HIDDEN, rng)),
        Box::new(Relu),
        Box::new(Linear::new(BAG_HIDDEN, BAG_HIDDEN, rng)),
        Box::new(Relu),
        Box::new(Linear::new(BAG_HIDDEN, classes, rng)),
    ]
}

/// The token CNN (or, with `local`, its locally-connected twin) over `len` positions.
pub fn cnn<B: Backend>(
    len: usize,
    vocab: usize,
    classes: usize,
    local: bool,
    rng: &mut InitRng,
) -> Result<Vec<Box<dyn Layer<B>>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = vec![Box::new(Embedding::new(vocab, EMBED, rng))];
    layers.extend(crate::models::cnn::stack_1d(&TEXT_CNN_LAYERS, TEXT_CNN_WIDTH, (len, EMBED), classes, local, rng)?);
    Ok(layers)
}

/// The token CNN's receptive field, in positions.
pub fn cnn_receptive_field() -> usize {
    let (mut size, mut jump) = (1, 1);
    for (k, s, _) in TEXT_CNN_LAYERS {
        size += (k - 1) * jump;
        jump *= s;
    }
    size
}

/// The token Mixer.
pub fn mixer<B: Backend>(len: usize, vocab: usize, classes: usize, rng: &mut InitRng) -> Vec<Box<dyn Layer<B>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = vec![Box::new(Embedding::new(vocab, TEXT_MIXER.dim, rng))];
    layers.extend(mixer_body(len, TEXT_MIXER, classes, rng));
    layers
}

/// Embedding, flatten, then `hidden` fully connected layers (none: logistic regression).
pub fn mlp<B: Backend>(
    len: usize,
    vocab: usize,
    hidden: &[usize],
    classes: usize,
    rng: &mut InitRng,
) -> Vec<Box<dyn Layer<B>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = vec![Box::new(Embedding::new(vocab, EMBED, rng))];
    layers.extend(crate::models::mlp::build(len * EMBED, hidden, false, classes, rng));
    layers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Cpu;
    use crate::models::{Model, ModelKind};
    use rand::SeedableRng;

    /// On the recall task's shape, every family's body (the embedding table aside) is within
    /// 25% of the 2-layer transformer's.
    #[test]
    fn families_have_about_equal_parameters() {
        let (len, vocab, classes) = (64, 33, 16);
        let count = |kind| {
            let m = Model::<Cpu>::build_tokens(kind, len, vocab, classes, &mut InitRng::seed_from_u64(0)).unwrap();
            (m.param_count() - vocab * EMBED) as f64
        };
        let reference = count(ModelKind::Transformer2);
        for kind in [
            ModelKind::Transformer1,
            ModelKind::Cnn,
            ModelKind::Dnn,
            ModelKind::Mlp,
            ModelKind::Bag,
            ModelKind::Logistic,
        ] {
            let n = count(kind);
            assert!((n / reference - 1.0).abs() <= 0.25, "{kind:?}: {n} parameters against {reference}");
        }
        assert_eq!(cnn_receptive_field(), 15);
    }
}
