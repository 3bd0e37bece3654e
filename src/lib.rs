//! cnnlab: a laboratory that shows, by experiment, why convolutional networks work so well.
//!
//! The library is usable without the CLI:
//! - [`core`]: f32 tensors, hand-written forward/backward ops behind a [`core::Backend`] seam,
//!   optimizers and schedules;
//! - [`data`]: datasets (MNIST-1D generated in process) and transforms (position permutations);
//! - [`models`]: logistic regression, MLP, CNN, the Mixer "DNN" and the locally-connected twin;
//! - [`train`]: the training loop and its metrics;
//! - [`experiments`]: every experiment and analysis as config -> run -> report (what each
//!   command of the binary calls);
//! - [`report`]: tables and JSON in the shapes the CLI prints and writes;
//! - [`analysis`]: measurements of the explanations (curse of dimensionality, …).
//!
//! ```
//! use cnnlab::data::{mnist1d_default, Condition};
//! use cnnlab::models::ModelKind;
//! use cnnlab::train::{train_cpu, TrainConfig};
//!
//! // MNIST-1D as the reference generator makes it, with one fixed permutation of positions
//! let data = Condition::Permuted.apply(&mnist1d_default()?, 7);
//! let config = TrainConfig { steps: 50, eval_every: 50, ..TrainConfig::mnist1d() };
//! let run = train_cpu(ModelKind::Mlp, &data, &config, &mut |_| {})?;
//! assert!(run.final_test_accuracy > 0.1);
//! # Ok::<(), cnnlab::Error>(())
//! ```

#[macro_use]
pub mod names;

pub mod analysis;
pub mod core;
pub mod data;
pub mod error;
pub mod experiments;
pub mod limits;
pub mod models;
pub mod report;
pub mod train;

pub use error::{Error, Result};
pub use names::Named;
