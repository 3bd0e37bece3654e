//! The saved-run analyses end to end through the binary: `train --save`, then
//! `analyze receptive-field | effective-dim | prune`, and `train --mask`.

use cnnlab::train::checkpoint;
use std::path::Path;
use std::process::{Command, Output};

fn cnnlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnlab")).args(args).output().expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = cnnlab(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn train(dir: &Path, model: &str, steps: &str, extra: &[&str]) {
    let d = dir.to_str().unwrap();
    let mut args = vec!["train", "--model", model, "--steps", steps, "--quiet", "--threads", "1", "--save", d];
    args.extend_from_slice(extra);
    ok(&args);
}

#[test]
fn analyses_of_a_saved_cnn_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = (tmp.path().join("cnn"), tmp.path().join("out"));
    train(&run, "cnn", "150", &[]);
    for f in ["run.json", "init.safetensors", "final.safetensors"] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let (r, o) = (run.to_str().unwrap(), out.to_str().unwrap());

    let text = ok(&["analyze", "receptive-field", "--run", r, "--out", o, "--examples", "32"]);
    assert!(text.contains("theory"), "{text}");
    let rf = json(&out.join("receptive_field.json"));
    let layers = rf["layers"].as_array().unwrap();
    let sizes: Vec<u64> = layers.iter().map(|l| l["theory"][1]["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, vec![5, 9, 17], "the MNIST-1D CNN's fields");
    for l in layers {
        assert!((l["mass_inside_theory"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    }
    assert!(std::fs::read_to_string(out.join("receptive_field.svg")).unwrap().starts_with("<svg"));

    ok(&["analyze", "effective-dim", "--run", r, "--out", o, "--examples", "100", "--samples", "2000"]);
    let ed = json(&out.join("effective_dim.json"));
    assert_eq!(ed["whole_inputs"]["dimension"], 40);
    assert_eq!(ed["raw_patches"]["dimension"], 3);
    let first = &ed["layers"][0];
    assert_eq!((first["reads"].as_str().unwrap(), first["spectrum"]["dimension"].as_u64().unwrap()), ("window", 5));
    let relu_zero = ed["nonlinearities"][0]["zero_fraction"].as_f64().unwrap();
    assert!(relu_zero > 0.0 && relu_zero < 1.0, "{relu_zero}");
    assert!(out.join("effective_dim.svg").is_file());

    let mask = tmp.path().join("ticket.safetensors");
    ok(&[
        "analyze",
        "prune",
        "--run",
        r,
        "--out",
        o,
        "--sparsities",
        "0.5,0.9",
        "--fine-tune-steps",
        "20",
        "--rounds",
        "3",
        "--max-sparsity",
        "0.5",
        "--lottery-steps",
        "30",
        "--quiet",
        "--save-mask",
        mask.to_str().unwrap(),
    ]);
    let p = json(&out.join("prune.json"));
    assert_eq!(p["one_shot"].as_array().unwrap().len(), 6, "2 sparsities x (global, layer-wise, random)");
    let ticket = p["lottery"][0]["ticket"].as_array().unwrap();
    let achieved: Vec<f64> = ticket.iter().map(|r| r["sparsity"].as_f64().unwrap()).collect();
    assert_eq!(achieved.len(), 3);
    assert!(achieved[0] == 0.0 && (achieved[2] - 0.5).abs() < 0.01, "{achieved:?}");
    assert!(out.join("prune.svg").is_file());

    // the saved ticket mask trains with its zeros kept
    let masked = tmp.path().join("masked");
    train(&masked, "cnn", "150", &["--mask", mask.to_str().unwrap()]);
    let masks = checkpoint::read_tensors(&mask).unwrap();
    let trained = checkpoint::read_tensors(&masked.join("final.safetensors")).unwrap();
    let mut zeros = 0;
    for (name, m) in &masks {
        let w = &trained[name];
        for (mv, wv) in m.values.iter().zip(&w.values) {
            if *mv == 0.0 {
                assert_eq!(*wv, 0.0, "{name}: a masked weight moved");
                zeros += 1;
            }
        }
    }
    assert!(zeros > 0);
}

#[test]
fn analyses_refuse_what_they_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("mlp");
    train(&run, "mlp", "5", &[]);
    let fail = |args: &[&str]| {
        let out = cnnlab(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && !err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        err
    };
    let r = run.to_str().unwrap();
    let o = tmp.path().join("o");
    let e = fail(&["analyze", "receptive-field", "--run", r, "--out", o.to_str().unwrap()]);
    assert!(e.contains("cnn and lcn"), "{e}");
    let e = fail(&["analyze", "prune", "--run", "/nonexistent/run"]);
    assert!(e.contains("no saved run at /nonexistent/run"), "{e}");
    let e = fail(&["analyze", "prune", "--run", tmp.path().to_str().unwrap()]);
    assert!(e.contains("has no run.json"), "{e}");
    // a broken weight file
    std::fs::write(run.join("final.safetensors"), b"garbage").unwrap();
    let e = fail(&["analyze", "effective-dim", "--run", r, "--out", o.to_str().unwrap()]);
    assert!(e.contains("safetensors"), "{e}");
    // a mask that does not fit the model
    let other = tmp.path().join("cnn");
    train(&other, "cnn", "5", &[]);
    let e = fail(&[
        "train",
        "--model",
        "mlp",
        "--steps",
        "5",
        "--quiet",
        "--mask",
        other.join("final.safetensors").to_str().unwrap(),
    ]);
    assert!(e.contains("mask") || e.contains("shape"), "{e}");
}

#[test]
fn pruning_is_deterministic_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("mlp");
    train(&run, "mlp", "60", &[]);
    let prune = |out: &Path| {
        ok(&[
            "analyze",
            "prune",
            "--run",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--sparsities",
            "0.5",
            "--fine-tune-steps",
            "10",
            "--rounds",
            "3",
            "--lottery-steps",
            "20",
            "--seeds",
            "2",
            "--quiet",
        ]);
        let v = json(&out.join("prune.json"));
        (v["one_shot"].clone(), v["lottery"].clone())
    };
    let a = prune(&tmp.path().join("a"));
    let b = prune(&tmp.path().join("b"));
    assert_eq!(a, b);
    assert_eq!(a.1.as_array().unwrap().len(), 2, "two seeds");
}

/// A saved mask carries the network it was made for: `train --mask` rebuilds that network
/// without the architecture flags being repeated, and refuses another model.
#[test]
fn a_mask_carries_its_architecture() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("mlp");
    train(&run, "mlp", "30", &["--mlp-hidden", "24,24"]);
    let mask = tmp.path().join("ticket.safetensors");
    let (r, m) = (run.to_str().unwrap(), mask.to_str().unwrap());
    let o = tmp.path().join("o");
    let prune = ["analyze", "prune", "--run", r, "--sparsities", "0.5", "--fine-tune-steps", "0", "--rounds", "2"];
    ok(&[&prune[..], &["--lottery-steps", "10", "--quiet", "--save-mask", m, "--out", o.to_str().unwrap()]].concat());
    let masked = tmp.path().join("masked");
    train(&masked, "mlp", "10", &["--mask", m]);
    let saved = json(&masked.join("run.json"));
    assert_eq!(saved["config"]["arch"]["sequence_mlp_hidden"], serde_json::json!([24, 24]));
    let out = cnnlab(&["train", "--model", "cnn", "--steps", "5", "--quiet", "--mask", m]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("made for a mlp"), "{err}");
}
