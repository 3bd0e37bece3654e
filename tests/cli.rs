//! The binary's behaviour on good and bad input: one-line errors, non-zero exits, no panics,
//! and the files it promises.

use std::process::{Command, Output};

fn cnnlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnlab")).args(args).output().expect("the binary runs")
}

/// Fails unless the command failed with exactly one line on stderr and no panic.
fn assert_clean_failure(args: &[&str]) -> String {
    let out = cnnlab(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?} should print one line, got:\n{err}");
    err
}

#[test]
fn bad_flags_give_one_line_errors() {
    let e = assert_clean_failure(&["train", "--model", "transformer"]);
    assert!(e.contains("transformer") && e.contains("cnn"), "{e}");
    assert_clean_failure(&["reproduce", "--dataset", "imagenet"]);
    // each reaches the check its name implies (negative numbers parse as numbers)
    let e = assert_clean_failure(&["train", "--model", "cnn", "--steps", "0"]);
    assert!(e.contains("--steps") && e.contains("0"), "{e}");
    let e = assert_clean_failure(&["train", "--model", "cnn", "--steps", "-5"]);
    assert!(e.contains("invalid value '-5' for '--steps"), "{e}");
    let e = assert_clean_failure(&["train", "--model", "cnn", "--lr", "-1"]);
    assert!(e.contains("learning rate must be a positive number, got -1"), "{e}");
    let e = assert_clean_failure(&["train", "--model", "cnn", "--weight-decay", "-0.5"]);
    assert!(e.contains("weight decay must be a number >= 0"), "{e}");
    let e = assert_clean_failure(&["reproduce", "--seeds", "0"]);
    assert!(e.contains("--seeds"), "{e}");
    let e = assert_clean_failure(&["bench", "w9"]);
    assert!(e.contains("w9") && e.contains("w1"), "{e}");
    let e = assert_clean_failure(&["data", "export", "mnist1d", "--out", "/proc/cnnlab-cannot-write-here"]);
    assert!(e.contains("/proc/cnnlab-cannot-write-here"), "{e}");
    let e = assert_clean_failure(&["data", "export", "mnist1d", "--out", "/tmp/x", "--train-split", "2"]);
    assert!(e.contains("train_split"), "{e}");
}

#[test]
fn unwritable_json_fails_without_panic() {
    let e = assert_clean_failure(&[
        "train",
        "--model",
        "logistic",
        "--steps",
        "5",
        "--quiet",
        "--json",
        "/proc/nope/run.json",
    ]);
    assert!(e.contains("/proc/nope/run.json"), "{e}");
}

#[test]
fn data_export_writes_numpy_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = cnnlab(&["data", "export", "mnist1d", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, shape, dtype) in [
        ("x.npy", vec![4000u64, 40], "<f4"),
        ("y.npy", vec![4000], "<i8"),
        ("x_test.npy", vec![1000, 40], "<f4"),
        ("y_test.npy", vec![1000], "<i8"),
    ] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(npy.shape(), &shape[..], "{name}");
        assert_eq!(npy.dtype(), npyz::DType::Plain(dtype.parse().unwrap()), "{name}");
    }
    let bytes = std::fs::read(dir.path().join("y.npy")).unwrap();
    let y: Vec<i64> = npyz::NpyFile::new(&bytes[..]).unwrap().into_vec().unwrap();
    assert_eq!(&y[..10], &[2, 6, 4, 5, 6, 6, 6, 0, 3, 1], "labels of the reference generator");
}

