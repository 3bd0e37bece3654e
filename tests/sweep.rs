//! Sweeps on this machine: a sweep's collected table is `reproduce`'s; a resubmission redoes
//! only what is not validly done (missing, corrupted, failed, killed); failures are recorded
//! with their error line and exit status. (tests/slurm.rs runs sweeps through a real Slurm.)

use cnnlab::experiments::reproduce::{self, ReproduceConfig};
use cnnlab::experiments::sweep::{self, Manifest, SweepSpec, TaskState};
use cnnlab::experiments::{Compute, Silent};
use cnnlab::models::ModelKind;
use cnnlab::train::TrainOverrides;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn small_spec() -> SweepSpec {
    SweepSpec {
        name: Some("small".into()),
        models: Some(vec![ModelKind::Logistic, ModelKind::Cnn, ModelKind::Mlp]),
        seeds: Some(2),
        train: TrainOverrides { steps: Some(200), eval_every: Some(100), ..Default::default() },
        ..SweepSpec::default()
    }
}

fn rows_json<T: serde::Serialize>(report: &T) -> serde_json::Value {
    serde_json::to_value(report).unwrap()["rows"].clone()
}

fn cnnlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnnlab"));
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = cnnlab().args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn states(dir: &Path) -> Vec<&'static str> {
    sweep::status(dir)
        .unwrap()
        .tasks
        .iter()
        .map(|t| match t.state {
            TaskState::Done { .. } => "done",
            TaskState::Failed(_) => "failed",
            TaskState::Started { .. } => "started",
            TaskState::Corrupt { .. } => "corrupt",
            TaskState::Missing => "missing",
        })
        .collect()
}

#[test]
fn a_collected_sweep_is_the_reproduce_table_on_any_parallelism() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = small_spec();
    let cfg = ReproduceConfig {
        models: spec.models.clone(),
        seeds: spec.seeds,
        train: spec.train.clone(),
        ..ReproduceConfig::default()
    };
    let reference = reproduce::run(&cfg, &Silent).unwrap();
    for (name, jobs) in [("one", 1), ("three", 3)] {
        let dir = tmp.path().join(name);
        let plan = sweep::plan(&spec, &dir, false).unwrap();
        assert_eq!(plan.tasks, 12);
        let local = sweep::local(&dir, Compute { parallel_runs: Some(jobs), ..Compute::default() }, &Silent).unwrap();
        assert_eq!((local.ran, local.already_done, local.failed.len()), (12, 0, 0));
        let collected = sweep::collect(&dir).unwrap();
        assert_eq!(collected.tables.len(), 1);
        assert_eq!(rows_json(&collected), rows_json(&reference), "-j {jobs}");
        // the same table text, bar the wall time
        let strip = |s: String| s.lines().filter(|l| !l.starts_with("wall time")).collect::<Vec<_>>().join("\n");
        assert_eq!(strip(collected.to_string()), strip(reference.to_string()));
    }
    // running again trains nothing
    let again = sweep::local(&tmp.path().join("one"), Compute::default(), &Silent).unwrap();
    assert_eq!((again.ran, again.already_done), (0, 12));
}

