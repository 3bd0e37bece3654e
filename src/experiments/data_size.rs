//! `analyze data-size`: test accuracy of several models against the number of training examples
//! — the curse of dimensionality seen as sample efficiency. Every (model, size, seed) run trains
//! on the first `size` training examples and is tested on the whole test split.

use crate::core::cpu::with_intra_op_threads;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::ModelKind;
use crate::report::Row;
use crate::train::{train_cpu, TrainConfig};
use rayon::prelude::*;
use serde::Serialize;

/// One model at one training-set size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeCell {
    pub model: String,
    pub train_examples: usize,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub accuracies: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataSizeReport {
    pub dataset: String,
    pub test_examples: usize,
    pub steps: usize,
    pub cells: Vec<SizeCell>,
    pub wall_seconds: f64,
}

/// Trains every model at every size (sizes above the training split are refused).
pub fn run(
    data: &Dataset,
    models: &[ModelKind],
    sizes: &[usize],
    train: &TrainConfig,
    seeds: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<DataSizeReport> {
    train.validate()?;
    data.validate()?;
    if let Some(&n) = sizes.iter().find(|&&n| n == 0 || n > data.n_train()) {
        return Err(Error::Config(format!("training-set size {n} is not in 1..={}", data.n_train())));
    }
    if models.is_empty() || sizes.is_empty() || seeds == 0 {
        return Err(Error::Config("data-size needs at least one model, size and seed".into()));
    }
    let start = std::time::Instant::now();
    let jobs: Vec<(ModelKind, usize, u64)> = models
        .iter()
        .flat_map(|&m| sizes.iter().flat_map(move |&n| (0..seeds as u64).map(move |s| (m, n, s))))
        .collect();
    let results: Vec<Result<f64>> = jobs
        .par_iter()
        .map(|&(model, n, seed)| {
            let mut d = data.clone();
            d.truncate_train(n);
            let cfg = TrainConfig { seed, ..train.clone() };
            Ok(with_intra_op_threads(1, || train_cpu(model, &d, &cfg, &mut |s| progress(s)))?.final_test_accuracy)
        })
        .collect();
    let accuracies = results.into_iter().collect::<Result<Vec<f64>>>()?;
    let mut cells = Vec::new();
    for &m in models {
        for &n in sizes {
            let accs: Vec<f64> =
                jobs.iter().zip(&accuracies).filter(|(j, _)| j.0 == m && j.1 == n).map(|(_, a)| *a).collect();
            let row = Row::new(m.name(), "", accs.clone(), None);
            cells.push(SizeCell {
                model: m.name().into(),
                train_examples: n,
                accuracy_mean: row.accuracy_mean,
                accuracy_std: row.accuracy_std,
                accuracies: accs,
            });
        }
    }
    Ok(DataSizeReport {
        dataset: data.name.clone(),
        test_examples: data.n_test(),
        steps: train.steps,
        cells,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}
