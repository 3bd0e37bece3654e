//! Limits checked before any work: what a run would allocate is compared with the memory the
//! machine has, so that an absurd size is one clear error instead of an abort in the allocator.

use crate::error::{Error, Result};

/// Memory this machine has available for a run: the kernel's estimate (`MemAvailable`), or
/// `CNNLAB_MEMORY` where that is set and smaller (None where neither can be read; a malformed
/// `CNNLAB_MEMORY` counts as unset here and is reported by [`memory_cap`]).
pub fn available_bytes() -> Option<f64> {
    let have = (|| {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024.0)
    })();
    match (have, memory_cap().ok().flatten()) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

/// The memory cnnlab may plan with on this machine, from `CNNLAB_MEMORY` (bytes, or a number
/// with K, M, G or T for powers of 1024: `8G`); None where it is unset. For a machine shared
/// with other work, and for tests.
pub fn memory_cap() -> Result<Option<f64>> {
    match std::env::var("CNNLAB_MEMORY") {
        Ok(text) => parse_memory(&text).map(Some),
        Err(_) => Ok(None),
    }
}

/// Bytes from `8G`-style text (see [`memory_cap`]).
fn parse_memory(text: &str) -> Result<f64> {
    let t = text.trim().to_ascii_uppercase();
    // 8G, 8GB and 8GIB alike
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B').filter(|r| r.ends_with(['K', 'M', 'G', 'T'])))
        .unwrap_or(&t);
    let (digits, scale) = match t.chars().last().and_then(|c| "KMGT".find(c)) {
        Some(power) => (&t[..t.len() - 1], 1024f64.powi(power as i32 + 1)),
        None => (t, 1.0),
    };
    match digits.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(Error::Config(format!(
            "CNNLAB_MEMORY={text:?}: give the memory cnnlab may use as bytes or with K, M, G or T (e.g. 8G)"
        ))),
    }
}

/// Refuses `need` bytes (for `what`) when the machine does not have them available.
pub fn check_fits(what: &str, need: f64) -> Result<()> {
    memory_cap()?;
    check_fits_in(available_bytes(), what, need)
}

/// Refuses `need` bytes (for `what`) beyond `have` (None: unknown, nothing refused).
pub fn check_fits_in(have: Option<f64>, what: &str, need: f64) -> Result<()> {
    match have {
        Some(have) if need > have => {
            Err(Error::Config(format!("{what} needs about {} of memory; {} are available", size(need), size(have))))
        }
        _ => Ok(()),
    }
}

/// `bytes` in GiB, or in MiB under one GiB (a small GPU, the CUDA emulator, a capped host).
fn size(bytes: f64) -> String {
    let gib = (1u64 << 30) as f64;
    if bytes >= gib {
        format!("{:.1} GiB", bytes / gib)
    } else {
        format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
    }
}

/// The memory promised to the runs this process trains at once, on the host or on the GPU: a
/// run is admitted only where its estimate fits beside theirs in what was available when the
/// first of them started (their own allocations then do not count against the next run twice).
#[derive(Debug)]
struct Ledger {
    runs: usize,
    reserved: f64,
    /// Available memory when the runs now in flight began (None: unknown, nothing refused).
    baseline: Option<f64>,
}

impl Ledger {
    const EMPTY: Ledger = Ledger { runs: 0, reserved: 0.0, baseline: None };

    /// Admits `need` bytes for `what`, reading the machine's memory (`have`) when no run is in
    /// flight (see [`reserve_host`] for the refusals).
    fn admit(&mut self, have: impl FnOnce() -> Option<f64>, what: &str, need: f64) -> Result<()> {
        if self.runs == 0 {
            self.baseline = have();
        }
        if let Some(base) = self.baseline {
            if self.runs == 0 || need > base {
                check_fits_in(Some(base), what, need)?;
            } else if self.reserved + need > base {
                return Err(Error::DeviceMemory(format!(
                    "{what} needs about {} of memory beside the {} of the {} run(s) in flight; {} were available",
                    size(need),
                    size(self.reserved),
                    self.runs,
                    size(base)
                )));
            }
        }
        self.runs += 1;
        self.reserved += need;
        Ok(())
    }

    fn release(&mut self, bytes: f64) {
        self.runs = self.runs.saturating_sub(1);
        self.reserved -= bytes;
        if self.runs == 0 {
            *self = Ledger::EMPTY;
        }
    }
}

