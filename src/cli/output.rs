//! The terminal side: a progress bar that the library reports to, and writing reports.

use super::flags::OutFlags;
use anyhow::{Context, Result};
use cnnlab::core::Device;
use cnnlab::data::DatasetSpec;
use cnnlab::experiments::reproduce::{ReproduceConfig, ReproduceReport};
use cnnlab::experiments::single::{TrainReport, TrainRunConfig};
use cnnlab::experiments::Progress;
use cnnlab::report::provenance::Provenance;
use cnnlab::report::{check_writable_dir, check_writable_file, page, write_json, Artifacts};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The terminal's progress: a bar (hidden with --quiet); notes above it, or on stderr. Where
/// stderr is no terminal (a log file, a cluster job) the bar cannot draw, so a line is written
/// at every tenth of the steps instead (after the first seconds), with the time so far: a long
/// run's log says how far it got if it is cut. The second field is then the last tenth
/// written; the hidden bar still counts the steps and the time.
pub(crate) struct Bar(pub(crate) ProgressBar, Option<AtomicU64>);

/// Seconds before the first progress line.
const QUIET_SECONDS: f64 = 5.0;

impl Bar {
    pub(crate) fn new(quiet: bool) -> Self {
        if quiet {
            return Bar(ProgressBar::hidden(), None);
        }
        if !std::io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden(), Some(AtomicU64::new(0)));
        }
        let pb = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta}")
        {
            pb.set_style(style);
        }
        Bar(pb, None)
    }

    /// The progress line of a tenth newly reached, where progress goes as lines.
    fn log_line(&self, tenths: &AtomicU64) {
        let (done, total) = (self.0.position(), self.0.length().unwrap_or(0));
        if total == 0 {
            return;
        }
        let tenth = (10 * done / total).min(10);
        // One thread writes each tenth: the one that moves the mark past it; none in the first
        // seconds, so a short command's stderr holds only what it has to say (its error line).
        if tenths.fetch_max(tenth, Ordering::Relaxed) < tenth {
            let secs = self.0.elapsed().as_secs_f64();
            if secs >= QUIET_SECONDS {
                eprintln!("progress: {done}/{total} steps ({}%) in {secs:.0} s", 10 * tenth);
            }
        }
    }
}

