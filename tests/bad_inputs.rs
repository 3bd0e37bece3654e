//! Inputs a user can feed that once panicked, aborted in the allocator, hung, were accepted
//! silently or lost data (issue 10's list): each must now be one clear line on stderr and a
//! non-zero exit, with nothing already written altered.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cnnlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnlab")).args(args).output().expect("the binary runs")
}

/// Fails with one line (no panic, no abort) that contains `expect`.
fn refused(args: &[&str], expect: &str) {
    let out = cnnlab(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    assert!(matches!(out.status.code(), Some(1) | Some(2)), "{args:?}: exit {:?} (a crash?)\n{err}", out.status);
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line:\n{err}");
    assert!(!err.contains("panicked") && !err.contains("internal"), "{args:?}: {err}");
    assert!(err.contains(expect), "{args:?}: expected '{expect}' in: {err}");
}

/// A two-class folder of 8x8 PNGs (and a one-class one).
fn folders(dir: &Path) -> (String, String) {
    for (root, classes) in [("img", vec!["a", "b"]), ("one", vec!["a"])] {
        for (ci, class) in classes.iter().enumerate() {
            std::fs::create_dir_all(dir.join(root).join(class)).unwrap();
            for i in 0..6u8 {
                let v = (ci as u8) * 120 + i * 10;
                image::RgbImage::from_pixel(8, 8, image::Rgb([v, 255 - v, v / 2]))
                    .save(dir.join(root).join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    (format!("folder:{}", dir.join("img").display()), format!("folder:{}", dir.join("one").display()))
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn sizes_and_values_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, one) = folders(tmp.path());
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let r = tmp.path().join("r");
    let r = r.to_str().unwrap();
    // once panics
    refused(&["train", "--model", "cnn", "--dataset", &img, "--widths", "0", "--steps", "2"], "width");
    refused(&["train", "--model", "lcn", "--dataset", &img, "--widths", "0", "--steps", "2"], "width");
    refused(&["reproduce", "--dataset", &img, "--widths", "0", "--steps", "2", "--run-dir", r], "width");
    refused(&["train", "--model", "mlp", "--mlp-hidden", "0", "--steps", "2"], "hidden width");
    refused(&["train", "--model", "mlp", "--mlp-hidden", "5,0", "--steps", "2"], "hidden width");
    refused(&["analyze", "data-size", "--mlp-hidden", "0", "--steps", "2", "--out", o], "hidden width");
    // once allocation aborts: refused by bound or by the memory estimate
    refused(&["train", "--model", "mlp", "--num-samples", "10000000000", "--steps", "2"], "limited");
    refused(&["train", "--model", "mlp", "--final-seq-length", "1000000000", "--steps", "2"], "limited");
    refused(&["train", "--model", "cnn", "--dataset", &img, "--widths", "100000", "--steps", "2"], "width");
    refused(&["train", "--model", "mlp", "--mlp-hidden", "1000000,1000000", "--steps", "2"], "width");
    let wide = ["65536"; 10].join(",");
    refused(&["train", "--model", "mlp", "--mlp-hidden", &wide, "--steps", "2"], "GiB of memory");
    refused(&["analyze", "pooling", "--sizes", "1000000000", "--steps", "2", "--out", o], "limited");
    refused(&["reproduce", "--seeds", "1000000000000", "--steps", "2", "--run-dir", r], "seeds");
    refused(&["train", "--model", "cnn", "--dataset", &img, "--image-size", "100000x100000"], "8192");
    // once hung
    refused(&["analyze", "prune", "--run", r, "--fine-tune-steps", "1000000000000"], "fine-tuning steps");
    refused(&["train", "--model", "mlp", "--steps", "1000000000000"], "steps");
    // once accepted silently
    refused(&["train", "--model", "mlp", "--lr", "1e30", "--steps", "50"], "diverged");
    refused(&["train", "--model", "mlp", "--weight-decay=-1", "--steps", "2"], "weight decay");
    refused(&["train", "--model", "mlp", "--lr", "-1"], "learning rate");
    refused(&["train", "--model", "mlp", "--momentum", "0.5"], "momentum applies to sgd");
    refused(&["train", "--model", "mlp", "--dataset", &one, "--steps", "2"], "at least 2");
    // once trained a run twice (two writers of one curve file; a duplicate counted as a seed)
    refused(&["reproduce", "--models", "mlp,mlp", "--steps", "2", "--run-dir", r], "models list names mlp twice");
    refused(&["reproduce", "--conditions", "permuted,permuted", "--steps", "2", "--run-dir", r], "permuted twice");
    refused(&["analyze", "pooling", "--sizes", "1000,1000", "--steps", "2", "--out", o], "names 1000 twice");
    refused(&["analyze", "data-size", "--models", "cnn,cnn", "--steps", "2", "--out", o], "names cnn twice");
    refused(&["analyze", "distance", "--gaps", "3,3", "--steps", "2", "--out", o], "names 3 twice");
    refused(&["analyze", "prune", "--run", r, "--sparsities", "0.5,0.9,0.5", "--out", o], "names 0.5 twice");
    // once wrapped around (usize::MAX + 1000 test examples) into a misleading message
    refused(&["analyze", "pooling", "--sizes", &usize::MAX.to_string(), "--out", o], "too large");
    // grids beyond the run limit, from their counts alone
    let all = ["--models", "cnn,mlp,dnn,lcn,logistic", "--conditions", "original,permuted,per-example"];
    refused(&[&["reproduce", "--seeds", "10000", "--run-dir", r][..], &all].concat(), "more than 100000 runs");
    let sizes: Vec<String> = (1..=90).map(|i| (i * 1_000_000).to_string()).collect();
    refused(&["analyze", "pooling", "--sizes", &sizes.join(","), "--out", o], "GiB of memory");
    // a thread count beyond the cores is capped, not a hang
    let t = std::time::Instant::now();
    let capped = cnnlab(&["--threads", "100000", "models"]);
    assert!(capped.status.success() && t.elapsed().as_secs() < 30);
    assert!(String::from_utf8_lossy(&capped.stderr).contains("cores"));
    assert!(!Path::new(r).exists(), "no refused run left a run directory");
}

#[test]
fn outputs_are_checked_first_and_never_mixed_or_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = cnnlab(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    ok(&["train", "--model", "mlp", "--steps", "20", "--quiet", "--save", r]);
    let before = snapshot(&run);
    // a second run into the same directory: refused, the first run untouched
    refused(&["train", "--model", "cnn", "--steps", "5", "--quiet", "--save", r], "already holds");
    assert_eq!(snapshot(&run), before);
    // a diverging run with --overwrite dies before its files replace the saved run
    refused(&["train", "--model", "mlp", "--lr", "1e30", "--steps", "50", "--save", r, "--overwrite"], "diverged");
    assert_eq!(snapshot(&run), before, "a failed run leaves the saved one whole");
    // with --overwrite a finished run replaces the directory as a whole
    ok(&["train", "--model", "mlp", "--steps", "10", "--quiet", "--seed", "1", "--save", r, "--overwrite"]);
    assert_ne!(snapshot(&run), before);
    let names: Vec<String> =
        snapshot(&run).iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["final.safetensors", "init.safetensors", "provenance.json", "run.json"]);

    // --json through a link: refused before training, the link's target untouched
    let target = tmp.path().join("target.json");
    std::fs::write(&target, b"keep").unwrap();
    let link = tmp.path().join("link.json");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&target, &link).unwrap();
        refused(&["train", "--model", "mlp", "--steps", "2", "--json", link.to_str().unwrap()], "symbolic link");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
    // --json - is standard output (valid JSON there), not a file named "-"
    let out = ok(&["train", "--model", "mlp", "--steps", "2", "--quiet", "--json", "-"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["model"], "mlp");
    assert!(!Path::new("-").exists());

    // unwritable outputs are refused before the work (a file where a directory must be)
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    refused(&["reproduce", "--steps", "2", "--run-dir", f], "is a file");
    refused(&["analyze", "dimension", "--out", f], "is a file");
    refused(&["analyze", "prune", "--run", r, "--save-mask", &format!("{f}/mask.safetensors")], "");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    // a used run directory is refused unless --overwrite
    let rd = tmp.path().join("rd");
    ok(&["reproduce", "--models", "mlp", "--steps", "5", "--seeds", "1", "--quiet", "--run-dir", rd.to_str().unwrap()]);
    refused(&["reproduce", "--models", "mlp", "--steps", "5", "--run-dir", rd.to_str().unwrap()], "--overwrite");
}

#[test]
fn a_model_of_non_finite_weights_is_refused() {
    use cnnlab::train::checkpoint;
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = cnnlab(&["train", "--model", "mlp", "--steps", "5", "--quiet", "--save", run.to_str().unwrap()]);
    assert!(out.status.success());
    let weights = run.join(checkpoint::FINAL_WEIGHTS);
    let mut tensors: Vec<checkpoint::NamedTensor> = checkpoint::read_tensors(&weights).unwrap().into_values().collect();
    tensors[0].values[0] = f32::NAN;
    checkpoint::write_tensors(&weights, &tensors, None).unwrap();
    let o = tmp.path().join("o");
    refused(&["analyze", "effective-dim", "--run", run.to_str().unwrap(), "--out", o.to_str().unwrap()], "non-finite");
}
