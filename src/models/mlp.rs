//! Multilayer perceptron with ReLU. With `residual`, every hidden layer after the first adds
//! its input back (`h = h + relu(W h)`), as in the MNIST-1D notebook's MLP.

use crate::core::init::InitRng;
use crate::core::ops::{Flatten, Linear, Relu, Residual};
use crate::core::{Backend, Layer};

pub fn build<B: Backend>(
    inputs: usize,
    hidden: &[usize],
    residual: bool,
    classes: usize,
    rng: &mut InitRng,
) -> Vec<Box<dyn Layer<B>>> {
    let mut layers: Vec<Box<dyn Layer<B>>> = vec![Box::new(Flatten)];
    let mut width = inputs;
    for (i, &h) in hidden.iter().enumerate() {
        if residual && i > 0 && h == width {
            layers.push(Box::new(Residual::new(vec![Box::new(Linear::new(width, h, rng)), Box::new(Relu)])));
        } else {
            layers.push(Box::new(Linear::new(width, h, rng)));
            layers.push(Box::new(Relu));
        }
        width = h;
    }
    layers.push(Box::new(Linear::new(width, classes, rng)));
    layers
}
