//! Reports: the accuracy table printed beside the published numbers, the JSON summary, and
//! crash-safe file writing.

mod stats;
mod table;

pub use stats::SeedStats;
pub use table::{accuracy_table, Row, Summary};

use crate::error::{Error, Result};
use std::io::Write;
use std::path::Path;

/// A report's files: its JSON and plots, written into `dir` (created if missing); returns
/// the paths written.
pub trait Artifacts {
    fn write(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>>;
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// an interrupted write never leaves a truncated file where a good one was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io("writing", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Serialises `value` as pretty JSON to `path` (atomically).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| Error::Json { path: path.into(), source: e })?;
    write_atomic(path, &text)
}

/// Creates `dir` (and parents) or says why it cannot.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let bad = dir.path().join("missing-dir").join("b.json");
        assert!(write_atomic(&bad, b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
    }
}
