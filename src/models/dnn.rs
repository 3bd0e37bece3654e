//! The "DNN": an MLP-Mixer. Each block mixes channels at every position (an MLP shared across
//! positions), then mixes across all positions (an MLP over the position axis, per channel),
//! each with LayerNorm and a residual. Every block sees the whole input, unlike a CNN layer.
//! The mean over positions feeds a linear classifier.
//!
//! 1-D default (MNIST-1D, length 40): embed 1→8 channels, one block with channel MLP
//! 8→16→8 and position MLP 40→32→40: ~33k multiply-adds, about the CNN's ~32k.

use crate::core::init::InitRng;
use crate::core::ops::{Gelu, GlobalAvgPool, LayerNorm, Linear, Patchify, Residual, Transpose};
use crate::core::{Backend, Layer};
use crate::error::{Error, Result};
use crate::models::ImageArch;
use serde::{Deserialize, Serialize};

/// Sizes of a Mixer over `positions` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixerSize {
    pub dim: usize,
    pub depth: usize,
    pub token_hidden: usize,
    pub channel_hidden: usize,
}

/// The channel-mixing residual branch: LN, per-position MLP.
pub fn channel_mix<B: Backend>(dim: usize, hidden: usize, rng: &mut InitRng) -> Box<dyn Layer<B>> {
    Box::new(Residual::new(vec![
        Box::new(LayerNorm::new(dim)),
        Box::new(Linear::new(dim, hidden, rng)),
        Box::new(Gelu::default()),
        Box::new(Linear::new(hidden, dim, rng)),
    ]))
}

/// The position-mixing residual branch: LN, transpose, MLP over positions, transpose back.
pub fn token_mix<B: Backend>(dim: usize, positions: usize, hidden: usize, rng: &mut InitRng) -> Box<dyn Layer<B>> {
    Box::new(Residual::new(vec![
        Box::new(LayerNorm::new(dim)),
        Box::new(Transpose),
        Box::new(Linear::new(positions, hidden, rng)),
        Box::new(Gelu::default()),
        Box::new(Linear::new(hidden, positions, rng)),
        Box::new(Transpose),
    ]))
}

/// Mixer blocks, final LayerNorm, mean over positions, classifier — on `[B, positions, dim]`.
pub fn mixer_body<B: Backend>(
    positions: usize,
    size: MixerSize,
    classes: usize,
    rng: &mut InitRng,
) -> Vec<Box<dyn Layer<B>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = Vec::new();
    for _ in 0..size.depth {
        layers.push(channel_mix(size.dim, size.channel_hidden, rng));
        layers.push(token_mix(size.dim, positions, size.token_hidden, rng));
    }
    layers.push(Box::new(LayerNorm::new(size.dim)));
    layers.push(Box::new(GlobalAvgPool));
    layers.push(Box::new(Linear::new(size.dim, classes, rng)));
    layers
}

pub const MIXER_1D: MixerSize = MixerSize { dim: 8, depth: 1, token_hidden: 32, channel_hidden: 16 };

pub fn build_1d<B: Backend>(len: usize, channels: usize, classes: usize, rng: &mut InitRng) -> Vec<Box<dyn Layer<B>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = vec![Box::new(Linear::new(channels, MIXER_1D.dim, rng))];
    layers.extend(mixer_body(len, MIXER_1D, classes, rng));
    layers
}

/// The image Mixer: `p`×`p` patches as tokens (p = 1: pixels), embedded, mixed, classified.
pub fn build_2d<B: Backend>(
    h: usize,
    w: usize,
    c: usize,
    classes: usize,
    arch: &ImageArch,
    rng: &mut InitRng,
) -> Result<Vec<Box<dyn Layer<B>>>> {
    let p = arch.mixer_patch;
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(Error::Config(format!("mixer patch {p} does not divide the {h}x{w} image")));
    }
    let tokens = (h / p) * (w / p);
    let mut layers: Vec<Box<dyn Layer<B>>> =
        vec![Box::new(Patchify { patch: p }), Box::new(Linear::new(p * p * c, arch.mixer.dim, rng))];
    layers.extend(mixer_body(tokens, arch.mixer, classes, rng));
    Ok(layers)
}
