//! The experiments driven from Rust, without the binary: what a researcher writes in a
//! notebook-like program of their own.

use cnnlab::experiments::{analyses, reproduce, single, Silent};
use cnnlab::models::ModelKind;
use cnnlab::train::TrainOverrides;

#[test]
fn reproduce_mnist1d_through_the_library() {
    let short = TrainOverrides { steps: Some(60), eval_every: Some(30), ..Default::default() };
    let config = reproduce::ReproduceConfig { seeds: Some(2), train: short, ..Default::default() };
    let report = reproduce::run(&config, &Silent).unwrap();
    assert_eq!(report.summary.rows.len(), 10, "5 models x 2 conditions");
    assert!(report.summary.rows.iter().all(|r| r.seeds == 2 && r.accuracy_mean > 0.1));
    assert!(report.to_string().contains("logistic"), "the terminal table");
    assert!(serde_json::to_value(&report).unwrap()["rows"].is_array(), "the JSON summary");
}

#[test]
fn receptive_field_of_a_trained_cnn_through_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let mut train = single::TrainRunConfig::new(ModelKind::Cnn);
    (train.train.steps, train.save) = (Some(50), Some(dir.path().join("cnn")));
    single::run(&train, &Silent).unwrap();
    let config =
        analyses::ReceptiveFieldConfig { run: dir.path().join("cnn"), examples: 16, compute: Default::default() };
    let report = analyses::receptive_field(&config).unwrap();
    let sizes: Vec<usize> = report.layers.iter().map(|l| l.theory.1.size).collect();
    assert_eq!(sizes, vec![5, 9, 17], "the MNIST-1D CNN's theoretical fields");
}

/// A run started on the pool (`on_pool`, as the CLI starts every command) gives the numbers of
/// the same run started from the test's own thread, outside the pool.
#[test]
fn a_run_on_the_pool_gives_the_numbers_of_a_run_outside_it() {
    let mut train = single::TrainRunConfig::new(ModelKind::Cnn);
    (train.train.steps, train.train.eval_every) = (Some(60), Some(30));
    let outside = single::run(&train, &Silent).unwrap();
    assert!(rayon::current_thread_index().is_none(), "the test thread is outside the pool");
    let on_pool = cnnlab::core::cpu::on_pool(|| {
        assert!(rayon::current_thread_index().is_some(), "on_pool runs on one of the pool's threads");
        single::run(&train, &Silent).unwrap()
    });
    assert_eq!(on_pool.curve, outside.curve);
    assert_eq!(on_pool.final_test_accuracy, outside.final_test_accuracy);
}
