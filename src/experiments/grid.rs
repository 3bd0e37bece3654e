//! The grid runner every multi-run command shares: jobs in parallel as the device's policy says
//! ([`Device::run_jobs`]: one run per core on the CPU, several CUDA streams on a GPU), results
//! in job order, the first error returned; progress reporting; and the statistics over seeds
//! of a cell (re-exported from [`crate::report`]).

use crate::core::Device;
use crate::error::Result;
pub use crate::report::SeedStats;
use serde::{Deserialize, Serialize};

/// How a command reports what it is doing: training steps finished (from any thread), and
/// lines worth showing as they happen (a run that finished, …).
pub trait Progress: Sync {
    /// The work ahead, once it is known (after the data is loaded and the runs resolved).
    fn start(&self, _total_steps: u64) {}
    fn steps(&self, n: usize);
    fn note(&self, _line: &str) {}
}

/// A closure counts steps (and drops notes).
impl<F: Fn(usize) + Sync> Progress for F {
    fn steps(&self, n: usize) {
        self(n)
    }
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn steps(&self, _: usize) {}
}

/// Where and how runs compute: the device, TF32 on a GPU, and how many runs train at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Compute {
    pub device: Device,
    /// Let GPU matrix products use TF32.
    pub tf32: bool,
    /// Runs trained at once (None: the device's policy, see [`Device::run_jobs`]).
    pub parallel_runs: Option<usize>,
}

impl Compute {
    /// Opens the device (one clear error where it cannot be used).
    pub fn open(&self) -> Result<Device> {
        self.device.open(self.tf32)?;
        Ok(self.device)
    }
}

/// Runs `run` on every job as `compute` says (in parallel, results in job order; runs that
/// did not fit in memory beside others run again with fewer at once, noted to `progress`).
pub fn run_grid<J: Sync, T: Send>(
    compute: Compute,
    jobs: &[J],
    progress: &dyn Progress,
    run: impl Fn(&J) -> Result<T> + Sync + Send,
) -> Result<Vec<T>> {
    compute.device.run_jobs(jobs, compute.parallel_runs, run, &|line| progress.note(line))?.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_keeps_job_order_and_returns_the_first_error() {
        let jobs: Vec<u32> = (0..20).collect();
        let out = run_grid(Compute::default(), &jobs, &Silent, |&j| Ok(j * 2)).unwrap();
        assert_eq!(out, jobs.iter().map(|j| j * 2).collect::<Vec<_>>());
        let three = Compute { parallel_runs: Some(3), ..Compute::default() };
        let e = run_grid(
            three,
            &jobs,
            &Silent,
            |&j| if j == 7 { Err(crate::Error::Config("seven".into())) } else { Ok(j) },
        );
        assert!(e.unwrap_err().to_string().contains("seven"));
    }
}
