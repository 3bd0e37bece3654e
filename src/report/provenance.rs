//! What makes a result citable: the cnnlab version and git commit, the command line, the
//! machine, the device, the data and its checksum, the wall time. Written as `provenance.json`
//! beside a run's or an analysis' files; the HTML report shows it.

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file a command writes into its run or analysis directory.
pub const FILE: &str = "provenance.json";

/// The machine a result was computed on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub os: String,
}

impl Machine {
    /// This machine (the CPU model from /proc/cpuinfo where there is one).
    pub fn this() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Machine { cpu, cores, os: std::env::consts::OS.to_string() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub cnnlab_version: String,
    pub git_commit: String,
    /// The command line, as typed.
    pub command: String,
    /// When it started (UTC, ISO 8601).
    pub started: String,
    pub wall_seconds: f64,
    pub machine: Machine,
    pub device: String,
    pub dataset: Option<String>,
    /// CRC-32 of the examples and labels as trained on (train and test).
    pub data_crc32: Option<String>,
    pub seeds: Option<String>,
    /// How the device ran the ops where it chose (a GPU's convolution route and, per shape
    /// and pass, the way it took), one line each; none on the CPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_choices: Vec<String>,
}

impl Provenance {
    /// A record for a command that started at `started_unix` and ran on `device`.
    pub fn now(command: &[String], started_unix: f64, device: &str) -> Self {
        let wall = now_unix() - started_unix;
        Provenance {
            cnnlab_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("CNNLAB_GIT_COMMIT").into(),
            command: command.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" "),
            started: utc(started_unix),
            wall_seconds: wall.max(0.0),
            machine: Machine::this(),
            device: device.into(),
            dataset: None,
            data_crc32: None,
            seeds: None,
            backend_choices: Vec::new(),
        }
    }

    /// Writes `dir/provenance.json` (a run directory's record).
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_to(&dir.join(FILE))
    }

    pub fn write_to(&self, path: &Path) -> Result<()> {
        crate::report::write_json(path, self)
    }

    /// The record in `dir`, if it has one.
    pub fn read(dir: &Path) -> Option<Self> {
        Self::read_from(&dir.join(FILE))
    }

    pub fn read_from(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// The record of an analysis' output `NAME.json`: `NAME.provenance.json` beside it (several
/// analyses may share a directory).
pub fn beside(json: &Path) -> std::path::PathBuf {
    let stem = json.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    json.with_file_name(format!("{stem}.provenance.json"))
}

/// Seconds since 1970, now.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `arg` as a shell reads it back (quoted where it must be).
fn shell_word(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Seconds since 1970 as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_and_shell_words() {
        assert_eq!(super::utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_795_799_182.0), "2026-11-27 17:06:22 UTC");
        assert_eq!(super::utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::shell_word("--steps"), "--steps");
        assert_eq!(super::shell_word("a b"), "'a b'");
        assert_eq!(super::shell_word("it's"), "'it'\\''s'");
    }
}
