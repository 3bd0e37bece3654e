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
