//! Limits checked before any work: what a run would allocate is compared with the memory the
//! machine has, so that an absurd size is one clear error instead of an abort in the allocator.

use crate::error::{Error, Result};

/// Memory this machine has available for a run (None where it cannot be read).
pub fn available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Refuses `need` bytes (for `what`) when the machine does not have them available.
pub fn check_fits(what: &str, need: f64) -> Result<()> {
    check_fits_in(available_bytes(), what, need)
}

/// Refuses `need` bytes (for `what`) beyond `have` (None: unknown, nothing refused).
pub fn check_fits_in(have: Option<f64>, what: &str, need: f64) -> Result<()> {
    match have {
        Some(have) if need > have => {
            // in GiB, or MiB where both are under one GiB (a small GPU, or the CUDA emulator)
            let (unit, name) =
                if need.max(have) >= (1u64 << 30) as f64 { (1u64 << 30, "GiB") } else { (1 << 20, "MiB") };
            let (need, have) = (need / unit as f64, have / unit as f64);
            Err(Error::Config(format!("{what} needs about {need:.1} {name} of memory; {have:.1} {name} are available")))
        }
        _ => Ok(()),
    }
}

/// Largest count of training steps a run may ask for (10^8: days even for the smallest model).
pub const MAX_STEPS: usize = 100_000_000;
/// Largest batch.
pub const MAX_BATCH: usize = 1 << 20;
/// Largest count of seeds (or runs of one cell) in one experiment.
pub const MAX_SEEDS: usize = 10_000;

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_beyond_the_memory_given_are_refused_and_unknown_memory_refuses_nothing() {
        let e = super::check_fits_in(Some(1e9), "the run", 2e9).unwrap_err().to_string();
        assert!(e.contains("the run needs about 1.9 GiB of memory; 0.9 GiB are available"), "{e}");
        assert!(super::check_fits_in(Some(3e9), "the run", 2e9).is_ok());
        let e = super::check_fits_in(Some(3e6), "the run", 6e6).unwrap_err().to_string();
        assert!(e.contains("the run needs about 5.7 MiB of memory; 2.9 MiB are available"), "{e}");
        assert!(super::check_fits_in(None, "the run", 1e30).is_ok());
    }
}