#[test]
fn axes_make_one_table_each_and_a_task_runs_by_its_index() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = SweepSpec {
        models: Some(vec![ModelKind::Mlp]),
        conditions: vec![cnnlab::data::Condition::Original],
        train_sizes: Some(vec![500, 1000]),
        ..small_spec()
    };
    let dir = tmp.path().join("sizes");
    sweep::plan(&spec, &dir, false).unwrap();
    let manifest = Manifest::load(&dir).unwrap();
    assert_eq!((manifest.tables.len(), manifest.tasks.len()), (2, 4));
    assert_eq!(manifest.tables[1].n_train, 1000);
    assert_eq!(manifest.table_label(0), "mnist1d (500 train)");
    // index 1 with two tasks per index: tasks 2 and 3
    let out = sweep::run_index(&dir, &manifest, 1, 2, Compute::default(), &Silent).unwrap();
    assert_eq!(out.iter().map(|(i, o)| (*i, o.is_ok())).collect::<Vec<_>>(), vec![(2, true), (3, true)]);
    assert_eq!(states(&dir), vec!["missing", "missing", "done", "done"]);
    let e = sweep::collect(&dir).unwrap_err().to_string();
    assert!(e.contains("2 of 4 tasks have no valid result yet (tasks 0-1)"), "{e}");
    let e = sweep::run_index(&dir, &manifest, 2, 2, Compute::default(), &Silent).unwrap_err().to_string();
    assert!(e.contains("index 2 is out of range") && e.contains("indices 0-1"), "{e}");
    sweep::local(&dir, Compute::default(), &Silent).unwrap();
    let collected = sweep::collect(&dir).unwrap();
    assert_eq!(collected.tables.len(), 2);
    let json = serde_json::to_value(&collected).unwrap();
    assert_eq!(json[1]["table"], "mnist1d (1000 train)");
    // each table equals reproduce on that training-set size
    for (k, n) in [500usize, 1000].into_iter().enumerate() {
        let cfg = ReproduceConfig {
            data: cnnlab::experiments::setup::DataChoice { train_subset: Some(n), ..Default::default() },
            models: spec.models.clone(),
            conditions: spec.conditions.clone(),
            seeds: spec.seeds,
            train: spec.train.clone(),
            ..ReproduceConfig::default()
        };
        assert_eq!(json[k]["rows"], rows_json(&reproduce::run(&cfg, &Silent).unwrap()), "{n} examples");
    }
}

#[test]
fn planning_again_keeps_the_results_and_another_plan_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let spec = SweepSpec { models: Some(vec![ModelKind::Logistic]), ..small_spec() };
    assert!(!sweep::plan(&spec, &dir, false).unwrap().unchanged);
    sweep::local(&dir, Compute::default(), &Silent).unwrap();
    assert!(sweep::plan(&spec, &dir, false).unwrap().unchanged);
    assert!(states(&dir).iter().all(|s| *s == "done"));
    let other = SweepSpec { seeds: Some(3), ..spec.clone() };
    let e = sweep::plan(&other, &dir, false).unwrap_err().to_string();
    assert!(e.contains("holds another sweep"), "{e}");
    assert!(states(&dir).iter().all(|s| *s == "done"), "the refused plan changed nothing");
    sweep::plan(&other, &dir, true).unwrap();
    assert_eq!(states(&dir), vec!["missing"; 6]);
    // a directory holding other files is not a sweep directory
    let used = tmp.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("notes.txt"), "mine").unwrap();
    let e = sweep::plan(&spec, &used, false).unwrap_err().to_string();
    assert!(e.contains("already holds files"), "{e}");
}

#[test]
fn a_resubmission_redoes_only_missing_and_corrupted_results() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    sweep::plan(&small_spec(), &dir, false).unwrap();
    sweep::local(&dir, Compute::default(), &Silent).unwrap();
    let before = serde_json::to_value(sweep::collect(&dir).unwrap()).unwrap()["rows"].clone();
    let manifest = Manifest::load(&dir).unwrap();
    let result = |i: usize| manifest.task_dir(&dir, i).join("result.json");
    let originals: Vec<Vec<u8>> = (0..12).map(|i| std::fs::read(result(i)).unwrap()).collect();
    // task 1: a digit of its accuracy changed (still valid JSON); task 4: truncated;
    // task 7: removed; task 9: another task's result copied over it
    let text = String::from_utf8(originals[1].clone()).unwrap();
    let at = text.find("\"final_test_accuracy\":0.").unwrap() + "\"final_test_accuracy\":0.".len();
    let digit = text.as_bytes()[at];
    let flipped = if digit == b'9' { '1' } else { (digit + 1) as char };
    std::fs::write(result(1), format!("{}{flipped}{}", &text[..at], &text[at + 1..])).unwrap();
    std::fs::write(result(4), &originals[4][..originals[4].len() / 2]).unwrap();
    std::fs::remove_file(result(7)).unwrap();
    std::fs::write(result(9), &originals[8]).unwrap();
    let st = sweep::status(&dir).unwrap();
    let why = |i: usize| match &st.tasks[i].state {
        TaskState::Corrupt { reason } => reason.clone(),
        s => panic!("task {i}: {s:?}"),
    };
    assert_eq!(why(1), "checksum mismatch");
    assert!(why(4).starts_with("not a result file"), "{}", why(4));
    assert_eq!(why(9), "the result of another run (task 8)");
    assert!(matches!(st.tasks[7].state, TaskState::Missing));
    assert_eq!(st.left(), vec![1, 4, 7, 9]);
    assert!(st.to_string().contains("sbatch --array=1,4,7,9 "), "{st}");
    assert!(sweep::collect(&dir).is_err());
    // the resubmission: every task's index again
    let mut ran = Vec::new();
    for i in 0..12 {
        for (t, o) in sweep::run_index(&dir, &manifest, i, 1, Compute::default(), &Silent).unwrap() {
            if let sweep::Outcome::Ran { replaced, .. } = o.unwrap() {
                ran.push((t, replaced.is_some()));
            }
        }
    }
    assert_eq!(ran, vec![(1, true), (4, true), (7, false), (9, true)]);
    for i in [0, 2, 3, 5, 6, 8, 10, 11] {
        assert_eq!(std::fs::read(result(i)).unwrap(), originals[i], "task {i} was rewritten");
    }
    assert!(manifest.task_dir(&dir, 4).join("result.json.corrupt").exists(), "the bad file is kept aside");
    let after = serde_json::to_value(sweep::collect(&dir).unwrap()).unwrap()["rows"].clone();
    assert_eq!(before, after);
}