#[test]
fn reproduce_writes_the_promised_json_and_curves() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let runs = dir.path().join("runs");
    let out = cnnlab(&[
        "reproduce",
        "--models",
        "logistic,cnn",
        "--conditions",
        "original,permuted",
        "--seeds",
        "2",
        "--steps",
        "60",
        "--eval-every",
        "30",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--run-dir",
        runs.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 60 steps are not the paper's protocol: no published column, the protocol named
    assert!(stdout.contains("cnn") && !stdout.contains("(94)"), "{stdout}");
    assert!(stdout.contains("protocol: same batch order every epoch"), "{stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["dataset"], "mnist1d");
    assert!(v["wall_seconds"].as_f64().unwrap() > 0.0);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let cnn = rows.iter().find(|r| r["model"] == "cnn" && r["condition"] == "original").unwrap();
    assert_eq!(cnn["seeds"], 2);
    assert!(cnn["reference"].is_null());
    assert!(cnn["accuracy_mean"].as_f64().unwrap() > 0.1);
    assert!(cnn["accuracy_std"].as_f64().unwrap() >= 0.0);
    // one learning curve per run, two points each
    let curve = std::fs::read_to_string(runs.join("cnn-permuted-seed1.jsonl")).unwrap();
    assert_eq!(curve.lines().count(), 2);
    let point: serde_json::Value = serde_json::from_str(curve.lines().next().unwrap()).unwrap();
    assert_eq!(point["step"], 30);
    // each run reported as it finished: 2 models x 2 conditions x 2 seeds
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().filter(|l| l.starts_with("finished ")).count(), 8, "{stderr}");
    assert!(stderr.contains("finished cnn / permuted / seed 1: "), "{stderr}");
}

#[test]
fn bench_profiles_the_full_tables_networks() {
    let out = cnnlab(&["bench", "full-mlp", "--profile"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    // one line per layer of the MLP 3072-1024-512-10, then the throughput
    for layer in ["linear(3072->1024)", "linear(1024->512)", "linear(512->10)", "relu"] {
        assert!(s.lines().any(|l| l.ends_with(layer)), "{layer} missing:\n{s}");
    }
    assert!(s.lines().last().unwrap_or("").starts_with("RESULT full-mlp "), "{s}");
    // each layer's rates by count: a GEMM's operations and bytes a second, ReLU's bytes only
    let columns = |layer: &str| -> Vec<String> {
        let line = s.lines().find(|l| l.ends_with(layer)).unwrap_or("");
        line.split_whitespace().map(String::from).collect()
    };
    assert!(s.lines().any(|l| l.contains("GFLOP/s") && l.contains("GB/s")), "{s}");
    let gemm = columns("linear(3072->1024)");
    let positive = |v: &str| v.parse::<f64>().is_ok_and(|v| v > 0.0);
    assert!(positive(&gemm[3]) && positive(&gemm[4]), "{gemm:?}");
    let relu = columns("relu");
    assert!(relu[3] == "-" && positive(&relu[4]), "{relu:?}");
}

#[test]
fn models_lists_parameters_and_flops() {
    let out = cnnlab(&["models"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    // logistic regression on 40 inputs, 10 classes: 410 parameters, 800 FLOPs
    assert!(s.lines().any(|l| l.starts_with("logistic") && l.contains(" 410 ") && l.contains(" 800 ")), "{s}");
    for m in ["mlp", "cnn", "dnn", "lcn"] {
        assert!(s.lines().any(|l| l.starts_with(m)), "{m} missing:\n{s}");
    }
}

#[test]
fn help_describes_the_commands() {
    let out = cnnlab(&["--help"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for c in ["reproduce", "train", "models", "data", "bench"] {
        assert!(s.contains(c), "{c} missing from --help");
    }
}

/// The image path end to end on a folder of PNGs: reproduce runs every image model.
#[test]
fn reproduce_on_an_image_folder() {
    let dir = tempfile::tempdir().unwrap();
    for (ci, class) in ["a", "b"].iter().enumerate() {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        for i in 0..6u8 {
            let v = (ci as u8) * 120 + i * 10;
            image::RgbImage::from_pixel(8, 8, image::Rgb([v, 255 - v, v / 2]))
                .save(dir.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let json = dir.path().join("s.json");
    let spec = format!("folder:{}", dir.path().display());
    let out = cnnlab(&[
        "reproduce",
        "--dataset",
        &spec,
        "--steps",
        "4",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--run-dir",
        dir.path().join("runs").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let models: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["cnn", "cnn", "dnn", "dnn", "mlp", "mlp", "lcn", "lcn"]);
    assert!(v["rows"][0]["reference"].is_null());
}

#[test]
fn missing_image_data_says_how_to_get_it() {
    let e = assert_clean_failure(&["reproduce", "--dataset", "cifar10", "--data-dir", "/nonexistent"]);
    assert!(e.contains("cnnlab data download cifar10"), "{e}");
    let e = assert_clean_failure(&["reproduce", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent"]);
    assert!(e.contains("dataset-fashion-mnist"), "{e}");
}

#[test]
fn analyze_dimension_writes_json_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = cnnlab(&[
        "analyze",
        "dimension",
        "--knn-train",
        "400",
        "--knn-test",
        "100",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dimension.json")).unwrap()).unwrap();
    // the arithmetic of MNIST-1D's own windows and sequence
    assert_eq!(v["fill_costs"][0]["dimension"], 3);
    assert_eq!(v["fill_costs"].as_array().unwrap().last().unwrap()["input"], "40x1 sequence");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("dimension.svg") && stdout.contains("samples.svg"), "every file named\n{stdout}");
    let res = v["resolutions"].as_array().unwrap();
    assert_eq!(res.last().unwrap()["dimension"], 40, "full MNIST-1D resolution last");
    assert!(res.iter().all(|r| r["accuracy"].as_f64().unwrap() > 0.1));
    for f in ["dimension.svg", "samples.svg"] {
        assert!(std::fs::read_to_string(dir.path().join(f)).unwrap().starts_with("<svg"), "{f}");
    }
    assert_clean_failure(&["analyze", "dimension", "--density", "0.5"]);
}

#[test]
fn analyze_pooling_runs_every_variant() {
    let dir = tempfile::tempdir().unwrap();
    let out = cnnlab(&[
        "analyze",
        "pooling",
        "--sizes",
        "200,400",
        "--steps",
        "30",
        "--quiet",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pooling.json")).unwrap()).unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 10);
    assert_eq!(v["test_examples"], 1000, "every size has its own 1000 test examples, as in the notebook");
    let sizes: Vec<u64> = cells.iter().map(|c| c["train_examples"].as_u64().unwrap()).collect();
    assert_eq!(&sizes[..2], &[200, 400]);
    assert!(std::fs::read_to_string(dir.path().join("pooling.svg")).unwrap().starts_with("<svg"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["no-pool", "stride-2", "max", "avg", "l2"] {
        assert!(stdout.contains(name), "{stdout}");
    }
}

#[test]
fn analyze_data_size_writes_a_curve_per_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = cnnlab(&[
        "analyze",
        "data-size",
        "--sizes",
        "100,400",
        "--steps",
        "20",
        "--quiet",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("data_size.json")).unwrap()).unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6, "cnn, dnn, mlp at two sizes");
    assert_eq!(v["test_examples"], 1000);
    assert!(std::fs::read_to_string(dir.path().join("data_size.svg")).unwrap().starts_with("<svg"));
    let e = assert_clean_failure(&["analyze", "data-size", "--sizes", "99999", "--steps", "5"]);
    assert!(e.contains("99999"), "{e}");
}

#[test]
fn devices_are_listed_and_an_unusable_device_is_one_line() {
    let out = cnnlab(&["devices"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap_or("").starts_with("cpu"), "{text}");
    // a line for CUDA either way: a GPU, or why there is none
    assert!(text.contains("cuda"), "{text}");
    assert_clean_failure(&["train", "--model", "cnn", "--device", "tpu"]);
    assert_clean_failure(&["train", "--model", "cnn", "--device", "cuda:x"]);
    assert_clean_failure(&["bench", "w3a", "--tf32"]);
    assert_clean_failure(&["reproduce", "--parallel-runs", "0"]);
    if !text.lines().any(|l| l.starts_with("cuda:")) {
        // no usable GPU here (or a build without CUDA): the device is refused up front
        let e = assert_clean_failure(&["reproduce", "--device", "cuda", "--steps", "5"]);
        assert!(e.contains("cuda"), "{e}");
        let e = assert_clean_failure(&["bench", "w1", "--device", "cuda:3"]);
        assert!(e.contains("cuda:3"), "{e}");
        let e = assert_clean_failure(&["analyze", "prune", "--run", "nowhere", "--device", "cuda"]);
        assert!(e.contains("cuda"), "{e}");
    }
}

/// An experiment's saved config runs again to the same numbers.
#[test]
fn replay_reruns_a_saved_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let (first, again) = (dir.path().join("a"), dir.path().join("b"));
    let (ja, jb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = cnnlab(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "reproduce",
        "--models",
        "mlp",
        "--steps",
        "40",
        "--seeds",
        "2",
        "--quiet",
        "--run-dir",
        &p(&first),
        "--json",
        &p(&ja),
    ]);
    run(&["replay", &p(&first.join("reproduce.json")), "--quiet", "--run-dir", &p(&again), "--json", &p(&jb)]);
    let rows = |f: &std::path::Path| {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(f).unwrap()).unwrap()["rows"].clone()
    };
    assert_eq!(rows(&ja), rows(&jb));
    assert_eq!(rows(&ja).as_array().unwrap().len(), 2);
    let e = assert_clean_failure(&["replay", "Cargo.toml"]);
    assert!(e.contains("not a reproduce config"), "{e}");
    // a file with no size to look up is read up to a limit, not until the memory is full
    let e = assert_clean_failure(&["replay", "/dev/zero"]);
    assert!(e.contains("reading /dev/zero: more than"), "{e}");
}

/// Experiments started together without `--run-dir` get run directories of their own (the
/// default name is the dataset and the second it started: two in one second once collided,
/// and the second refused to run), and one that fails leaves no empty directory behind.
#[test]
fn experiments_started_together_get_their_own_run_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_cnnlab"))
            .current_dir(tmp.path())
            .args(["--quiet", "--threads", "1", "reproduce", "--models", "mlp", "--steps", "20", "--seeds", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children: Vec<_> = (0..3).map(|_| start()).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let dirs = || -> Vec<std::path::PathBuf> {
        let mut d: Vec<_> = std::fs::read_dir(tmp.path().join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
        d.sort();
        d
    };
    let made = dirs();
    assert_eq!(made.len(), 3, "{made:?}");
    for d in &made {
        assert!(d.join("reproduce.json").exists(), "{} holds its experiment", d.display());
    }
    // refused after its directory was reserved: the reservation is given back
    let out = Command::new(env!("CARGO_BIN_EXE_cnnlab"))
        .current_dir(tmp.path())
        .args(["--quiet", "reproduce", "--resume"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_cnnlab"))
        .current_dir(tmp.path())
        .args(["--quiet", "reproduce", "--models", "mlp", "--lr", "-1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(dirs(), made, "no empty run directory left by a failed command");
}

/// A saved run records what trained it: the command, the machine and the device.
#[test]
fn a_saved_run_records_its_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = cnnlab(&[
        "--quiet",
        "train",
        "--model",
        "mlp",
        "--steps",
        "20",
        "--seed",
        "3",
        "--save",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("provenance.json")).unwrap()).unwrap();
    assert_eq!(record["device"], "cpu");
    assert_eq!(record["dataset"], "mnist1d");
    assert_eq!(record["seeds"], "3");
    assert!(record["command"].as_str().unwrap().starts_with("cnnlab --quiet train --model mlp"), "{record}");
}

/// With less memory than a table's runs need together (`CNNLAB_MEMORY` caps what cnnlab plans
/// with), the runs that do not fit beside others wait and run fewer at once: the same table,
/// and a line saying so. A run too large for the memory even alone is one error line, and so
/// is a malformed value.
#[test]
fn a_table_larger_than_the_memory_runs_fewer_at_once() {
    use cnnlab::models::{footprint::footprint, ImageArch, ModelKind};
    // one MNIST-1D CNN run's estimate (batches of 100, evaluated 1000 examples at a time)
    let need = footprint(ModelKind::Cnn, &[40, 1], 10, &ImageArch::small()).run_bytes(100, 1000);
    let dir = tempfile::tempdir().unwrap();
    let table = |memory: Option<String>, name: &str| {
        let json = dir.path().join(format!("{name}.json"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cnnlab"));
        cmd.args(["reproduce", "--models", "cnn", "--seeds", "3", "--steps", "40", "--eval-every", "20", "--quiet"]);
        cmd.args(["--threads", "2", "--json", json.to_str().unwrap()]);
        cmd.arg("--run-dir").arg(dir.path().join(name));
        match memory {
            Some(m) => cmd.env("CNNLAB_MEMORY", m),
            None => cmd.env_remove("CNNLAB_MEMORY"),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{name}: {stderr}");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let rows: Vec<String> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r["accuracy_mean"], r["accuracy_std"]))
            .collect();
        (rows, stderr)
    };
    let (free, stderr) = table(None, "free");
    assert!(!stderr.contains("beside others"), "{stderr}");
    // room for one run, not two
    let (tight, stderr) = table(Some(format!("{}", (1.5 * need) as u64)), "tight");
    assert_eq!(tight, free, "runs that waited give the numbers they give beside others");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if cores > 1 {
        assert!(stderr.contains("did not fit in memory beside others: running again, 1 at once"), "{stderr}");
    } else {
        eprintln!("NOTE a_table_larger_than_the_memory_runs_fewer_at_once: one core, so no run started beside another");
    }
    // not even one run fits; a value that is no size
    for (i, (memory, want)) in
        [(format!("{}", (0.5 * need) as u64), "needs about"), ("eight".into(), "CNNLAB_MEMORY")].into_iter().enumerate()
    {
        let out = Command::new(env!("CARGO_BIN_EXE_cnnlab"))
            .args(["reproduce", "--models", "cnn", "--seeds", "1", "--steps", "10", "--quiet"])
            .arg("--run-dir")
            .arg(dir.path().join(format!("refused{i}")))
            .env("CNNLAB_MEMORY", &memory)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "CNNLAB_MEMORY={memory}: {err}");
        assert!(err.contains(want) && err.trim_end().lines().count() == 1, "CNNLAB_MEMORY={memory}: {err}");
    }
}
