//! Locally-connected twins of the CNNs: the same windows and shapes, untied weights.

use crate::core::init::InitRng;
use crate::core::ops::conv2d::WindowGeom;
use crate::core::ops::{Flatten, Linear, LocallyConnected, Relu};
use crate::core::{Backend, Layer};
use crate::error::Result;
use crate::models::cnn::{CNN_1D_CHANNELS, CNN_1D_LAYERS};

pub fn build_1d<B: Backend>(
    len: usize,
    channels: usize,
    classes: usize,
    rng: &mut InitRng,
) -> Result<Vec<Box<dyn Layer<B>>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = Vec::new();
    let (mut cin, mut l) = (channels, len);
    for (k, s, p) in CNN_1D_LAYERS {
        layers.push(Box::new(LocallyConnected::new(cin, CNN_1D_CHANNELS, (1, l), (1, k), (1, s), (0, p), rng)?));
        layers.push(Box::new(Relu));
        cin = CNN_1D_CHANNELS;
        l = WindowGeom::out_len(l, k, s, p)?;
    }
    layers.push(Box::new(Flatten));
    layers.push(Box::new(Linear::new(l * CNN_1D_CHANNELS, classes, rng)));
    Ok(layers)
}