#[test]
fn failures_are_recorded_with_their_error_line_and_exit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let spec = SweepSpec { models: Some(vec![ModelKind::Logistic]), seeds: Some(1), ..small_spec() };
    sweep::plan(&spec, &dir, false).unwrap();
    // task 1 asks for a mask file that is not there
    let path = dir.join("sweep.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["tasks"][1]["run"]["mask"] = serde_json::Value::String(tmp.path().join("gone.safetensors").display().to_string());
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let d = dir.to_str().unwrap();
    let (ok, _, err) = run_cli(&["--quiet", "sweep", "run", d, "--index", "1"]);
    assert!(!ok && err.contains("task 1 (logistic / permuted / seed 0): no mask file at"), "{err}");
    let (ok, _, _) = run_cli(&["sweep", "fail", d, "--index", "1", "--exit-status", "1"]);
    assert!(ok);
    let st = sweep::status(&dir).unwrap();
    match &st.tasks[1].state {
        TaskState::Failed(f) => {
            assert!(f.error.contains("no mask file at"), "{}", f.error);
            assert_eq!(f.exit_status, Some(1));
        }
        s => panic!("{s:?}"),
    }
    assert!(st.to_string().contains("exit status 1: no mask file at"), "{st}");
    // `local` records it again, runs the other, and fails with a count
    let (ok, _, err) = run_cli(&["--quiet", "sweep", "local", d]);
    assert!(!ok && err.contains("1 task(s) did not finish"), "{err}");
    assert_eq!(states(&dir), vec!["done", "failed"]);
    let (ok, _, err) = run_cli(&["sweep", "collect", d]);
    assert!(
        !ok && err.lines().count() == 1 && err.contains("1 of 2 tasks have no valid result yet (tasks 1)"),
        "{err}"
    );
}

