//! The terminal side: a progress bar that the library reports to, and writing reports.

use anyhow::{Context, Result};
use cnnlab::data::DatasetSpec;
use cnnlab::experiments::Progress;
use cnnlab::report::{write_json, Artifacts};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The terminal's progress: a bar (hidden with --quiet); notes above it, or on stderr.
pub(crate) struct Bar(pub(crate) ProgressBar);

impl Bar {
    pub(crate) fn new(quiet: bool) -> Self {
        if quiet {
            return Bar(ProgressBar::hidden());
        }
        let pb = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta}")
        {
            pb.set_style(style);
        }
        Bar(pb)
    }
}

impl Progress for Bar {
    fn start(&self, total_steps: u64) {
        self.0.set_length(total_steps);
    }
    fn steps(&self, n: usize) {
        self.0.inc(n as u64);
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

pub(crate) fn save_json<T: serde::Serialize>(path: &Option<PathBuf>, value: &T) -> Result<()> {
    if let Some(path) = path {
        write_json(path, value).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Prints a report, writes its files into `out` and names them.
pub(crate) fn finish(report: &(impl std::fmt::Display + Artifacts), out: &Path) -> Result<()> {
    print!("{report}");
    let files = report.write(out).with_context(|| format!("writing into {}", out.display()))?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}

pub(crate) fn default_run_dir(dataset: &DatasetSpec) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("{}-{secs}", dataset.name().replace([':', '/'], "_")))
}
