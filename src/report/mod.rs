//! Reports: the accuracy table printed beside the published numbers, the JSON summary, and
//! crash-safe file writing.

pub mod page;
pub mod provenance;
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

/// Refuses to write to `path` through a symbolic link (the link would be replaced by a file,
/// or the write would land somewhere the user did not name).
fn refuse_link(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::Config(format!(
            "{} is a symbolic link: cnnlab writes only to plain files (name the target instead)",
            path.display()
        ))),
        Ok(m) if m.is_dir() => Err(Error::Config(format!("{} is a directory, not a file", path.display()))),
        _ => Ok(()),
    }
}

/// Checks, before any work, that a file can be written at `path`: its directory exists (or
/// can be made) and takes a new file, and `path` is neither a link nor a directory.
pub fn check_writable_file(path: &Path) -> Result<()> {
    refuse_link(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    check_writable_dir(dir)
}

/// Checks, before any work, that `dir` exists or can be made and takes a new file. A missing
/// `dir` is not made here (a command that fails later leaves no empty directory behind): its
/// nearest existing ancestor must be a directory that takes a new file, and the writers make
/// `dir` when they write into it.
pub fn check_writable_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Config(format!("{} is a file, not a directory", dir.display())));
    }
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Err(Error::Config(format!(
            "{} cannot be made: {} is a file, not a directory",
            dir.display(),
            existing.display()
        )));
    }
    let probe = existing.join(format!(".cnnlab-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| Error::io("writing into", existing, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes a multi-file output as a whole: `fill` writes into a fresh temporary directory
/// beside `dir`, which then replaces `dir` by a rename (an existing `dir` is removed first, and
/// only when `replace` allows it). A failure leaves `dir` as it was and no temporary behind.
pub fn write_dir_atomic(dir: &Path, replace: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let parent = match dir.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    ensure_dir(&parent)?;
    let tmp = parent.join(temp_name(&name));
    // left by a killed process whose pid this one reuses
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        ensure_dir(&tmp)?;
        fill(&tmp)?;
        move_dir(&tmp, dir, replace)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Renames the finished directory `from` to `to`; an existing `to` is removed first, and only
/// when `replace` allows it.
pub fn move_dir(from: &Path, to: &Path, replace: bool) -> Result<()> {
    if to.exists() {
        if !replace {
            return Err(Error::Config(format!("{} already exists", to.display())));
        }
        std::fs::remove_dir_all(to).map_err(|e| Error::io("replacing", to, e))?;
    }
    std::fs::rename(from, to).map_err(|e| Error::io("renaming into", to, e))
}

/// A temporary name beside `name`, unique to this process and call: two threads writing one
/// path (runs that wrote one curve file did) each rename a whole file of their own, the later
/// one winning, instead of one renaming the other's half-written file or finding it gone.
fn temp_name(name: &str) -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{name}.tmp-{}-{call}", std::process::id())
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// an interrupted write never leaves a truncated file where a good one was; makes the
/// directory if it is missing. Never writes through a symbolic link.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    refuse_link(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    ensure_dir(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(temp_name(&name));
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

/// Largest config a user names that is read (`replay`'s reproduce.json, a run's run.json: a few
/// kilobytes each).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads the text of a file a user names, refusing more than `limit` bytes. The limit is
/// read, not looked up: `/dev/zero`, a pipe or a growing file report no size beforehand, and
/// reading one whole would fill the memory.
pub fn read_text_at_most(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("more than {limit} bytes, far more than such a file holds"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
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
        // under a file no directory can be made: the write fails and leaves no temp file
        assert!(write_atomic(&p.join("b.json"), b"x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
        // a link is not written through, and the file it points to is untouched
        #[cfg(unix)]
        {
            let link = dir.path().join("link.json");
            std::os::unix::fs::symlink(&p, &link).unwrap();
            assert!(write_atomic(&link, b"three").unwrap_err().to_string().contains("symbolic link"));
            assert_eq!(std::fs::read(&p).unwrap(), b"two");
            assert!(check_writable_file(&link).is_err());
        }
        // a missing directory passes the check without being made; the write makes it
        let missing = dir.path().join("missing").join("deeper");
        let bad = missing.join("b.json");
        assert!(check_writable_file(&bad).is_ok());
        assert!(check_writable_dir(&missing).is_ok());
        assert!(!dir.path().join("missing").exists(), "the check made no directory");
        write_atomic(&bad, b"x").unwrap();
        assert_eq!(std::fs::read(&bad).unwrap(), b"x");
        assert!(check_writable_dir(&p).unwrap_err().to_string().contains("is a file"));
        let e = check_writable_dir(&p.join("sub")).unwrap_err().to_string();
        assert!(e.contains("cannot be made") && e.contains("is a file"), "{e}");
    }

    /// Threads writing one path at once each leave a whole file: the last rename wins, and no
    /// temporary is left (with one temporary name per process, a rename found the file gone).
    #[test]
    fn threads_writing_one_file_leave_one_whole_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("curve.jsonl");
        let versions: Vec<Vec<u8>> = (0..4u8).map(|t| vec![b'a' + t; 100_000]).collect();
        std::thread::scope(|s| {
            for v in &versions {
                let p = &p;
                s.spawn(move || (0..50).for_each(|_| write_atomic(p, v).unwrap()));
            }
        });
        assert!(versions.contains(&std::fs::read(&p).unwrap()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary left");
    }

    #[test]
    fn directories_are_replaced_whole_or_not_at_all() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        write_dir_atomic(&dir, false, |d| write_atomic(&d.join("a"), b"1")).unwrap();
        // a failing fill leaves the old directory as it was, and no temporary behind
        let e = write_dir_atomic(&dir, true, |d| {
            write_atomic(&d.join("a"), b"2")?;
            Err(Error::Config("disk full".into()))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // without permission to replace, an existing directory stays
        assert!(write_dir_atomic(&dir, false, |d| write_atomic(&d.join("a"), b"3")).is_err());
        write_dir_atomic(&dir, true, |d| write_atomic(&d.join("b"), b"4")).unwrap();
        assert!(!dir.join("a").exists() && dir.join("b").exists(), "replaced as a whole");
    }
}
