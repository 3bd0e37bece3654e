//! The MNIST-1D generator against a fixture made by the reference Python package
//! (scripts/make_mnist1d_fixture.py): labels exact, values within 1e-6.

use cnnlab::data::mnist1d::Mnist1dConfig;
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/mnist1d_reference.json");
    serde_json::from_str(text).expect("fixture is valid JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn config_of(args: &Value) -> Mnist1dConfig {
    let pad = floats(&args["padding"]);
    Mnist1dConfig {
        num_samples: args["num_samples"].as_u64().unwrap() as usize,
        train_split: args["train_split"].as_f64().unwrap(),
        template_len: args["template_len"].as_u64().unwrap() as usize,
        padding: (pad[0] as usize, pad[1] as usize),
        scale_coeff: args["scale_coeff"].as_f64().unwrap(),
        max_translation: args["max_translation"].as_u64().unwrap() as usize,
        corr_noise_scale: args["corr_noise_scale"].as_f64().unwrap(),
        iid_noise_scale: args["iid_noise_scale"].as_f64().unwrap(),
        shear_scale: args["shear_scale"].as_f64().unwrap(),
        shuffle_seq: args["shuffle_seq"].as_bool().unwrap(),
        final_seq_length: args["final_seq_length"].as_u64().unwrap() as usize,
        seed: args["seed"].as_u64().unwrap() as u32,
    }
}

fn check(case: &Value) -> f64 {
    let cfg = config_of(&case["args"]);
    let d = cfg.generate().unwrap();
    let len = d.length;
    let labels = |v: &Value| -> Vec<u8> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect() };
    assert_eq!(d.y, labels(&case["y"]), "train labels");
    assert_eq!(d.y_test, labels(&case["y_test"]), "test labels");
    let mut worst = 0.0f64;
    let mut cmp = |a: f64, b: f64| worst = worst.max((a - b).abs());
    for (split, x) in [("x", &d.x), ("x_test", &d.x_test)] {
        let sums = floats(&case[format!("{split}_row_sums")]);
        assert_eq!(sums.len() * len, x.len(), "{split} size");
        for (row, s) in x.chunks(len).zip(&sums) {
            cmp(row.iter().sum::<f64>(), *s);
        }
        let rows = case[format!("{split}_rows")].as_array().unwrap();
        let idx = if split == "x" { &case["train_rows"] } else { &case["test_rows"] };
        for (want, i) in rows.iter().zip(idx.as_array().unwrap()) {
            let i = i.as_u64().unwrap() as usize;
            for (a, b) in x[i * len..(i + 1) * len].iter().zip(floats(want)) {
                cmp(*a, b);
            }
        }
    }
    for (a, b) in d.t.iter().zip(floats(&case["t"])) {
        cmp(*a, b);
    }
    worst
}

#[test]
fn default_arguments_match_the_reference_generator() {
    let worst = check(&fixture()["default"]);
    assert!(worst <= 1e-6, "max abs difference {worst}");
}

#[test]
fn every_parameter_is_honoured() {
    let worst = check(&fixture()["variant"]);
    assert!(worst <= 1e-6, "max abs difference {worst}");
}

#[test]
fn bad_parameters_are_errors_not_panics() {
    let bad = [
        Mnist1dConfig { num_samples: 3, ..Default::default() },
        Mnist1dConfig { train_split: 1.5, ..Default::default() },
        Mnist1dConfig { padding: (60, 36), ..Default::default() },
        Mnist1dConfig { max_translation: 0, ..Default::default() },
        Mnist1dConfig { final_seq_length: 1, ..Default::default() },
    ];
    for cfg in bad {
        assert!(cfg.generate().is_err(), "{cfg:?} should be rejected");
    }
}
