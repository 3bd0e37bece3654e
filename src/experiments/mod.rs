//! The experiments and analyses as a library: every command of the binary is
//! config -> `run(&config, &progress)` -> report, the report printing as the terminal table
//! (`Display`) and saving as JSON (`Serialize`; with plots: [`Artifacts`](crate::report::Artifacts)).
//!
//! - [`setup`]: from a [`DataChoice`](setup::DataChoice) to loaded data and its recipe
//!   ([`presets`]), options that do not apply refused once;
//! - [`run`]: a [`RunSpec`] fully describes one training run; every command
//!   trains through [`run::train_run_on`];
//! - [`grid`]: the runner of many runs (parallel as the device's policy says), progress
//!   reporting and the statistics over seeds;
//! - [`references`]: published numbers and the protocol under which they compare;
//! - [`sweep`]: a sweep planned into numbered tasks that run anywhere (this machine, a Slurm
//!   job array), collected into `reproduce`'s tables;
//! - commands: [`reproduce`], [`single`] (`train`), [`data_size`], [`pooling`], [`prune`],
//!   [`analyses`] (receptive field, effective dimension, dimension), [`inventory`] (`models`,
//!   `data export`), [`bench`](mod@bench).
//!
//! ```
//! use cnnlab::experiments::{grid::Silent, reproduce};
//! use cnnlab::train::TrainOverrides;
//!
//! // the main experiment, shortened: every model, original and permuted, one seed
//! let config = reproduce::ReproduceConfig {
//!     seeds: Some(1),
//!     train: TrainOverrides { steps: Some(20), eval_every: Some(20), ..Default::default() },
//!     ..Default::default()
//! };
//! let report = reproduce::run(&config, &Silent)?;
//! assert_eq!(report.summary.rows.len(), 10);
//! println!("{report}");
//! # Ok::<(), cnnlab::Error>(())
//! ```

pub mod analyses;
pub mod bench;
pub mod data_size;
pub mod distance;
pub mod grid;
pub mod inventory;
pub mod pooling;
pub mod presets;
pub mod prune;
pub mod references;
pub mod reproduce;
pub mod run;
pub mod setup;
pub mod single;
pub mod sweep;

pub use grid::{Compute, Progress, SeedStats, Silent};
pub use run::{train_run, RunSpec};
