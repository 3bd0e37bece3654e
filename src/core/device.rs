//! Which backend runs a computation: `cpu`, or `cuda[:N]` where cnnlab was built with the
//! `cuda` feature. Models, training, experiments and analyses are generic over the backend;
//! [`with_backend!`](crate::with_backend) picks the type for a [`Device`] value at run time.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A compute device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    /// The CPU backend (all cores through rayon).
    #[default]
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Device::Cuda(n)),
                _ => Err(Error::Config(format!("unknown device '{s}' (use cpu, cuda or cuda:N)"))),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Device {
    /// Prepares the device (once per process): finds the driver and libraries, opens the GPU
    /// and compiles the kernels. `tf32` lets GEMMs use TF32 tensor cores (GPU only).
    pub fn open(&self, tf32: bool) -> Result<()> {
        match *self {
            Device::Cpu if tf32 => Err(Error::Config("--tf32 applies to CUDA devices only".into())),
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => crate::core::cuda::init(crate::core::cuda::Settings { ordinal, tf32 }),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(Self::not_built()),
        }
    }

    /// The error for a CUDA device in a build without the `cuda` feature.
    pub fn not_built() -> Error {
        Error::Device(
            "this cnnlab was built without CUDA support; rebuild with `cargo build --release --features cuda`".into(),
        )
    }

    /// How this device ran the ops where it chose (a GPU's convolution route and choices so
    /// far, one line each; nothing on the CPU), for provenance records and profiles.
    pub fn choices(&self) -> Vec<String> {
        use crate::core::backend::BackendBase;
        // a CUDA device in a build without CUDA made no choices
        crate::with_backend!(*self, B => Ok::<_, Error>(B::choices())).unwrap_or_default()
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// What `cnnlab devices` prints: a line per usable device, CPU first, then why no GPU can
    /// be used where none can.
    pub fn list() -> String {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut out = format!("cpu     {cpus} threads\n");
        #[cfg(feature = "cuda")]
        let gpus = crate::core::cuda::list_devices();
        #[cfg(not(feature = "cuda"))]
        let gpus: Result<Vec<String>> = Err(Self::not_built());
        match gpus {
            Ok(gpus) if !gpus.is_empty() => {
                gpus.iter().for_each(|g| out += &format!("{g}\n"));
                #[cfg(feature = "cuda")]
                {
                    out += &format!("        {}\n", crate::core::cuda::convolution_route());
                    out += &format!("        {}\n", crate::core::cuda::gemm_route());
                }
            }
            Ok(_) => out += "cuda: no GPU found\n(no GPU usable: runs go to the CPU)\n",
            Err(e) => out += &format!("cuda: {e}\n(no GPU usable: runs go to the CPU)\n"),
        }
        out
    }
}

/// Runs trained at once on one GPU unless told otherwise (`reproduce --parallel-runs`): eight
/// runs of the full CIFAR-10 table at once fit in an H200's memory with room to spare.
pub const DEFAULT_GPU_RUNS: usize = 8;

impl Device {
    /// Runs independent jobs (training runs) on this device and returns `f(job)` for each, in
    /// job order. How they share the device is its policy: the CPU runs one job per core,
    /// each single-threaded inside (ops split across threads only when there are fewer jobs
    /// than cores: small models use two cores worse than two runs do); a GPU runs
    /// [`DEFAULT_GPU_RUNS`] at once, each on its own host thread and so its own CUDA stream,
    /// because one small network cannot fill a GPU. `parallel` overrides how many run at once.
    ///
    /// Jobs that did not fit in the host's or the GPU's memory beside the runs in flight (their
    /// estimates: see [`crate::core::backend::BackendBase::admit_run`]), or ran out of the
    /// GPU's all the same ([`Error::DeviceMemory`]), are run again, half as many at once, down
    /// to one at a time (a run's numbers do not depend on what runs beside it); `note` is told
    /// each time, with the first one's reason. The error of a job that ran out of memory alone
    /// is its result.
    pub fn run_jobs<J: Sync, T: Send>(
        &self,
        jobs: &[J],
        parallel: Option<usize>,
        f: impl Fn(&J) -> Result<T> + Sync + Send,
        note: &(dyn Fn(&str) + Sync),
    ) -> Result<Vec<Result<T>>> {
        use crate::core::cpu::sharing_the_pool;
        use rayon::prelude::*;
        use std::sync::{atomic::AtomicUsize, atomic::Ordering, Arc};
        // each job among the `unfinished` ones of its round: ops on one thread while they are
        // at least as many as the pool's threads, split across the pool once fewer remain
        let shared = |j: &J, unfinished: &Arc<AtomicUsize>| {
            let out = sharing_the_pool(unfinished, || f(j));
            unfinished.fetch_sub(1, Ordering::Relaxed);
            self.after_job();
            out
        };
        let cpu = matches!(self, Device::Cpu);
        let mut at_once = match (parallel, self) {
            (Some(n), _) => n.max(1),
            (None, Device::Cuda(_)) => DEFAULT_GPU_RUNS,
            (None, Device::Cpu) => rayon::current_num_threads(),
        };
        let mut out: Vec<Option<Result<T>>> = (0..jobs.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        let mut first = true;
        while !pending.is_empty() {
            at_once = at_once.min(pending.len());
            let results: Vec<Result<T>> = if cpu && parallel.is_none() {
                // the CPU's policy: every job on the global pool, one per core at a time; after
                // runs did not fit in memory beside others, groups of `at_once` there, so that
                // each run's ops may use the cores the others leave
                let group = if first { pending.len() } else { at_once };
                let mut results = Vec::with_capacity(pending.len());
                for group in pending.chunks(group) {
                    let unfinished = Arc::new(AtomicUsize::new(group.len()));
                    results.extend(group.par_iter().map(|&i| shared(&jobs[i], &unfinished)).collect::<Vec<_>>());
                }
                results
            } else {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(at_once)
                    .start_handler(|_| crate::core::cpu::flush_denormals())
                    .build()
                    .map_err(|e| Error::Config(format!("cannot start {at_once} threads for runs: {e}")))?;
                let unfinished = Arc::new(AtomicUsize::new(pending.len()));
                pool.install(|| pending.par_iter().with_max_len(1).map(|&i| shared(&jobs[i], &unfinished)).collect())
            };
            first = false;
            let (mut again, mut why) = (Vec::new(), None);
            for (&i, r) in pending.iter().zip(results) {
                match r {
                    Err(Error::DeviceMemory(m)) if at_once > 1 => {
                        why.get_or_insert(m);
                        again.push(i)
                    }
                    r => out[i] = Some(r),
                }
            }
            if let Some(why) = why {
                at_once /= 2;
                let runs = if again.len() == 1 { "1 run" } else { &format!("{} runs", again.len()) };
                let what = if cpu { "memory" } else { "GPU memory" };
                // the first one's reason: its estimate beside the others', or the GPU's failure
                note(&format!("{runs} did not fit in {what} beside others: running again, {at_once} at once ({why})"));
            }
            pending = again;
        }
        let missing = || Err(Error::Internal("a job was not run".into()));
        Ok(out.into_iter().map(|r| r.unwrap_or_else(missing)).collect())
    }

    /// After each job on its thread: a GPU thread gives back its scratch memory, which other
    /// runs may need while this thread waits or after it ends.
    fn after_job(&self) {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(_) = self {
            crate::core::cuda::release_thread_scratch();
        }
    }
}

/// Evaluates `$body` with the type alias `$B` set to the backend of `$device` (an opened
/// [`Device`]). In a build without CUDA a CUDA device yields `Err(Device::not_built())`.
#[macro_export]
macro_rules! with_backend {
    ($device:expr, $B:ident => $body:expr) => {
        match $device {
            $crate::core::Device::Cpu => {
                #[allow(dead_code)]
                type $B = $crate::core::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::core::Device::Cuda(_) => {
                #[allow(dead_code)]
                type $B = $crate::core::Cuda;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::core::Device::Cuda(_) => Err($crate::core::Device::not_built().into()),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1"] {
            assert!(bad.parse::<Device>().is_err(), "{bad}");
        }
    }

    #[test]
    fn jobs_come_back_in_order_whatever_the_concurrency() {
        let jobs: Vec<u64> = (0..13).collect();
        let want: Vec<u64> = jobs.iter().map(|j| j * j).collect();
        for parallel in [None, Some(1), Some(3), Some(64)] {
            let out = Device::Cpu.run_jobs(&jobs, parallel, |j| Ok(j * j), &|_| {}).unwrap();
            assert_eq!(out.into_iter().collect::<Result<Vec<_>>>().unwrap(), want, "{parallel:?}");
        }
    }

    /// On a CPU pool of two threads, three runs train on one thread each while at least two
    /// are unfinished; the last one, re-reading the count at its steps, splits its ops across
    /// both threads once the others have ended (before, it kept one thread to the end).
    #[test]
    fn the_last_cpu_run_of_a_table_takes_the_whole_pool() -> std::result::Result<(), Box<dyn std::error::Error>> {
        use crate::core::cpu::{intra_op_threads, share_the_pool_now};
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
        let jobs = [0usize, 1, 2];
        let wait = |done: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !done() && start.elapsed().as_secs() < 20 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        };
        // job 0 ends only after job 2 has begun, so job 2 begins beside another run
        let job2_began = std::sync::atomic::AtomicBool::new(false);
        let out = pool.install(|| {
            Device::Cpu.run_jobs(
                &jobs,
                None,
                |&j| {
                    share_the_pool_now();
                    let first = intra_op_threads();
                    match j {
                        0 => wait(&|| job2_began.load(std::sync::atomic::Ordering::SeqCst)),
                        2 => {
                            job2_began.store(true, std::sync::atomic::Ordering::SeqCst);
                            // it "steps" until the others have ended
                            wait(&|| {
                                share_the_pool_now();
                                intra_op_threads() == 2
                            });
                        }
                        _ => {}
                    }
                    Ok((first, intra_op_threads()))
                },
                &|_| {},
            )
        });
        let threads: Vec<(usize, usize)> = out?.into_iter().collect::<Result<_>>()?;
        assert_eq!(threads, [(1, 1), (1, 1), (1, 2)], "one thread each while they share it, then the pool");
        // and outside the runs, ops use the whole pool again
        assert_eq!(pool.install(intra_op_threads), 2);
        Ok(())
    }

    /// On the CPU, jobs refused for memory beside others (here: any job that starts while
    /// another runs) run again with fewer at once until each has run alone; a job refused
    /// when alone keeps its error.
    #[test]
    fn cpu_jobs_that_do_not_fit_beside_others_run_again_with_fewer_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let live = AtomicUsize::new(0);
        let notes = Mutex::new(Vec::new());
        let jobs: Vec<u64> = (0..6).collect();
        let out = Device::Cpu
            .run_jobs(
                &jobs,
                None,
                |&j| {
                    let beside = live.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    live.fetch_sub(1, Ordering::SeqCst);
                    match j {
                        5 => Err(Error::DeviceMemory("job 5 never fits".into())),
                        _ if beside > 0 => Err(Error::DeviceMemory(format!("job {j} beside {beside}"))),
                        _ => Ok(j * 10),
                    }
                },
                &|line| notes.lock().unwrap().push(line.to_string()),
            )
            .unwrap();
        for (j, r) in out.iter().enumerate().take(5) {
            assert_eq!(r.as_ref().ok(), Some(&(j as u64 * 10)), "job {j}");
        }
        assert!(matches!(&out[5], Err(Error::DeviceMemory(m)) if m == "job 5 never fits"));
        let notes = notes.into_inner().unwrap();
        if rayon::current_num_threads() > 1 {
            assert!(
                notes.iter().all(|n| n.contains("did not fit in memory beside others: running again")),
                "{notes:?}"
            );
            // the last round one at a time, and each note with its first job's reason
            assert!(notes.last().is_some_and(|n| n.contains("running again, 1 at once (job ")), "{notes:?}");
        } else {
            eprintln!("NOTE: one thread here, so no job ran beside another: {notes:?}");
        }
    }

    #[test]
    fn cpu_refuses_tf32() {
        assert!(Device::Cpu.open(false).is_ok());
        assert!(Device::Cpu.open(true).is_err());
    }
}