type Books = std::sync::Mutex<Ledger>;

/// The host's memory, and the GPU's (one device a process).
static HOST: Books = std::sync::Mutex::new(Ledger::EMPTY);
static GPU: Books = std::sync::Mutex::new(Ledger::EMPTY);

fn open(books: &'static Books) -> std::sync::MutexGuard<'static, Ledger> {
    // each update is one step, so the numbers stay consistent even if a holder panicked
    books.lock().unwrap_or_else(|e| e.into_inner())
}

/// Memory promised to a run until it is dropped (see [`reserve_host`], [`reserve_gpu`]).
#[derive(Debug)]
pub struct Reservation {
    held: Option<(f64, &'static Books)>,
}

impl Reservation {
    /// A reservation of nothing (runs whose memory no ledger tracks).
    pub fn none() -> Self {
        Reservation { held: None }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some((bytes, books)) = self.held.take() {
            open(books).release(bytes);
        }
    }
}

/// Promises `need` bytes of host memory to a run (`what`) for as long as the reservation
/// lives. Refused with [`Error::Config`] where the run would not fit even alone, and with
/// [`Error::DeviceMemory`] where it does not fit beside the runs already in flight: those
/// are run again with fewer at once ([`crate::core::Device::run_jobs`]), so that a table of
/// one run per core on a machine with little memory takes longer instead of being killed.
pub fn reserve_host(what: &str, need: f64) -> Result<Reservation> {
    memory_cap()?;
    open(&HOST).admit(available_bytes, what, need)?;
    Ok(Reservation { held: Some((need, &HOST)) })
}

/// Promises `need` bytes of the GPU's memory to a run (`what`), as [`reserve_host`] does the
/// host's, against `free` (the GPU's free memory, read when no run is in flight), so that the
/// runs of a table that would not fit on the GPU together wait for a later round instead of
/// starting together and running out of memory part way.
pub fn reserve_gpu(free: impl FnOnce() -> Option<f64>, what: &str, need: f64) -> Result<Reservation> {
    open(&GPU).admit(free, what, need)?;
    Ok(Reservation { held: Some((need, &GPU)) })
}

/// Largest count of training steps a run may ask for (10^8: days even for the smallest model).
pub const MAX_STEPS: usize = 100_000_000;
/// Largest batch.
pub const MAX_BATCH: usize = 1 << 20;
/// Largest count of seeds (or runs of one cell) in one experiment.
pub const MAX_SEEDS: usize = 10_000;
/// Most training runs one experiment or sweep makes: a grid's axes multiply, and a short list
/// of flags beyond this is a slip whose runs' descriptions alone could fill the memory.
pub const MAX_RUNS: usize = 100_000;

/// Refuses a list of `what` that names a value twice: the same run would be trained twice,
/// both writing one curve file, and a table would count the copy as another seed.
pub fn check_distinct<T: Eq + std::hash::Hash + std::fmt::Display>(what: &str, list: &[T]) -> Result<()> {
    check_distinct_by(what, list, |v| v)
}

/// [`check_distinct`] comparing `key(value)` (floats: their bits).
pub fn check_distinct_by<'a, T: std::fmt::Display, K: Eq + std::hash::Hash>(
    what: &str,
    list: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Result<()> {
    // a set, not a scan of the values before each: a long list must not take minutes
    let mut seen = std::collections::HashSet::with_capacity(list.len());
    match list.iter().find(|&v| !seen.insert(key(v))) {
        Some(v) => Err(Error::Config(format!("the {what} list names {v} twice"))),
        None => Ok(()),
    }
}

/// Refuses a grid (`what`: "the sweep") of more than [`MAX_RUNS`] runs, from its axes' counts
/// (`(axis, count)`, multiplied without overflow), before anything is built.
pub fn check_run_count(what: &str, axes: &[(&str, usize)]) -> Result<()> {
    let runs = axes.iter().try_fold(1usize, |n, &(_, k)| n.checked_mul(k).filter(|&n| n <= MAX_RUNS));
    if runs.is_some() {
        return Ok(());
    }
    let named: Vec<String> = axes.iter().filter(|a| a.1 > 1).map(|(what, k)| format!("{k} {what}")).collect();
    Err(Error::Config(format!("{what} makes more than {MAX_RUNS} runs ({}); split it up", named.join(" x "))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_values_and_grids_beyond_the_run_limit_are_refused() {
        assert!(super::check_distinct("models", &["cnn", "mlp"]).is_ok());
        let e = super::check_distinct("sizes", &[1000, 2000, 1000]).unwrap_err().to_string();
        assert!(e.contains("the sizes list names 1000 twice"), "{e}");
        let long: Vec<usize> = (0..super::MAX_RUNS).collect();
        assert!(super::check_distinct("sizes", &long).is_ok());
        assert!(super::check_run_count("the table", &[("models", 5), ("conditions", 2), ("seeds", 10_000)]).is_ok());
        let e =
            super::check_run_count("the table", &[("models", 6), ("conditions", 3), ("seeds", 10_000)]).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("the table makes more than 100000 runs (6 models x 3 conditions x 10000 seeds)"), "{e}");
        // a product that overflows is refused, not wrapped
        let e = super::check_run_count("the curve", &[("sizes", 2), ("seeds", usize::MAX)]).unwrap_err().to_string();
        assert!(e.contains(&format!("2 sizes x {} seeds", usize::MAX)), "{e}");
    }

    #[test]
    fn sizes_beyond_the_memory_given_are_refused_and_unknown_memory_refuses_nothing() {
        let e = super::check_fits_in(Some(1e9), "the run", 2e9).unwrap_err().to_string();
        assert!(e.contains("the run needs about 1.9 GiB of memory; 953.7 MiB are available"), "{e}");
        assert!(super::check_fits_in(Some(3e9), "the run", 2e9).is_ok());
        let e = super::check_fits_in(Some(3e6), "the run", 6e6).unwrap_err().to_string();
        assert!(e.contains("the run needs about 5.7 MiB of memory; 2.9 MiB are available"), "{e}");
        assert!(super::check_fits_in(None, "the run", 1e30).is_ok());
    }

    /// The ledger admits runs while their estimates fit together, refuses the next as one
    /// to run later (not as too large), takes it once memory is given back, refuses a run too
    /// large for the machine as a configuration error, and reads the machine's memory again
    /// once no run is in flight.
    #[test]
    fn runs_are_admitted_while_their_estimates_fit_together() {
        use super::Ledger;
        use crate::Error;
        let mut l = Ledger::EMPTY;
        let have = || Some(100.0);
        l.admit(have, "run a", 40.0).unwrap();
        l.admit(|| panic!("read only when no run is in flight"), "run b", 40.0).unwrap();
        match l.admit(have, "run c", 40.0) {
            Err(Error::DeviceMemory(m)) => assert!(m.contains("run c") && m.contains("2 run(s)"), "{m}"),
            other => panic!("a third run beside two: {other:?}"),
        }
        l.release(40.0);
        l.admit(have, "run c", 40.0).unwrap();
        match l.admit(have, "run d", 200.0) {
            Err(Error::Config(m)) => assert!(m.contains("run d needs about"), "{m}"),
            other => panic!("a run larger than the machine: {other:?}"),
        }
        l.release(40.0);
        l.release(40.0);
        assert_eq!((l.runs, l.reserved, l.baseline), (0, 0.0, None));
        assert!(matches!(l.admit(have, "run e", 200.0), Err(Error::Config(_))));
        l.admit(|| Some(300.0), "run e", 200.0).unwrap();
        let mut unknown = Ledger::EMPTY;
        for _ in 0..3 {
            unknown.admit(|| None, "a run", 1e30).unwrap();
        }
    }

    #[test]
    fn the_memory_cap_reads_sizes_with_units() {
        // parsed through the same function the variable goes to (the variable itself is
        // process-wide, so the cases go through a helper)
        let g = 1024f64.powi(3);
        for (text, want) in [
            ("1024", 1024.0),
            ("8G", 8.0 * g),
            ("8 GB", 8.0 * g),
            ("8GiB", 8.0 * g),
            ("1.5k", 1536.0),
            ("2t", 2.0 * g * 1024.0),
        ] {
            assert_eq!(super::parse_memory(text).ok(), Some(want), "{text}");
        }
        for bad in ["", "G", "-1G", "8X", "8B", "nan", "0", "eight"] {
            assert!(super::parse_memory(bad).is_err(), "{bad:?}");
        }
    }
}
