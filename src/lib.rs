//! cnnlab: a laboratory that shows, by experiment, why convolutional networks work so well.
//!
//! The library is usable without the CLI:
//! - [`core`]: f32 tensors, hand-written forward/backward ops behind a [`core::Backend`] seam,
//!   optimizers and schedules;
//! - [`data`]: datasets (MNIST-1D generated in process) and transforms (position permutations);
//! - [`models`]: logistic regression, MLP, CNN, the Mixer "DNN" and the locally-connected twin;
//! - [`train`]: the training loop and its metrics;
//! - [`experiments`]: the experiments the binary runs (`reproduce`, benchmarks);
//! - [`report`]: tables and JSON in the shapes the CLI prints and writes.

pub mod core;
pub mod data;
pub mod error;
pub mod experiments;
pub mod models;
pub mod report;
pub mod train;

pub use error::{Error, Result};
