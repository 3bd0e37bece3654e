//! Typed errors of the library (the CLI adds context to them).

use std::path::PathBuf;

/// Everything that can go wrong in cnnlab that a user can cause or meet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot be used (zero steps, unknown model, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A file that exists but does not hold what it should.
    #[error("malformed data in {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// A dataset that is not on this machine.
    #[error("dataset not found: {0}")]
    MissingData(String),
    /// A saved run, mask or other input file that is not where it was said to be.
    #[error("{0}")]
    NotFound(String),
    /// Training diverged (NaN or infinite loss).
    #[error("training diverged: loss became {loss} at step {step}; try a smaller learning rate")]
    Diverged { step: usize, loss: f32 },
    /// An I/O failure, with the path it concerned.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A compute device that cannot be used (no driver, library or GPU; a kernel that does not
    /// compile; a backend not built in).
    #[error("device: {0}")]
    Device(String),
    /// The GPU ran out of memory (an allocation failed), or a run's estimate does not fit in
    /// the host's or the GPU's memory beside the runs in flight
    /// ([`crate::limits::reserve_host`], [`crate::limits::reserve_gpu`]). Runs that met it beside other runs
    /// are run again with fewer at once ([`crate::core::Device::run_jobs`]).
    #[error("device: {0}")]
    DeviceMemory(String),
    /// A failure inside cnnlab itself (a bug), caught where a sweep records it.
    #[error("internal error: {0}")]
    Internal(String),
    /// JSON that could not be read or written.
    #[error("JSON error in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message a panic carried (its payload), or "unknown failure".
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown failure".into())
}

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }
}
