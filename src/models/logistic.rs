//! Logistic regression: flatten, one linear layer.

use crate::core::init::InitRng;
use crate::core::ops::{Flatten, Linear};
use crate::core::{Backend, Layer};

pub fn build<B: Backend>(inputs: usize, classes: usize, rng: &mut InitRng) -> Vec<Box<dyn Layer<B>>> {
    vec![Box::new(Flatten), Box::new(Linear::new(inputs, classes, rng))]
}
