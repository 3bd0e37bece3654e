//! Convolutional networks.
//!
//! 1-D: the MNIST-1D notebook's CNN — conv(k5, s2, p1) then two conv(k3, s2, p1), 25 channels,
//! ReLU, flatten, linear. Each unit of layer 1 sees 5 inputs, of layer 2 13, of layer 3 29.

use crate::core::init::InitRng;
use crate::core::ops::conv1d::conv1d;
use crate::core::ops::{Flatten, Linear, Relu};
use crate::core::{Backend, Layer};
use crate::error::Result;

/// (kernel, stride, padding) of the MNIST-1D CNN's three layers.
pub const CNN_1D_LAYERS: [(usize, usize, usize); 3] = [(5, 2, 1), (3, 2, 1), (3, 2, 1)];
pub const CNN_1D_CHANNELS: usize = 25;

/// Output length of the 1-D stack for input length `len`.
pub fn out_len_1d(len: usize) -> Result<usize> {
    let mut l = len;
    for (k, s, p) in CNN_1D_LAYERS {
        l = crate::core::ops::conv2d::WindowGeom::out_len(l, k, s, p)?;
    }
    Ok(l)
}

pub fn build_1d<B: Backend>(
    len: usize,
    channels: usize,
    classes: usize,
    rng: &mut InitRng,
) -> Result<Vec<Box<dyn Layer<B>>>> {
    let out = out_len_1d(len)?;
    let mut layers: Vec<Box<dyn Layer<B>>> = Vec::new();
    let mut cin = channels;
    for (k, s, p) in CNN_1D_LAYERS {
        layers.push(Box::new(conv1d(cin, CNN_1D_CHANNELS, k, s, p, rng)));
        layers.push(Box::new(Relu));
        cin = CNN_1D_CHANNELS;
    }
    layers.push(Box::new(Flatten));
    layers.push(Box::new(Linear::new(out * CNN_1D_CHANNELS, classes, rng)));
    Ok(layers)
}
