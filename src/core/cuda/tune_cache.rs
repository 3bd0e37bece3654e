//! Tuned convolution choices kept between processes (`conv_tune.rs`), so that a seed gives the
//! same numbers in every process on one machine: the first process to meet a convolution
//! shape times it and writes its choice here; later ones read it instead of timing. One JSON
//! object, a line per choice; its keys name the GPU, the cuDNN version, the math (fp32 or
//! TF32) and the shape and pass, so one file serves several GPUs and settings. Deleting it
//! makes the next process time again.

use crate::error::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where the file is (None: choices live and die with the process).
static PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The file that `CNNLAB_TUNE_CACHE` names (`0`: none), else
/// `$XDG_CACHE_HOME/cnnlab/convolutions.json`, else `~/.cache/cnnlab/convolutions.json`.
pub(crate) fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CNNLAB_TUNE_CACHE") {
        return (!p.is_empty() && p != "0").then(|| p.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("cnnlab").join("convolutions.json"))
}

pub(crate) fn set_path(path: Option<PathBuf>) {
    *PATH.lock().unwrap_or_else(|e| e.into_inner()) = path;
}

pub(crate) fn path() -> Option<PathBuf> {
    PATH.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The file's choices (none where it is missing or unreadable: they are timed again, and the
/// next write replaces a malformed file).
fn read(path: &Path) -> BTreeMap<String, String> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The choice kept under `key`.
pub(crate) fn lookup(key: &str) -> Option<String> {
    read(&path()?).remove(key)
}

/// Keeps `value` under `key`: the file is read, the entry added and the whole written to a
/// temporary file and renamed over it, so a reader never sees half a file. Two processes
/// writing at once can lose one entry, which the next process then times again.
pub(crate) fn store(key: &str, value: &str) -> Result<()> {
    let Some(path) = path() else { return Ok(()) };
    let mut all = read(&path);
    all.insert(key.into(), value.into());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::report::ensure_dir(dir)?;
    }
    crate::report::write_json(&path, &all)
}
