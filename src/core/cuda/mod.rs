//! The CUDA backend (`--features cuda`): device buffers, GEMMs through cuBLAS or cnnlab's
//! 3xTF32 kernels (`gemm.rs` says which when), convolutions through cuDNN (`cudnn.rs`), im2col +
//! a GEMM or cnnlab's implicit GEMMs (`window.rs`; `conv_tune.rs` chooses), every other op as a CUDA C kernel compiled at run time with NVRTC. The driver, cuBLAS, cuDNN and NVRTC are
//! loaded with dlopen, so this builds where no CUDA is installed and [`init`] fails with one
//! line that names what was not found.
//!
//! Each host thread that runs ops gets its own stream and cuBLAS handle, so several runs (one
//! per thread, as `reproduce` schedules them) share the GPU concurrently. A buffer belongs to
//! the stream that allocated it; uploads and fills synchronise that stream, so a buffer made
//! on one thread (a model built on the main thread) is safe to use from another.
//!
//! Strict fp32 by default (no TF32: results match the CPU to rounding); [`Settings::tf32`]
//! lets cuBLAS use TF32 tensor cores. The op impls live beside this file, one per op family,
//! mirroring the CPU kernels in `core/ops/`.

mod attention;
mod conv_tune;
mod cudnn;
mod elementwise;
mod gather;
mod gemm;
mod loss;
mod norm;
mod optim;
mod tune_cache;
mod tuning;
mod window;

pub use conv_tune::{fixed as fixed_conv_choice, ConvRoute, Pass as ConvPass};
pub use elementwise::split_tf32;
pub use gemm::GemmRoute;
pub(crate) use gemm::{gemm, Batch};
pub use tuning::{
    deviation as conv_deviation, deviation_factor as conv_deviation_factor, eligible as conv_eligible,
    pick_timed as timed_conv_choice, tolerance as conv_tolerance,
};

use crate::core::backend::BackendBase;
use crate::error::{Error, Result};
use cudarc::cublas::sys as cublas_sys;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{result as drv, sys as drv_sys, CudaContext, CudaFunction, CudaStream};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::{Arc, OnceLock};

/// The CUDA backend (a marker type: the device lives in a process-wide context).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cuda;

/// How the device is set up, chosen once per process by [`init`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Device ordinal.
    pub ordinal: usize,
    /// Let cuBLAS use TF32 tensor cores (10-bit mantissa products) for fp32 GEMMs.
    pub tf32: bool,
}