impl Progress for Bar {
    fn start(&self, total_steps: u64) {
        self.0.set_length(total_steps);
    }
    fn steps(&self, n: usize) {
        self.0.inc(n as u64);
        if let Some(tenths) = &self.1 {
            self.log_line(tenths);
        }
    }
    fn note(&self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.println(line);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// `--json -`: the JSON on stdout (and the table on stderr).
fn is_stdout(path: &Option<PathBuf>) -> bool {
    path.as_deref() == Some(Path::new("-"))
}

/// Before the run: the --json file can be written (not a link, its directory takes files).
pub(crate) fn check_json(path: &Option<PathBuf>) -> Result<()> {
    match path {
        Some(p) if !is_stdout(path) => {
            check_writable_file(p).with_context(|| format!("--json {}", p.display()))?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Before the run: the --out directory exists or can be made, and takes files; so does
/// --report's.
pub(crate) fn check_out(out: &OutFlags) -> Result<()> {
    check_writable_dir(&out.out).with_context(|| format!("--out {}", out.out.display()))?;
    check_report(&out.report)
}

/// Before the run: the --report file can be written.
pub(crate) fn check_report(report: &Option<PathBuf>) -> Result<()> {
    if let Some(p) = report {
        check_writable_file(p).with_context(|| format!("--report {}", p.display()))?;
    }
    Ok(())
}

/// When the command started (for its provenance record).
pub(crate) static STARTED: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// The provenance of this command: its command line, this machine, `device`.
pub(crate) fn provenance(device: Device) -> Provenance {
    let mut argv: Vec<String> = std::env::args().collect();
    if let Some(first) = argv.first_mut() {
        *first = "cnnlab".into();
    }
    let started = STARTED.get().copied().unwrap_or(0.0);
    let mut record = Provenance::now(&argv, started, &device.to_string());
    record.backend_choices = device.choices();
    record
}

/// Writes the HTML report of `dirs` to `out` and says so.
pub(crate) fn report_page(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let written = page::write_report(dirs, out).with_context(|| format!("writing the report {}", out.display()))?;
    eprint!("{written}");
    Ok(())
}

/// Prints the report and writes its JSON (to stdout with `--json -`, the table then on stderr).
pub(crate) fn show<T: serde::Serialize + std::fmt::Display>(report: &T, json: &Option<PathBuf>) -> Result<()> {
    if is_stdout(json) {
        eprint!("{report}");
        let text = serde_json::to_string_pretty(report).context("serialising the report")?;
        println!("{text}");
        return Ok(());
    }
    print!("{report}");
    if let Some(path) = json {
        write_json(path, report).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Files that could not be written after a complete run: each named, then a failing exit.
pub(crate) fn warnings(list: &[String]) -> Result<()> {
    for w in list {
        eprintln!("warning: {w}");
    }
    match list.len() {
        0 => Ok(()),
        n => anyhow::bail!("{n} file(s) of the run directory could not be written (the table above is complete)"),
    }
}

/// Prints a report, writes its files and its provenance into `out` and names them; then the
/// HTML report, if asked.
pub(crate) fn finish(report: &(impl std::fmt::Display + Artifacts), out: &OutFlags, device: Device) -> Result<()> {
    print!("{report}");
    let dir = &out.out;
    let mut files = report.write(dir).with_context(|| format!("writing into {}", dir.display()))?;
    // beside the analysis' JSON: NAME.json -> NAME.provenance.json
    if let Some(json) = files.first().cloned() {
        let path = cnnlab::report::provenance::beside(&json);
        let mut record = provenance(device);
        // the dataset the analysis names (its JSON's `dataset`)
        record.dataset = std::fs::read(&json)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("dataset").and_then(|d| d.as_str()).map(String::from));
        record.write_to(&path).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    if let Some(page) = &out.report {
        report_page(std::slice::from_ref(dir), page)?;
    }
    Ok(())
}

/// A new run directory `runs/DATASET-SECONDS` (`-2`, `-3`, … after it where that is taken),
/// reserved by creating it empty: two experiments started in the same second, or at once, get
/// directories of their own. The caller removes it if it is still empty at the end
/// ([`ReservedDir`]).
pub(crate) fn default_run_dir(dataset: &DatasetSpec) -> ReservedDir {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = format!("{}-{secs}", dataset.name().replace([':', '/'], "_"));
    let runs = PathBuf::from("runs");
    // where `runs` cannot be made, the first name goes on to the run's own check, which says why
    if std::fs::create_dir_all(&runs).is_ok() {
        for n in 1..1000 {
            let dir = runs.join(if n == 1 { base.clone() } else { format!("{base}-{n}") });
            match std::fs::create_dir(&dir) {
                Ok(()) => return ReservedDir(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) => break,
            }
        }
    }
    ReservedDir(runs.join(base))
}

/// A run directory made empty up front; dropped, it is removed if nothing was written into it
/// (a command that failed before its first file leaves no empty directory behind).
pub(crate) struct ReservedDir(PathBuf);

impl ReservedDir {
    /// The directory, for the command's config.
    pub(crate) fn path(&self) -> PathBuf {
        self.0.clone()
    }
}

impl Drop for ReservedDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0); // fails, as it should, where the run wrote files
    }
}

/// After `reproduce` or `replay`: the table and JSON, the run's provenance in its directory,
/// then the HTML report if asked.
pub(crate) fn finish_reproduce(
    cfg: &ReproduceConfig,
    mut report: ReproduceReport,
    json: &Option<PathBuf>,
    page: &Option<PathBuf>,
) -> Result<()> {
    if let Some(dir) = &cfg.run_dir {
        let mut p = provenance(cfg.compute.device);
        p.dataset = Some(report.summary.dataset.clone());
        p.data_crc32 = Some(report.data_crc32.clone());
        p.seeds = Some(match report.seeds {
            1 => format!("{}", cfg.base_seed),
            n => format!("{}-{}", cfg.base_seed, cfg.base_seed + n as u64 - 1),
        });
        if let Err(e) = p.write(dir) {
            report.warnings.push(e.to_string());
        }
    }
    show(&report, json)?;
    warnings(&report.warnings)?;
    if let (Some(page), Some(dir)) = (page, &cfg.run_dir) {
        report_page(std::slice::from_ref(dir), page)?;
    }
    Ok(())
}

/// After `train`: the curve and JSON; a saved run also records what trained it (the command
/// that finished it, the machine, the device and its convolution choices), as a reproduce
/// directory does.
pub(crate) fn finish_train(cfg: &TrainRunConfig, report: &TrainReport, json: &Option<PathBuf>) -> Result<()> {
    let written = match &report.saved {
        // found finished by --resume: the record of the command that trained it stays
        Some(dir) if report.finished_before && dir.join(cnnlab::report::provenance::FILE).exists() => Ok(()),
        Some(dir) => {
            let mut p = provenance(cfg.compute.device);
            p.dataset = Some(report.dataset.clone());
            p.seeds = Some(cfg.seed.to_string());
            p.write(dir).with_context(|| format!("the run is saved in {}, but", dir.display()))
        }
        None => Ok(()),
    };
    show(report, json)?;
    written
}
