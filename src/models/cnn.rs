//! Convolutional networks.
//!
//! 1-D: the MNIST-1D notebook's CNN — conv(k5, s2, p1) then two conv(k3, s2, p1), 25 channels,
//! ReLU, flatten, linear. Each unit of layer 1 sees 5 inputs, of layer 2 9, of layer 3 17
//! (`cnnlab analyze receptive-field` measures it).
//!
//! 2-D: 3×3 convolutions (padding 1) of the given widths, optional BatchNorm, ReLU, 2×2
//! max-pooling after the chosen layers, then global average pooling or flattening, linear.
//!
//! With `local`, either stack is built from locally-connected layers (same windows, untied
//! weights): the CNN's twin, which separates locality from weight sharing.

use crate::core::init::InitRng;
use crate::core::ops::conv1d::conv1d;
use crate::core::ops::conv2d::WindowGeom;
use crate::core::ops::{BatchNorm, Conv, Flatten, GlobalAvgPool, Linear, LocallyConnected, Pool, PoolKind, Relu};
use crate::core::{Backend, Layer};
use crate::error::Result;
use crate::models::ImageArch;

/// (kernel, stride, padding) of the MNIST-1D CNN's three layers.
pub const CNN_1D_LAYERS: [(usize, usize, usize); 3] = [(5, 2, 1), (3, 2, 1), (3, 2, 1)];
pub const CNN_1D_CHANNELS: usize = 25;

/// The MNIST-1D CNN, or (with `local`) its locally-connected twin: same windows and shapes,
/// untied weights.
pub fn build_1d<B: Backend>(
    len: usize,
    channels: usize,
    classes: usize,
    local: bool,
    rng: &mut InitRng,
) -> Result<Vec<Box<dyn Layer<B>>>> {
    stack_1d(&CNN_1D_LAYERS, CNN_1D_CHANNELS, (len, channels), classes, local, rng)
}

/// 1-D convolutions (kernel, stride, padding each) of `width` channels with ReLU over
/// `(len, channels)` inputs, flatten, linear; with `local`, locally-connected layers instead.
pub fn stack_1d<B: Backend>(
    geometry: &[(usize, usize, usize)],
    width: usize,
    (len, channels): (usize, usize),
    classes: usize,
    local: bool,
    rng: &mut InitRng,
) -> Result<Vec<Box<dyn Layer<B>>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = Vec::new();
    let (mut cin, mut l) = (channels, len);
    for &(k, s, p) in geometry {
        if local {
            layers.push(Box::new(LocallyConnected::new(cin, width, (1, l), (1, k), (1, s), (0, p), rng)?));
        } else {
            layers.push(Box::new(conv1d(cin, width, k, s, p, rng)));
        }
        layers.push(Box::new(Relu));
        cin = width;
        l = WindowGeom::out_len(l, k, s, p)?;
    }
    layers.push(Box::new(Flatten));
    layers.push(Box::new(Linear::new(l * width, classes, rng)));
    Ok(layers)
}

/// The 2-D CNN, or (with `local`) its locally-connected twin.
pub fn build_2d<B: Backend>(
    h: usize,
    w: usize,
    c: usize,
    classes: usize,
    arch: &ImageArch,
    local: bool,
    rng: &mut InitRng,
) -> Result<Vec<Box<dyn Layer<B>>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = Vec::new();
    let (mut cin, mut hw) = (c, (h, w));
    for (i, &width) in arch.cnn_widths.iter().enumerate() {
        if local {
            layers.push(Box::new(LocallyConnected::new(cin, width, hw, (3, 3), (1, 1), (1, 1), rng)?));
        } else {
            layers.push(Box::new(Conv::new_2d(cin, width, 3, 1, 1, rng)));
        }
        if arch.batch_norm {
            layers.push(Box::new(BatchNorm::new(width)));
        }
        layers.push(Box::new(Relu));
        if arch.pool_after.contains(&i) {
            layers.push(Box::new(Pool::new_2d(PoolKind::Max, 2, 2)));
            hw = (WindowGeom::out_len(hw.0, 2, 2, 0)?, WindowGeom::out_len(hw.1, 2, 2, 0)?);
        }
        cin = width;
    }
    if arch.global_pool {
        layers.push(Box::new(GlobalAvgPool));
        layers.push(Box::new(Linear::new(cin, classes, rng)));
    } else {
        layers.push(Box::new(Flatten));
        layers.push(Box::new(Linear::new(cin * hw.0 * hw.1, classes, rng)));
    }
    Ok(layers)
}