/// Every kernel's source, concatenated into one NVRTC program.
pub const KERNEL_SOURCES: [(&str, &str); 9] = [
    ("elementwise.cu", include_str!("kernels/elementwise.cu")),
    ("window.cu", include_str!("kernels/window.cu")),
    ("norm.cu", include_str!("kernels/norm.cu")),
    ("loss.cu", include_str!("kernels/loss.cu")),
    ("optim.cu", include_str!("kernels/optim.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    ("gather.cu", include_str!("kernels/gather.cu")),
    ("gemm.cu", include_str!("kernels/gemm.cu")),
    ("conv_gemm.cu", include_str!("kernels/conv_gemm.cu")),
];
const COMMON: &str = include_str!("kernels/common.cuh");

macro_rules! kernels {
    ($($name:ident),* $(,)?) => {
        /// The kernels, by name (the index into the loaded functions).
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) enum K { $($name),* }
        /// Kernel names, in the order the kernels are loaded.
        pub const KERNEL_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

kernels!(
    fill_f32,
    relu_forward,
    relu_backward,
    gelu_forward,
    mul,
    add,
    mul_inplace,
    add_bias_rows,
    im2col,
    col2im,
    pool_forward,
    pool_backward,
    pool_backward_disjoint,
    global_avg_pool_forward,
    global_avg_pool_backward,
    patchify,
    transpose_batched,
    column_sums,
    column_sums_finish,
    batch_norm_finish_var,
    batch_norm_eval_stats,
    batch_norm_apply,
    batch_norm_input_grad,
    layer_norm_forward,
    layer_norm_input_grad,
    softmax_cross_entropy,
    adam_update,
    sgd_update,
    embedding_forward,
    embedding_backward,
    softmax_forward,
    softmax_backward,
    gather_batch,
    loss_stats,
    split_tf32,
    split_tf32_stacked,
    gemm_split_128,
    gemm_split_64,
    gemm_split_128_promoted,
    gemm_split_64_promoted,
    gemm_sum_slices,
    conv_split_128,
    conv_split_64,
    conv_filter_128,
    conv_filter_64,
    conv_split_128_promoted,
    conv_split_64_promoted,
    conv_filter_128_promoted,
    conv_filter_64_promoted,
    conv_split_128x64,
    conv_split_128x64_promoted,
    conv_filter_128x64,
    conv_filter_128x64_promoted,
);

/// The whole program as NVRTC compiles it.
pub fn kernel_program() -> String {
    let mut src = String::from(COMMON);
    for (name, text) in KERNEL_SOURCES {
        src += &format!("\n// ---- {name}\n");
        src += text;
    }
    src
}

/// Compiles every kernel to PTX (needs only libnvrtc, no driver or GPU): what CI runs to
/// catch a kernel that does not compile. Returns the PTX size in bytes.
pub fn compile_kernels() -> Result<usize> {
    check_library("nvrtc", || unsafe { cudarc::nvrtc::sys::is_culib_present() })?;
    let mut bytes = 0;
    // the oldest architecture CUDA 13 targets, and Hopper (the machines this is measured on)
    for arch in [(7, 5), (9, 0)] {
        bytes += compile(arch)?.to_src().len();
    }
    Ok(bytes)
}

fn compile(arch: (i32, i32)) -> Result<cudarc::nvrtc::Ptx> {
    // the newest virtual architecture NVRTC 13 knows at or below the device's
    let name = match arch {
        (major, _) if major >= 12 => "compute_120",
        (major, _) if major >= 10 => "compute_100",
        (9, _) => "compute_90",
        (8, 9) => "compute_89",
        (8, 6) => "compute_86",
        (8, _) => "compute_80",
        _ => "compute_75",
    };
    let opts = cudarc::nvrtc::CompileOptions {
        // PTX for the device's architecture (JIT-compiled by the driver)
        arch: Some(name),
        name: Some("cnnlab.cu".into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(kernel_program(), opts)
        .map_err(|e| Error::Device(format!("NVRTC could not compile the kernels: {e}")))
}

/// One line naming a library that dlopen could not find, and where it looked.
fn check_library(name: &str, present: impl FnOnce() -> bool) -> Result<()> {
    // cudarc panics when a symbol is missing; the presence check itself does not
    if present() {
        return Ok(());
    }
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    Err(Error::Device(format!(
        "the CUDA library lib{name} was not found (looked for {} on LD_LIBRARY_PATH={path:?} and the system's library \
         paths)",
        cudarc::get_lib_name_candidates(name).iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    )))
}

/// The process-wide device: its context and loaded kernels.
struct Device {
    ctx: Arc<CudaContext>,
    functions: Vec<CudaFunction>,
    settings: Settings,
    /// Whether cuDNN was loaded and works (see `cudnn.rs`; the route says when it runs).
    cudnn: bool,
    /// The GPU's name and compute capability.
    name: String,
    /// The compute capability.
    arch: (i32, i32),
    /// Streaming multiprocessors (how many blocks fill the GPU).
    multiprocessors: usize,
}

impl Device {
    /// Whether cnnlab's 3xTF32 kernels (the GEMMs' and the implicit-GEMM convolutions') may
    /// run: strict fp32, on TF32 tensor cores (compute capability 8.0 or newer).
    fn split_tf32(&self) -> bool {
        !self.settings.tf32 && self.arch >= (8, 0)
    }
}

static DEVICE: OnceLock<std::result::Result<Device, String>> = OnceLock::new();

fn open(settings: Settings) -> Result<Device> {
    check_library("cuda", || unsafe { drv_sys::is_culib_present() })?;
    check_library("cublas", || unsafe { cublas_sys::is_culib_present() })?;
    check_library("nvrtc", || unsafe { cudarc::nvrtc::sys::is_culib_present() })?;
    let count = CudaContext::device_count().map_err(|e| Error::Device(format!("the CUDA driver: {e}")))?;
    if settings.ordinal >= count.max(0) as usize {
        return Err(Error::Device(format!("no CUDA device {} ({count} found)", settings.ordinal)));
    }
    let ctx = CudaContext::new(settings.ordinal)
        .map_err(|e| Error::Device(format!("opening CUDA device {}: {e}", settings.ordinal)))?;
    // buffers are synchronised by their owners (see the module docs), not per launch
    unsafe { ctx.disable_event_tracking() };
    let arch = ctx.compute_capability().map_err(|e| Error::Device(format!("device {}: {e}", settings.ordinal)))?;
    if arch < (7, 5) {
        return Err(Error::Device(format!(
            "device {} has compute capability {}.{}; cnnlab needs 7.5 or newer",
            settings.ordinal, arch.0, arch.1
        )));
    }
    let module = ctx.load_module(compile(arch)?).map_err(|e| Error::Device(format!("loading the kernels: {e}")))?;
    let functions = KERNEL_NAMES
        .iter()
        .map(|n| module.load_function(n).map_err(|e| Error::Device(format!("kernel {n}: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    let route = ConvRoute::from_env()?;
    tuning::set_deviation_factor(tuning::deviation_factor(std::env::var("CNNLAB_CONV_TOLERANCE").ok().as_deref())?);
    // CNNLAB_CUDNN=0 leaves the library unopened (the way round a broken installation)
    let cudnn = route != ConvRoute::Im2col && cudnn::present();
    if cudnn {
        cudnn::probe()?;
    }
    conv_tune::set_route(route);
    conv_tune::set_implicit(conv_tune::implicit_from_env());
    gemm::set_route(GemmRoute::from_env()?);
    tune_cache::set_path(tune_cache::default_path());
    let name = format!("{}, compute capability {}.{}", ctx.name().unwrap_or_else(|_| "?".into()), arch.0, arch.1);
    let multiprocessors = ctx
        .attribute(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_or(1, |n| n.max(1) as usize);
    Ok(Device { ctx, functions, settings, cudnn, name, arch, multiprocessors })
}

fn message(e: Error) -> String {
    match e {
        Error::Device(m) => m,
        other => other.to_string(),
    }
}

/// Opens the device once per process. Later calls return the first outcome; a call with
/// other settings than the first is an error.
pub fn init(settings: Settings) -> Result<()> {
    let dev = DEVICE.get_or_init(|| open(settings).map_err(message));
    match dev {
        Ok(d) if d.settings == settings => Ok(()),
        Ok(d) => Err(Error::Device(format!("the CUDA device is already open with {:?}", d.settings))),
        Err(e) => Err(Error::Device(e.clone())),
    }
}

fn device() -> &'static Device {
    match DEVICE.get_or_init(|| open(Settings { ordinal: 0, tf32: false }).map_err(message)) {
        Ok(d) => d,
        // Not reachable from the CLI: every command opens its device with `init` (through
        // `Device::open`) and reports a failure as an error before any op runs. Only a library
        // user who skips `Device::open` and has no usable GPU gets here, before any op has a
        // thread state to record a failure in (see `check`).
        Err(e) => panic!("CUDA backend used without a device: {e}"),
    }
}

/// How this process runs convolutions on the GPU (for `cnnlab devices` and benchmarks).
pub fn convolution_route() -> String {
    // the opened device's route, else what opening it would choose
    let (route, present) = match DEVICE.get() {
        Some(Ok(d)) => (conv_tune::route(), d.cudnn),
        _ => match ConvRoute::from_env() {
            Ok(r) => (r, r != ConvRoute::Im2col && cudnn::present()),
            Err(e) => return format!("convolutions: {e}"),
        },
    };
    let kept = || {
        let path = match DEVICE.get() {
            Some(Ok(_)) => tune_cache::path(),
            _ => tune_cache::default_path(),
        };
        match path {
            Some(p) => format!("choices kept in {}", p.display()),
            None => "choices not kept between processes (CNNLAB_TUNE_CACHE=0)".into(),
        }
    };
    if !present && route != ConvRoute::Im2col {
        // cnnlab's own kernels need no cuDNN (the arch is known once the device is open)
        let own = match DEVICE.get() {
            Some(Ok(d)) => d.split_tf32() && conv_tune::implicit_allowed(),
            _ => conv_tune::implicit_from_env(),
        };
        return match route {
            ConvRoute::Tune if own => format!(
                "convolutions (libcudnn not found): each shape and pass timed once, im2col + cuBLAS against \
                 cnnlab's implicit-GEMM kernels in 3xTF32 where they can run it (strict fp32, compute capability \
                 8.0 or newer), each result compared with im2col + cuBLAS's; {} (CNNLAB_CUDNN=0 or implicit fixes \
                 the route)",
                kept()
            ),
            ConvRoute::Implicit if own => "convolutions (libcudnn not found): cnnlab's implicit-GEMM kernels in \
                                           3xTF32 where they can run a pass, else im2col + cuBLAS \
                                           (CNNLAB_CUDNN=implicit)"
                .into(),
            _ => "convolutions: im2col + cuBLAS (libcudnn not found)".into(),
        };
    }
    match route {
        ConvRoute::Im2col => "convolutions: im2col + cuBLAS (CNNLAB_CUDNN=0)".into(),
        ConvRoute::Cudnn => {
            "convolutions: cuDNN, the heuristic's first deterministic algorithm (CNNLAB_CUDNN=1)".into()
        }
        ConvRoute::Inference => {
            "convolutions: im2col + cuBLAS to train, cuDNN for inference (CNNLAB_CUDNN=inference)".into()
        }
        ConvRoute::CudnnNchw => {
            "convolutions: cuDNN on NCHW copies, the heuristic's first deterministic algorithm (CNNLAB_CUDNN=nchw)"
                .into()
        }
        ConvRoute::Split => "convolutions: cuDNN in three TF32 passes on split fp32 operands, the heuristic's \
                             first such algorithm (CNNLAB_CUDNN=split; with --tf32 one pass)"
            .into(),
        ConvRoute::Implicit => "convolutions: cnnlab's implicit-GEMM kernels in 3xTF32 where they can run a pass \
                                (strict fp32, compute capability 8.0 or newer, channels in sixteens forward and \
                                for the input gradient, in fours for the filter gradient), else im2col + cuBLAS \
                                (CNNLAB_CUDNN=implicit)"
            .into(),
        ConvRoute::Tune => {
            let kept = kept();
            let transforms = if !cudnn::transforms_allowed() {
                "without FFT and Winograd (CNNLAB_CUDNN_TRANSFORMS=0)".to_string()
            } else {
                match tuning::deviation_factor(std::env::var("CNNLAB_CONV_TOLERANCE").ok().as_deref()) {
                    Ok(f) if f == tuning::DEVIATION_FACTOR => "FFT and Winograd included".into(),
                    Ok(f) => format!("FFT and Winograd included, within {f} roundings (CNNLAB_CONV_TOLERANCE)"),
                    Err(e) => return format!("convolutions: {e}"),
                }
            };
            let tf32 = match DEVICE.get() {
                Some(Ok(d)) => d.settings.tf32,
                _ => false,
            };
            let split = match (tf32, cudnn::splits_allowed()) {
                (true, _) => "",
                (false, true) => ", and in TF32 on split fp32 operands (three passes, or one stacked)",
                (false, false) => ", not in TF32 on split operands (CNNLAB_CUDNN_SPLIT=0)",
            };
            // (the arch is known once the device is open)
            let implicit = match DEVICE.get() {
                Some(Ok(d)) if !d.split_tf32() => "",
                Some(Ok(_)) if !conv_tune::implicit_allowed() => {
                    ", not cnnlab's implicit-GEMM kernels (CNNLAB_CONV_IMPLICIT=0)"
                }
                None if !conv_tune::implicit_from_env() => {
                    ", not cnnlab's implicit-GEMM kernels (CNNLAB_CONV_IMPLICIT=0)"
                }
                _ => ", and cnnlab's implicit-GEMM kernels in 3xTF32 (compute capability 8.0 or newer)",
            };
            format!(
                "convolutions: each shape and pass timed once, im2col + cuBLAS against cuDNN's deterministic \
                 algorithms ({transforms}) on NHWC and on NCHW copies{split}{implicit}, each result compared with \
                 im2col + cuBLAS's; {kept} (CNNLAB_CUDNN=0, 1, nchw, inference, split or implicit fixes the route)"
            )
        }
    }
}

/// How this process runs fp32 GEMMs (for `cnnlab devices` and benchmarks): cuBLAS, or the
/// 3xTF32 kernels where they are timed faster (`gemm.rs`).
pub fn gemm_route() -> String {
    match DEVICE.get() {
        Some(Ok(d)) => gemm::describe_route(gemm::route(), d.settings.tf32, Some(d.arch)),
        _ => match GemmRoute::from_env() {
            Ok(r) => gemm::describe_route(r, false, None),
            Err(e) => format!("GEMMs: {e}"),
        },
    }
}

/// Sets how fp32 GEMMs run from now on, for every thread (`CNNLAB_GEMM` sets it when the
/// device opens). Choices already made are kept.
pub fn set_gemm_route(route: GemmRoute) {
    gemm::set_route(route);
}

/// Where tuned convolution choices are kept between processes (None: not kept). Set from
/// `CNNLAB_TUNE_CACHE` when the device opens (default `~/.cache/cnnlab/convolutions.json`).
pub fn set_tuning_cache(path: Option<std::path::PathBuf>) {
    tune_cache::set_path(path);
}

/// Sets how convolutions run from now on, for every thread (`CNNLAB_CUDNN` sets it when the
/// device opens; where cuDNN is not loaded, routes other than `Tune` and `Implicit` are im2col
/// + cuBLAS). Choices already made for a route are kept for it.
pub fn set_convolution_route(route: ConvRoute) {
    conv_tune::set_route(route);
}

/// Whether the tuned convolutions time cnnlab's implicit-GEMM kernels (as `CNNLAB_CONV_IMPLICIT`
/// sets when the device opens; for tests).
pub fn set_implicit_convolutions(on: bool) {
    conv_tune::set_implicit(on);
}

/// See [`set_implicit_convolutions`].
pub fn implicit_convolutions() -> bool {
    conv_tune::implicit_allowed()
}

/// The convolution choices of the process's route, one line per shape and pass (with their
/// timings where they were timed).
pub fn convolution_algorithms() -> Vec<String> {
    conv_tune::describe()
}

/// A description of each visible device, for `cnnlab devices`.
pub fn list_devices() -> Result<Vec<String>> {
    check_library("cuda", || unsafe { drv_sys::is_culib_present() })?;
    let count = CudaContext::device_count().map_err(|e| Error::Device(format!("the CUDA driver: {e}")))?;
    let mut out = Vec::new();
    for i in 0..count.max(0) as usize {
        let ctx = CudaContext::new(i).map_err(|e| Error::Device(format!("opening CUDA device {i}: {e}")))?;
        let name = ctx.name().unwrap_or_else(|_| "?".into());
        let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
        let mem = ctx.total_mem().unwrap_or(0) as f64 / (1u64 << 30) as f64;
        out.push(format!("cuda:{i}  {name}, compute capability {major}.{minor}, {mem:.0} GiB"));
    }
    Ok(out)
}

/// Per-thread state: a stream, a cuBLAS handle on it, and scratch memory.
pub(crate) struct Local {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// A vector of ones (bias gradients as a GEMM with it).
    ones: CudaBuf,
    /// Scratch for column-sum partials (f64) and similar per-op temporaries.
    work: CudaBuf,
    /// Second scratch (convolution input gradients).
    work2: CudaBuf,
    /// A split-K GEMM's partial sums (`gemm.rs`).
    partials: CudaBuf,
    /// The tuned GEMM choices this thread has used (a copy of `gemm.rs`'s, without its lock).
    gemm_ways: std::collections::HashMap<gemm::Shape, gemm::Way>,
    /// The batch plan (examples and permutations, as i32).
    plan: CudaBuf,
    /// cuDNN's handle and convolution plans (None: cuDNN is not loaded).
    pub(crate) dnn: Option<cudnn::Dnn>,
    /// The convolution choices this thread has looked up, and the settings the tuning cache
    /// names (with or without cuDNN).
    pub(crate) conv: conv_tune::ConvTuning,
}

thread_local! {
    // leaked on purpose: buffers are freed on their stream after their thread may have ended,
    // and destroying cuBLAS handles during process exit crashes in the driver
    static LOCAL: RefCell<Option<&'static mut Local>> = const { RefCell::new(None) };
}

thread_local! {
    /// The first failure of a CUDA call on this thread since it was last taken.
    static FAILURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether a CUDA call on this thread failed since the failure was last taken: every later
/// op on the thread is skipped (its outputs are unspecified) until then.
pub(crate) fn failed() -> bool {
    FAILURE.with(|f| f.borrow().is_some())
}

/// The thread's failure, taken (see [`BackendBase::take_error`]).
pub(crate) fn take_failure() -> Option<String> {
    FAILURE.with(|f| f.borrow_mut().take())
}

/// A CUDA call's value, or on failure the type's default and the failure recorded. The ops
/// cannot return errors one by one (they are queued asynchronously, as CUDA reports its own
/// errors): a failure — above all an allocation when the GPU runs out of memory — makes the
/// thread skip its later ops, and the trainer returns it as an error where it next reads a
/// result (every 64 steps and every evaluation). Runs on other threads carry on.
fn check<T: Default, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            FAILURE.with(|f| {
                f.borrow_mut().get_or_insert_with(|| format!("CUDA {what} failed: {e}"));
            });
            T::default()
        }
    }
}

/// Records, for tests, a failure as if the thread's last CUDA call had failed.
#[doc(hidden)]
pub fn inject_failure(what: &str) {
    check::<(), _>(Err(what), "injected failure");
}

/// A thread's CUDA setup (context binding, stream, library handles). It fails only on a lost
/// or broken device (no flag, size or file a user gives reaches it: the device was opened
/// and checked by `init` before), where no run can go on: that panics, and the CLI reports
/// the panic as one `error:` line (main.rs).
fn check_setup<T, E: std::fmt::Display>(r: std::result::Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("CUDA {what} failed: {e}"),
    }
}

impl Local {
    fn new() -> Local {
        let dev = device();
        check_setup(dev.ctx.bind_to_thread(), "context binding");
        let stream = check_setup(dev.ctx.new_stream(), "stream creation");
        let blas = check_setup(CudaBlas::new(stream.clone()), "cuBLAS handle creation");
        if dev.settings.tf32 {
            let mode = cublas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH;
            check_setup(unsafe { cublas_sys::cublasSetMathMode(*blas.handle(), mode).result() }, "cuBLAS math mode");
        }
        let raw = stream.cu_stream();
        let dnn = dev.cudnn.then(|| cudnn::Dnn::new(raw, dev.settings.tf32));
        let implicit = dev.split_tf32() && conv_tune::implicit_allowed();
        let conv = conv_tune::ConvTuning::new(&dev.name, dev.settings.tf32, implicit, dnn.as_ref());
        Local {
            stream,
            blas,
            ones: CudaBuf::empty(raw),
            work: CudaBuf::empty(raw),
            work2: CudaBuf::empty(raw),
            partials: CudaBuf::empty(raw),
            gemm_ways: Default::default(),
            plan: CudaBuf::empty(raw),
            dnn,
            conv,
        }
    }

    /// Gives back the scratch that grows with a run's shapes (the thread's next run grows it
    /// again): a thread that waits for its next run, or ends, holds no memory that another
    /// run may need.
    fn release_scratch(&mut self) {
        self.work = CudaBuf::empty(self.raw_stream());
        self.work2 = CudaBuf::empty(self.raw_stream());
        self.partials = CudaBuf::empty(self.raw_stream());
        if let Some(d) = self.dnn.as_mut() {
            d.release_scratch();
        }
    }

    pub(crate) fn raw_stream(&self) -> drv_sys::CUstream {
        self.stream.cu_stream()
    }

    pub(crate) fn sync(&self) {
        check(self.stream.synchronize(), "stream synchronisation");
    }

    /// Launches kernel `k` on this thread's stream with `args` (each a word: a device
    /// pointer, an i64, or an f32/i32 in the low bytes), `block` threads a block.
    pub(crate) fn launch(&self, k: K, grid: (u32, u32, u32), block: (u32, u32, u32), args: &[u64]) {
        self.launch_bytes(k, grid, block, args, &[]);
    }

    /// Like [`Local::launch`], with a struct argument (raw bytes) placed after `args`.
    pub(crate) fn launch_bytes(&self, k: K, grid: (u32, u32, u32), block: (u32, u32, u32), args: &[u64], extra: &[u8]) {
        if failed() {
            return;
        }
        const MAX: usize = 24;
        // every call site passes a fixed list written for its kernel (at most 17 words), so no
        // input reaches this
        assert!(args.len() < MAX, "too many kernel arguments");
        let mut words = [0u64; MAX];
        words[..args.len()].copy_from_slice(args);
        let mut params: [*mut c_void; MAX + 1] = [std::ptr::null_mut(); MAX + 1];
        for (p, w) in params.iter_mut().zip(words.iter_mut()).take(args.len()) {
            *p = w as *mut u64 as *mut c_void;
        }
        let mut n = args.len();
        let mut extra_copy = [0u8; 64];
        if !extra.is_empty() {
            extra_copy[..extra.len()].copy_from_slice(extra);
            params[n] = extra_copy.as_mut_ptr() as *mut c_void;
            n += 1;
        }
        let f = device().functions[k as usize].cu_function();
        // SAFETY: `params` points at `n` live values laid out as the kernel's parameters
        // (the kernels in kernels/*.cu take pointers and 64-bit integers as 8-byte words,
        // floats and ints in the low bytes of one, and one struct as raw bytes).
        let r = unsafe { drv::launch_kernel(f, grid, block, 0, self.raw_stream(), &mut params[..n]) };
        check(r, KERNEL_NAMES[k as usize]);
    }

    /// A grid-stride launch over `n` items (nothing for `n == 0`).
    pub(crate) fn launch_n(&self, k: K, n: usize, args: &[u64]) {
        self.launch_n_bytes(k, n, args, &[]);
    }

    /// [`Local::launch_n`] for the streaming kernels, which take four values a thread (`stream4`
    /// and the vector paths in `kernels/`).
    pub(crate) fn launch_n4(&self, k: K, n: usize, args: &[u64]) {
        self.launch_n(k, n.div_ceil(4), args);
    }

    /// [`Local::launch_n`] with a struct argument after `args` (see [`Local::launch_bytes`]).
    pub(crate) fn launch_n_bytes(&self, k: K, n: usize, args: &[u64], extra: &[u8]) {
        if n == 0 || failed() {
            return;
        }
        // the kernels decompose indices in 32 bits; callers split larger work (im2col by images),
        // and where one does not (a size no check caught) the run ends with an error, not a panic
        if n >= 1 << 31 {
            check::<(), _>(Err(format!("a launch over {n} values (at most 2^31)")), KERNEL_NAMES[k as usize]);
            return;
        }
        let blocks = n.div_ceil(256).min(1 << 20) as u32;
        self.launch_bytes(k, (blocks, 1, 1), (256, 1, 1), args, extra);
    }

    /// The ones vector, at least `n` long.
    pub(crate) fn ones(&mut self, n: usize) -> u64 {
        if self.ones.cap < n {
            let stream = self.raw_stream();
            self.ones.reserve(n.next_power_of_two(), stream);
            if self.ones.cap < n {
                return 0; // the allocation failed: the op using it is skipped
            }
            self.ones.len = self.ones.cap;
            let ptr = self.ones.ptr;
            self.launch_n(K::fill_f32, self.ones.cap, &[ptr, f(1.0), u(self.ones.cap)]);
        }
        self.ones.ptr
    }

    /// Scratch of at least `bytes`.
    pub(crate) fn work(&mut self, bytes: usize) -> u64 {
        let s = self.raw_stream();
        self.work.reserve(bytes.div_ceil(4), s);
        self.work.ptr
    }

    /// Room for `values` partial sums of a split-K GEMM (0 where the allocation failed, which
    /// is recorded as the thread's failure).
    pub(crate) fn partials(&mut self, values: usize) -> u64 {
        let s = self.raw_stream();
        self.partials.reserve(values, s);
        self.partials.ptr
    }

    /// [`Local::partials`] for the tuner: false where they do not fit, not recorded.
    pub(crate) fn try_partials(&mut self, values: usize) -> bool {
        let s = self.raw_stream();
        self.partials.try_reserve(values, s)
    }

    pub(crate) fn work2(&mut self, bytes: usize) -> u64 {
        let s = self.raw_stream();
        self.work2.reserve(bytes.div_ceil(4), s);
        self.work2.ptr
    }
}

/// Gives back this thread's scratch memory after a run (see `Local::release_scratch`);
/// nothing where the thread never computed on the GPU.
pub fn release_thread_scratch() {
    LOCAL.with(|cell| {
        if let Some(l) = cell.borrow_mut().as_mut() {
            l.release_scratch();
        }
    })
}

/// Runs `f` with this thread's stream and handles (made on first use).
pub(crate) fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> R {
    LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let local = slot.get_or_insert_with(|| Box::leak(Box::new(Local::new())));
        f(local)
    })
}

/// A kernel argument word: a device pointer.
pub(crate) fn p(buf: &CudaBuf) -> u64 {
    buf.ptr
}
/// A kernel argument word: a size or index (i64 in the kernel).
pub(crate) fn u(v: usize) -> u64 {
    v as i64 as u64
}
/// A kernel argument word: an f32.
pub(crate) fn f(v: f32) -> u64 {
    v.to_bits() as u64
}
/// A kernel argument word: an i32.
pub(crate) fn i(v: i32) -> u64 {
    v as u32 as u64
}
/// A kernel argument word: an f64.
pub(crate) fn d(v: f64) -> u64 {
    v.to_bits()
}

/// A device buffer: `len` values in an allocation of `cap` (kept when shrinking, so a
/// warm training step does not allocate).
pub struct CudaBuf {
    ptr: u64,
    len: usize,
    cap: usize,
    /// The stream it was allocated on (and is freed on).
    stream: drv_sys::CUstream,
}

// SAFETY: the pointer is a device address and the stream a driver handle, both usable from
// any thread of the process; ordering is the owner's (see the module docs).
unsafe impl Send for CudaBuf {}
unsafe impl Sync for CudaBuf {}

impl CudaBuf {
    fn empty(stream: drv_sys::CUstream) -> Self {
        CudaBuf { ptr: 0, len: 0, cap: 0, stream }
    }

    /// Grows the allocation to at least `cap` values (contents are not kept). Where the
    /// allocation fails (recorded: see [`check`]) the buffer is left empty.
    fn reserve(&mut self, cap: usize, stream: drv_sys::CUstream) {
        if self.cap >= cap {
            return;
        }
        self.release();
        if failed() {
            return;
        }
        // SAFETY: a fresh stream-ordered allocation on this thread's stream
        let ptr = check(unsafe { drv::malloc_async(stream, cap.max(1) * 4) }, "allocation");
        if ptr == 0 {
            return;
        }
        self.ptr = ptr;
        self.cap = cap;
        self.stream = stream;
    }

    /// [`CudaBuf::reserve`], except that a failed allocation is not recorded as the
    /// thread's failure: the buffer is left empty and false returned. For scratch that only
    /// one of several ways needs: the tuner leaves a way whose scratch does not fit out
    /// rather than ending the run (`tuning.rs`).
    fn try_reserve(&mut self, cap: usize, stream: drv_sys::CUstream) -> bool {
        if self.cap >= cap {
            return true;
        }
        self.release();
        if failed() {
            return false;
        }
        // SAFETY: as in `reserve`
        match unsafe { drv::malloc_async(stream, cap.max(1) * 4) } {
            Ok(ptr) if ptr != 0 => {
                (self.ptr, self.cap, self.stream) = (ptr, cap, stream);
                true
            }
            _ => false,
        }
    }

    fn release(&mut self) {
        if self.cap > 0 {
            // the dropping thread may never have run an op: make the context current
            if let Some(Ok(dev)) = DEVICE.get() {
                let _ = dev.ctx.bind_to_thread();
            }
            // SAFETY: allocated by `reserve` on `self.stream`; freed in that stream's order
            let _ = unsafe { drv::free_async(self.ptr, self.stream) };
            self.ptr = 0;
            self.cap = 0;
        }
    }

    /// Device address of value `offset`.
    pub(crate) fn at(&self, offset: usize) -> u64 {
        self.ptr + 4 * offset as u64
    }
}

impl Drop for CudaBuf {
    fn drop(&mut self) {
        self.release();
    }
}

impl BackendBase for Cuda {
    type Buf = CudaBuf;

    const KEEPS_DATA_RESIDENT: bool = true;

    /// An eighth of the GPU's memory ([`crate::core::device::DEFAULT_GPU_RUNS`] runs share
    /// it), at least 1 GiB: on an H200 (17.4 GiB) every network of the full table evaluates
    /// 1000 examples at a time, as when the table was timed, while on an 8 GB GPU the full
    /// preset's Mixer (4.2M layer outputs an example) evaluates a training batch's 128 at a
    /// time, estimated at 6.1 GiB in all where 1000 at a time asks 19.7. An example's
    /// outputs may depend on its chunk's size on a GPU (cuBLAS picks its kernels by the
    /// matrices' sizes), so GPUs with less memory may evaluate a last bit differently.
    fn eval_chunk_bytes() -> f64 {
        match DEVICE.get() {
            Some(Ok(d)) => match d.ctx.total_mem() {
                Ok(total) => (total as f64 / crate::core::device::DEFAULT_GPU_RUNS as f64).max((1u64 << 30) as f64),
                Err(_) => f64::INFINITY,
            },
            _ => f64::INFINITY,
        }
    }

    /// Admitted by a ledger of the GPU's memory, as the CPU's runs by the host's
    /// ([`crate::limits::reserve_gpu`]): a run whose estimate does not fit beside those of the
    /// runs in flight, in the memory that was free when the first of them began, is refused
    /// with [`Error::DeviceMemory`] before it allocates anything, and run again with fewer at
    /// once (so is one too large even alone: other processes may have held memory). Nothing
    /// is refused where the driver cannot say. On an H200 the full table's eight runs are
    /// estimated at about 86 GiB together and all start at once, as when it was timed; a run
    /// that runs out of memory all the same (the estimate leaves out cuBLAS's and cuDNN's
    /// workspaces) is run again with fewer at once too.
    fn admit_run(what: &str, need: f64) -> Result<crate::limits::Reservation> {
        let free = || {
            let dev = DEVICE.get().and_then(|d| d.as_ref().ok())?;
            dev.ctx.mem_get_info().ok().map(|(free, _)| free as f64)
        };
        // too large even alone is tried again alone too (other processes may have held memory)
        crate::limits::reserve_gpu(free, what, need).map_err(|e| match e {
            Error::Config(m) => Error::DeviceMemory(m),
            e => e,
        })
    }

    fn synchronize() {
        with_local(|l| l.sync());
    }

    fn take_error() -> Option<Error> {
        take_failure().map(|m| {
            // the driver's, cuBLAS's and cuDNN's names for running out of memory
            if m.contains("OUT_OF_MEMORY") || m.contains("ALLOC_FAILED") {
                Error::DeviceMemory(format!(
                    "the GPU ran out of memory ({m}); a smaller batch, or fewer runs at once (--parallel-runs), needs less"
                ))
            } else {
                Error::Device(m)
            }
        })
    }

    fn choices() -> Vec<String> {
        let mut out = vec![convolution_route(), gemm_route()];
        out.extend(convolution_algorithms());
        out.extend(gemm::describe());
        out
    }

    fn zeros(len: usize) -> CudaBuf {
        with_local(|l| {
            let mut b = CudaBuf::empty(l.raw_stream());
            b.reserve(len, l.raw_stream());
            // a failed allocation: see `resize`
            b.len = len;
            l.launch_n(K::fill_f32, b.len, &[b.ptr, f(0.0), u(b.len)]);
            l.sync();
            b
        })
    }

    fn resize(buf: &mut CudaBuf, len: usize) {
        if buf.cap < len {
            with_local(|l| {
                // keep the values (a Vec's resize does); new ones are unspecified
                let old = std::mem::replace(buf, CudaBuf::empty(l.raw_stream()));
                buf.reserve(len, l.raw_stream());
                if old.len > 0 && buf.cap >= len && !failed() {
                    let r = unsafe { drv::memcpy_dtod_async(buf.ptr, old.ptr, old.len * 4, l.raw_stream()) };
                    check(r, "device copy");
                }
                l.sync();
            });
        }
        // A failed allocation (recorded) leaves no memory behind the buffer, so a later resize
        // tries again, but keeps its length: the thread's device work is skipped until the
        // trainer returns the failure, and host code reading results back meanwhile gets
        // values of the lengths it expects (zeros), not a panic.
        buf.len = len;
    }

    fn len(buf: &CudaBuf) -> usize {
        buf.len
    }

    fn upload(buf: &mut CudaBuf, src: &[f32]) {
        Self::resize(buf, src.len());
        if src.is_empty() || failed() {
            return;
        }
        with_local(|l| {
            // SAFETY: `buf` holds at least `src.len()` values; pageable memory is copied
            // before the call returns, and the sync orders it before any other stream's use
            check(unsafe { drv::memcpy_htod_async(buf.ptr, src, l.raw_stream()) }, "upload");
            l.sync();
        });
    }

    fn download(buf: &CudaBuf, dst: &mut Vec<f32>) {
        dst.clear();
        dst.resize(buf.len, 0.0);
        if buf.len == 0 || failed() {
            return;
        }
        with_local(|l| {
            // SAFETY: `dst` holds `buf.len` values
            check(unsafe { drv::memcpy_dtoh_async(&mut dst[..], buf.ptr, l.raw_stream()) }, "download");
            l.sync();
        });
    }

    fn fill(buf: &mut CudaBuf, value: f32) {
        with_local(|l| {
            l.launch_n(K::fill_f32, buf.len, &[buf.ptr, f(value), u(buf.len)]);
            l.sync();
        });
    }

    fn copy(src: &CudaBuf, dst: &mut CudaBuf) {
        if failed() {
            return;
        }
        assert_eq!(src.len, dst.len, "copy between buffers of different lengths");
        if src.len == 0 {
            return;
        }
        with_local(|l| {
            let r = unsafe { drv::memcpy_dtod_async(dst.ptr, src.ptr, src.len * 4, l.raw_stream()) };
            check(r, "device copy");
        });
    }

    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        a: (&CudaBuf, usize, usize, usize),
        b: (&CudaBuf, usize, usize, usize),
        c: (&mut CudaBuf, usize, usize),
        accumulate: bool,
    ) {
        with_local(|l| {
            gemm(l, m, n, k, (a.0.at(a.1), a.2, a.3), (b.0.at(b.1), b.2, b.3), (c.0.at(c.1), c.2), accumulate, None)
        });
    }

    fn matmul_batched(
        count: usize,
        (m, n, k): (usize, usize, usize),
        a: (&CudaBuf, usize, usize, usize, usize),
        b: (&CudaBuf, usize, usize, usize, usize),
        c: (&mut CudaBuf, usize, usize, usize),
        accumulate: bool,
    ) {
        // one strided-batched cuBLAS call instead of `count` launches
        let batch = Batch { count, a: a.4, b: b.4, c: c.3 };
        with_local(|l| {
            gemm(
                l,
                m,
                n,
                k,
                (a.0.at(a.1), a.2, a.3),
                (b.0.at(b.1), b.2, b.3),
                (c.0.at(c.1), c.2),
                accumulate,
                Some(batch),
            )
        });
    }
}