#[test]
fn a_killed_task_is_recorded_and_a_resubmission_completes_it_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = SweepSpec {
        models: Some(vec![ModelKind::Cnn]),
        conditions: vec![cnnlab::data::Condition::Permuted],
        seeds: Some(1),
        checkpoint_every: Some(50),
        train: TrainOverrides { steps: Some(3000), eval_every: Some(500), ..Default::default() },
        ..small_spec()
    };
    let (killed, whole) = (tmp.path().join("killed"), tmp.path().join("whole"));
    for d in [&killed, &whole] {
        sweep::plan(&spec, d, false).unwrap();
    }
    sweep::local(&whole, Compute::default(), &Silent).unwrap();
    let manifest = Manifest::load(&killed).unwrap();
    let task = manifest.task_dir(&killed, 0);
    let d = killed.to_str().unwrap();
    // SIGKILL once a checkpoint is on disk (the run is under way)
    let mut child = cnnlab().args(["--quiet", "--threads", "1", "sweep", "run", d, "--index", "0"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !task.join("checkpoint.safetensors").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the task ended before it could be killed");
        assert!(std::time::Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    // killed at once: a fixed wait here would outlast the whole task on a fast enough machine
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(states(&killed), vec!["started"]);
    // the script's record of the exit status 137 (128 + SIGKILL)
    let (ok, _, err) = run_cli(&["sweep", "fail", d, "--index", "0", "--exit-status", "137"]);
    assert!(ok, "{err}");
    match &sweep::status(&killed).unwrap().tasks[0].state {
        TaskState::Failed(f) => {
            assert!(f.error.starts_with("killed by signal 9 SIGKILL"), "{}", f.error);
            assert_eq!(f.exit_status, Some(137));
        }
        s => panic!("{s:?}"),
    }
    // resubmitted: continues from its checkpoint to the uninterrupted run's numbers
    let (ok, out, err) = run_cli(&["--quiet", "sweep", "run", d, "--index", "0"]);
    assert!(ok, "{err}");
    assert!(out.contains("task 0 (cnn / permuted / seed 0)"), "{out}");
    assert_eq!(states(&killed), vec!["done"]);
    let result =
        |dir: &Path| serde_json::to_value(&sweep::collect(dir).unwrap().tables[0].records[0].result.curve).unwrap();
    assert_eq!(result(&killed), result(&whole));
    for f in ["final.safetensors", "init.safetensors"] {
        assert_eq!(
            std::fs::read(task.join(f)).unwrap(),
            std::fs::read(Manifest::load(&whole).unwrap().task_dir(&whole, 0).join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(!task.join("failure.json").exists() && !task.join("started.json").exists());
}

#[test]
fn the_cli_refuses_bad_sweep_input_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("s.toml");
    std::fs::write(&spec, "models = [\"logistic\"]\nseeds = 1\n[train]\nsteps = 20\n").unwrap();
    let dir = tmp.path().join("d");
    let (s, d) = (spec.to_str().unwrap(), dir.to_str().unwrap());
    let (ok, out, err) = run_cli(&["sweep", "plan", s, "--out", d]);
    assert!(ok && out.contains("2 tasks"), "{out}{err}");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "modles = [\"cnn\"]\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sweep", "plan", bad.to_str().unwrap(), "--out", d], "line 1: unknown field `modles`"),
        (vec!["sweep", "run", d, "--index", "2"], "index 2 is out of range: the sweep has 2 tasks (0-1)"),
        (vec!["sweep", "run", d], "no task index: pass --index"),
        (vec!["sweep", "status", tmp.path().to_str().unwrap()], "no sweep in"),
        (vec!["sweep", "collect", d], "2 of 2 tasks have no valid result yet"),
        (vec!["sweep", "slurm", d, "--partition", "a b"], "must be one word"),
        (vec!["sweep", "slurm", d, "--cnnlab", "/no/such/cnnlab"], "/no/such/cnnlab"),
    ];
    for (args, want) in cases {
        let out =
            cnnlab().args(&args).env_remove("SLURM_ARRAY_TASK_ID").env_remove("JOB_COMPLETION_INDEX").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want) && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
    // the index from a scheduler's environment
    let out = cnnlab().args(["--quiet", "sweep", "run", d]).env("SLURM_ARRAY_TASK_ID", "1").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cnnlab().args(["--quiet", "sweep", "run", d]).env("JOB_COMPLETION_INDEX", "0").output().unwrap();
    assert!(out.status.success());
    let (ok, out, _) = run_cli(&["sweep", "collect", d, "--json", "-"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(ok && json["rows"].as_array().unwrap().len() == 2);
}

#[test]
fn the_example_specs_parse_and_the_mnist1d_ones_plan() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweeps");
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml" && e != "json") {
            continue;
        }
        let spec = SweepSpec::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
        if spec.data.dataset.is_sequence() && spec.datasets.is_none() {
            let plan = sweep::plan(&spec, &tmp.path().join(spec.job_name()), false).unwrap();
            let tables = spec.train_sizes.as_ref().map_or(1, |s| s.len());
            assert_eq!(plan.tables.len(), tables, "{}", path.display());
            assert!(plan.tasks > 0);
        }
    }
    assert!(seen >= 3, "the sweeps/ examples");
    // the default table's spec is the default table
    let spec = SweepSpec::load(&dir.join("mnist1d-table.toml")).unwrap();
    assert_eq!(SweepSpec { name: None, ..spec }, SweepSpec::default());
}
