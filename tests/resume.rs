//! Runs killed with SIGKILL at random points and resumed end where uninterrupted runs end:
//! `train --checkpoint-every` bit for bit, `reproduce --resume` with the same table.

use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cnnlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnnlab"));
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Runs `args` to the end and returns how long it took.
fn timed_run(args: &[String]) -> Duration {
    let start = std::time::Instant::now();
    let status = cnnlab().args(args).status().unwrap();
    assert!(status.success());
    start.elapsed()
}

/// Starts `args` (then `args + resume` after each kill) and kills it after a random delay of
/// a twelfth to a sixth of `uninterrupted` (the same work run without kills), until a run
/// finishes by itself; returns how many times it was killed. Delays scale with the machine's
/// speed: fixed delays killed a run that took 2 s only 3 times on a fast machine. Each attempt
/// gets at most a sixth of the work done, so a run is killed at least 5 times, and about 8.
fn kill_and_resume(args: &[&str], resume: &str, uninterrupted: Duration, seed: u64) -> usize {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let whole_ms = uninterrupted.as_millis() as u64;
    let delays_ms = (whole_ms / 12).max(20)..(whole_ms / 6).max(40);
    let mut kills = 0;
    for attempt in 0..200 {
        let mut cmd = cnnlab();
        cmd.args(args);
        if attempt > 0 {
            cmd.arg(resume);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_millis(rng.random_range(delays_ms.clone()));
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                assert!(status.success(), "attempt {attempt}: {err}");
                return kills;
            }
            if std::time::Instant::now() >= deadline {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    panic!("the run never finished");
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_killed_train_resumes_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, resumed) = (tmp.path().join("ref"), tmp.path().join("resumed"));
    let args = |dir: &Path| -> Vec<String> {
        ["--threads", "1", "train", "--model", "cnn", "--steps", "6000", "--eval-every", "500", "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--save".into(), dir.to_str().unwrap().into(), "--checkpoint-every".into(), "50".into()])
            .collect()
    };
    let uninterrupted = timed_run(&args(&reference));
    let a = args(&resumed);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let kills = kill_and_resume(&a, "--resume", uninterrupted, 1);
    assert!(kills >= 5, "only {kills} kills before the run finished");
    eprintln!("train: killed {kills} times, resumed each time");
    for f in ["final.safetensors", "init.safetensors"] {
        assert!(bytes(&reference.join(f)) == bytes(&resumed.join(f)), "{f} differs after {kills} kills");
    }
    let run = |d: &Path| -> serde_json::Value { serde_json::from_slice(&bytes(&d.join("run.json"))).unwrap() };
    assert_eq!(run(&reference), run(&resumed));
    assert!(!resumed.join("checkpoint.safetensors").exists(), "the checkpoint is removed once the run is saved");
    let partial = tmp.path().join(".resumed.partial");
    assert!(!partial.exists(), "the work directory became the run directory");
}

#[test]
fn a_killed_reproduce_resumes_to_the_same_table() {
    let tmp = tempfile::tempdir().unwrap();
    let args = |name: &str| -> Vec<String> {
        let dir = tmp.path().join(name);
        let json = tmp.path().join(format!("{name}.json"));
        ["--threads", "1", "reproduce", "--models", "mlp,cnn,dnn,lcn", "--steps", "400", "--seeds", "2", "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--run-dir".into(), dir.to_str().unwrap().into(), "--json".into(), json.to_str().unwrap().into()])
            .collect()
    };
    let uninterrupted = timed_run(&args("ref"));
    let a = args("resumed");
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let kills = kill_and_resume(&a, "--resume", uninterrupted, 2);
    assert!(kills >= 5, "only {kills} kills before the experiment finished");
    eprintln!("reproduce: killed {kills} times, resumed each time");
    let rows = |name: &str| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&bytes(&tmp.path().join(format!("{name}.json")))).unwrap()["rows"]
            .clone()
    };
    assert_eq!(rows("ref"), rows("resumed"), "after {kills} kills");
    // resuming needs the same experiment
    let mut other = args("resumed");
    other[4] = "mlp".into();
    other.push("--resume".into());
    let out = cnnlab().args(&other).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("other settings"));
}

/// A run killed after its files were in place (as it ended) is finished: `--resume` says so,
/// exits 0 and leaves the run as it was; with other settings it refuses, naming them. A
/// spec file left by a kill between the move and its removal goes.
#[test]
fn resuming_a_finished_run_says_it_had_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let args = |steps: &str| -> Vec<String> {
        ["--threads", "1", "train", "--model", "mlp", "--steps", steps, "--eval-every", "10", "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--save".into(), dir.to_str().unwrap().into(), "--checkpoint-every".into(), "10".into()])
            .collect()
    };
    let out = cnnlab().args(args("30")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let files = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), bytes(&p)))
            .collect();
        v.sort();
        v
    };
    let before = files(&dir);
    std::fs::write(dir.join("spec.json"), "left by a kill").unwrap();
    let mut again = cnnlab();
    again.stdout(Stdio::piped());
    let out = again.args(args("30")).arg("--resume").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("nothing to resume") && stdout.contains("had finished"), "{stdout}");
    assert_eq!(files(&dir), before, "the finished run is left as it was (the stray spec removed)");
    let out = cnnlab().args(args("40")).arg("--resume").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("other settings"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(files(&dir), before);
}
