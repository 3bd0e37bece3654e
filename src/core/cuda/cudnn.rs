//! Convolutions through cuDNN, and the choice, per convolution shape and pass, between cuDNN
//! and im2col + cuBLAS (`window.rs`). cnnlab's layouts are cuDNN's NHWC tensors and KRSC
//! filters as they are (`[N, H, W, C]` activations, `[Cout, kh, kw, Cin]` weights in im2col
//! order), so nothing is copied or transposed, and the im2col buffer (rows × K values: 300 MB
//! for a 64→128 layer on a batch of 128 CIFAR images) is not needed. cuDNN's fp32 kernels were
//! written for NCHW first (PyTorch's fp32 reference runs NCHW), so the tuned route also times
//! each algorithm on NCHW copies of the tensors, the copies' time included ([`Layout`]).
//!
//! cuDNN's candidates for a pass (forward, backward-data, backward-filter) are all the
//! algorithms its heuristic lists that are deterministic (a seed gives the same numbers every
//! run, as on the CPU), fit [`MAX_WORKSPACE`] and, in strict fp32, run with FMA math (no
//! TF32). All of them are timed, as PyTorch's `cudnn.benchmark` times all of cuDNN's (the
//! heuristic's order is not the GPU's: it ranked strict fp32's training algorithms above
//! im2col + cuBLAS, which trained W1 faster on an H200).
//!
//! Every timed candidate's result is also compared with im2col + cuBLAS's (the CPU's
//! arithmetic) on the same call, and one that differs by more than [`DEVIATION_FACTOR`] times
//! the rounding of one sum of the pass's length is left out ([`tolerance`]). That is what lets
//! strict fp32 take FFT and Winograd transforms (whose rounding is not a GEMM's: PyTorch's
//! fp32 takes them unchecked) where they are both faster and that close, and it stops a
//! candidate that computes something else (a layout mistake) from ever being chosen.
//! `CNNLAB_CUDNN_TRANSFORMS=0` leaves FFT and Winograd out altogether. The fixed routes take
//! the heuristic's first GEMM-type candidate, which is never checked.
//!
//! Strict fp32 also times each GEMM-type algorithm that cuDNN runs on TF32 tensor cores on
//! split operands ([`Split`], "3xTF32" in CUTLASS's words): each fp32 operand is split into
//! two TF32 values, `x = hi + lo` to 2⁻²² (the `split_tf32` kernels), and `conv(x, w)` is
//! `conv(lo, w_hi) + conv(hi, w_lo) + conv(hi, w_hi)`, whose products a tensor core computes
//! exactly, leaving out `lo·lo` (under 2⁻²² of a product; one fp32 rounding is 2⁻²⁴, and a sum
//! of `n` terms carries √n of those). Either as three convolutions, the later two adding to
//! the first's output ([`Split::Passes`]), or as one over operands stacked along the sum's
//! axis ([`Split::Stacked`]: the input channels forward, the output channels for the input
//! gradient, the batch for the filter gradient), which writes the output once. On Hopper a
//! TF32 tensor core multiplies about seven times faster than fp32 FMA, so three times the
//! products can take less time. Such a way is compared with im2col + cuBLAS like a
//! transform, and never chosen uncompared; `CNNLAB_CUDNN_SPLIT=0` leaves them out.
//!
//! Strict fp32 on compute capability 8.0 and newer also times cnnlab's own implicit-GEMM
//! kernels ([`Way::Implicit`], `kernels/conv_gemm.cu`, launched by `window.rs`): the 3xTF32
//! GEMM of `gemm.cu` with each tile of the im2col columns gathered from the image as it is
//! loaded: the forward pass and the input gradient of stride-1 convolutions where the channels
//! each tap sums come in sixteens, the filter gradient where both channel counts come in fours
//! (see `window::implicit_fits`). They are compared like TF32 on split operands. They need no
//! cuDNN: where it is not loaded, the tuned route times them against im2col + cuBLAS alone
//! (and the routes that name cuDNN are im2col + cuBLAS).
//!
//! Which way runs is the [`ConvRoute`]'s (`CNNLAB_CUDNN`): by default ([`ConvRoute::Tune`])
//! each shape and pass is timed once — im2col + cuBLAS against cuDNN's candidates, on the
//! call's own buffers — and every run of the process then takes the same choice, so runs
//! trained together agree with runs trained alone. The choice is kept in the tuning cache
//! (`tune_cache.rs`), which later processes on the machine read instead of timing again:
//! processes that each timed for themselves chose differently where two ways timed alike, and
//! so rounded differently (the CUDA emulator's repeated runs showed it). A candidate must beat
//! the fixed choice by [`MARGIN`] to replace it. `CNNLAB_CUDNN=0|1|nchw|inference` fixes the
//! route outright.

use super::{check, check_setup, f, failed, tune_cache, u, CudaBuf, Local, K};
use crate::core::ops::conv2d::WindowGeom;
use crate::error::{Error, Result};
use cudarc::cudnn::{result as dnn, sys};
use cudarc::driver::{result as drv, sys as drv_sys};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

/// Workspace beyond this is not worth an algorithm (the im2col path needs no more).
const MAX_WORKSPACE: usize = 1 << 30;
/// Timed runs of each candidate, after one untimed run (which allocates its workspace); the
/// fastest counts.
const TIMED_RUNS: usize = 3;
/// A timed candidate replaces the fixed choice only where it takes at most this fraction of
/// its time: near-ties keep the fixed choice, so noise does not flip it between processes.
pub const MARGIN: f32 = 0.9;
/// How far a candidate's result may be from im2col + cuBLAS's: this many times the relative
/// rounding error of one fp32 sum of the pass's length (see [`tolerance`]), unless
/// `CNNLAB_CONV_TOLERANCE` sets another factor ([`deviation_factor`]).
pub const DEVIATION_FACTOR: f64 = 8.0;
/// The factor in force (f64 bits), set when the device opens.
static FACTOR: AtomicU64 = AtomicU64::new(DEVIATION_FACTOR.to_bits());
/// Output values compared with im2col + cuBLAS's (the first ones of the call's output):
/// plenty for a relative RMS, and 4 MB to read back.
const COMPARED: usize = 1 << 20;

/// How the GPU runs convolutions (1x1 convolutions are one GEMM whatever the route).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvRoute {
    /// im2col + cuBLAS throughout (`CNNLAB_CUDNN=0`; also, but for cnnlab's own kernels on
    /// [`ConvRoute::Tune`] and [`ConvRoute::Implicit`], wherever libcudnn is not found).
    Im2col,
    /// cuDNN throughout, with the heuristic's first qualifying algorithm (`CNNLAB_CUDNN=1`).
    Cudnn,
    /// im2col + cuBLAS for training passes, cuDNN for forward passes that no backward follows
    /// (evaluation, inference) (`CNNLAB_CUDNN=inference`). Measured on an H200 (`cnnlab bench`,
    /// 2026-11-28): in strict fp32 cuDNN's qualifying algorithms trained W1 slower than
    /// im2col and cuBLAS (17,138 against 22,969 images/s, one sitting) but ran its inference
    /// faster (72,265 against 52,894 images/s, two sittings).
    Inference,
    /// cuDNN throughout on NCHW copies of the tensors (see `Layout`), with the heuristic's
    /// first qualifying NCHW algorithm (`CNNLAB_CUDNN=nchw`).
    CudnnNchw,
    /// Each convolution shape and pass timed once per process (the default; see the module
    /// docs). The fixed choice it must beat: [`ConvRoute::Cudnn`]'s with `--tf32` (cuDNN's
    /// tensor-core kernels trained W1 at 81,911 images/s), [`ConvRoute::Inference`]'s in
    /// strict fp32.
    Tune,
    /// cuDNN throughout with the heuristic's first algorithm that runs as three TF32 passes
    /// on split operands (see the module docs; `CNNLAB_CUDNN=split`), in strict fp32 only:
    /// with `--tf32`, or where cuDNN offers no such algorithm, [`ConvRoute::Cudnn`]'s choice.
    /// Uncompared, as every fixed route: for measuring the three passes against the others.
    Split,
    /// cnnlab's implicit-GEMM kernels in 3xTF32 (`kernels/conv_gemm.cu`, 128×128 tiles)
    /// wherever they can run the pass (strict fp32 on compute capability 8.0 or newer, and
    /// channel counts that suit them; see `window::implicit_fits`), else im2col + cuBLAS
    /// (`CNNLAB_CUDNN=implicit`). Uncompared: for measuring them against the others.
    Implicit,
}

impl ConvRoute {
    /// The route `CNNLAB_CUDNN` names (unset: [`ConvRoute::Tune`]).
    pub fn from_env() -> Result<ConvRoute> {
        match std::env::var("CNNLAB_CUDNN") {
            Err(_) => Ok(ConvRoute::Tune),
            Ok(v) => v.parse(),
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> ConvRoute {
        [
            ConvRoute::Im2col,
            ConvRoute::Cudnn,
            ConvRoute::Inference,
            ConvRoute::CudnnNchw,
            ConvRoute::Tune,
            ConvRoute::Split,
            ConvRoute::Implicit,
        ][c as usize % 7]
    }
}

impl std::str::FromStr for ConvRoute {
    type Err = Error;
    fn from_str(s: &str) -> Result<ConvRoute> {
        match s {
            "0" | "im2col" => Ok(ConvRoute::Im2col),
            "1" | "cudnn" => Ok(ConvRoute::Cudnn),
            "inference" => Ok(ConvRoute::Inference),
            "nchw" => Ok(ConvRoute::CudnnNchw),
            "tune" => Ok(ConvRoute::Tune),
            "split" => Ok(ConvRoute::Split),
            "implicit" => Ok(ConvRoute::Implicit),
            other => Err(Error::Device(format!(
                "CNNLAB_CUDNN={other:?} names no convolution route: use 0 (im2col + cuBLAS), 1 (cuDNN), nchw (cuDNN \
                 on NCHW copies), inference (cuDNN for inference only), split (cuDNN in three TF32 passes on split \
                 fp32), implicit (cnnlab's implicit-GEMM kernels in 3xTF32) or tune (timed per shape, the default)"
            ))),
        }
    }
}

static ROUTE: AtomicU8 = AtomicU8::new(ConvRoute::Tune as u8);

/// Sets the process's route (from `CNNLAB_CUDNN` when the device opens; tests switch it).
pub(crate) fn set_route(route: ConvRoute) {
    ROUTE.store(route.code(), Ordering::Relaxed);
}

pub(crate) fn route() -> ConvRoute {
    ConvRoute::from_code(ROUTE.load(Ordering::Relaxed))
}

/// Whether cnnlab's implicit-GEMM kernels are among the ways ([`Way::Implicit`]), unless
/// `CNNLAB_CONV_IMPLICIT=0`: read when the device opens (tests switch it).
static IMPLICIT: AtomicBool = AtomicBool::new(true);

pub(crate) fn set_implicit(on: bool) {
    IMPLICIT.store(on, Ordering::Relaxed);
}

pub(crate) fn implicit_allowed() -> bool {
    IMPLICIT.load(Ordering::Relaxed)
}

/// What `CNNLAB_CONV_IMPLICIT` asks: the implicit-GEMM kernels among the ways unless it is `0`.
pub(crate) fn implicit_from_env() -> bool {
    std::env::var("CNNLAB_CONV_IMPLICIT").as_deref() != Ok("0")
}

/// Whether FFT and Winograd algorithms are candidates (unless `CNNLAB_CUDNN_TRANSFORMS=0`).
pub(crate) fn transforms_allowed() -> bool {
    std::env::var("CNNLAB_CUDNN_TRANSFORMS").as_deref() != Ok("0")
}

/// Whether strict fp32 times tensor-core algorithms in TF32 on split operands (three passes or
/// stacked: see the module docs), unless `CNNLAB_CUDNN_SPLIT=0`.
pub(crate) fn splits_allowed() -> bool {
    std::env::var("CNNLAB_CUDNN_SPLIT").as_deref() != Ok("0")
}

/// The factor `CNNLAB_CONV_TOLERANCE` (`value`) sets for [`tolerance`], `DEVIATION_FACTOR`
/// where unset: a number from 1 to 10⁶. A larger one lets FFT and Winograd algorithms whose
/// results round further from a GEMM's be timed into the choice (an experiment with speed
/// against exactness: PyTorch's fp32 takes them unchecked).
pub fn deviation_factor(value: Option<&str>) -> Result<f64> {
    let Some(v) = value else { return Ok(DEVIATION_FACTOR) };
    match v.trim().parse::<f64>() {
        Ok(f) if (1.0..=1e6).contains(&f) => Ok(f),
        _ => Err(Error::Device(format!(
            "CNNLAB_CONV_TOLERANCE={v:?} is not a factor from 1 to 1000000 (how many fp32 roundings of one sum a \
             convolution's result may be from im2col + cuBLAS's; default {DEVIATION_FACTOR})"
        ))),
    }
}

/// Sets the factor in force (see [`deviation_factor`]).
pub(crate) fn set_deviation_factor(factor: f64) {
    FACTOR.store(factor.to_bits(), Ordering::Relaxed);
}

fn factor() -> f64 {
    f64::from_bits(FACTOR.load(Ordering::Relaxed))
}

/// Whether libcudnn can be opened (only asks the loader).
pub(crate) fn present() -> bool {
    // SAFETY: only asks the loader whether the library can be opened
    unsafe { sys::is_culib_present() }
}

/// Checks, when the device opens, that cuDNN loads and makes a handle (its sub-libraries sit
/// beside libcudnn and must be on the library path too): one error line rather than a failure
/// inside the first convolution.
pub(crate) fn probe() -> Result<()> {
    let fail = |e: String| {
        Error::Device(format!(
            "cuDNN was found but does not work ({e}); put its folder (with libcudnn_cnn and the other \
             sub-libraries) on LD_LIBRARY_PATH, or set CNNLAB_CUDNN=0 to convolve with im2col + cuBLAS"
        ))
    };
    let version = dnn::get_version();
    if version < 9000 {
        return Err(fail(format!("version {version}; cnnlab needs cuDNN 9")));
    }
    let handle = dnn::create_handle().map_err(|e| fail(e.to_string()))?;
    // SAFETY: the handle was just created and is not used again
    unsafe { dnn::destroy_handle(handle) }.map_err(|e| fail(e.to_string()))
}

/// A pass of a convolution. Forward passes of training and of inference are told apart:
/// with im2col, a training forward leaves the columns that the filter gradient reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    Forward,
    Inference,
    Filter,
    Data,
}

/// One of cuDNN's algorithms for a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AlgoId {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The layout cuDNN is called with: cnnlab's own (NHWC activations, KRSC filters), or
/// NCHW activations and KCRS filters on transposed copies (`window.rs` makes them). cuDNN's
/// fp32 kernels were written for NCHW first, so the tuned route times both, the copies
/// included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Layout {
    Nhwc,
    Nchw,
}

/// A cuDNN algorithm with the math type to run it with, the workspace it needs, and the
/// layout it is called with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Algo {
    id: AlgoId,
    math: sys::cudnnMathType_t,
    workspace: usize,
    pub(crate) layout: Layout,
    /// An FFT or Winograd algorithm (see [`Candidate::transform`]).
    transform: bool,
    /// Run in TF32 on split operands, for strict fp32 (see the module docs): `math` is then
    /// a tensor-op math type.
    pub(crate) split: Split,
}

/// How an algorithm runs on operands split into two TF32 values each (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// Not split: fp32 as it is (or TF32 with `--tf32`).
    No,
    /// Three convolutions of the pass's shape: `lo·hi`, then `hi·lo` and `hi·hi` added to it.
    Passes,
    /// One convolution of [`stacked`]'s shape, over the three pairs stacked along the sum's
    /// axis: the algorithm is one cuDNN offers for that shape.
    Stacked,
}

impl Algo {
    /// Whether it may run only where its result was compared with im2col + cuBLAS's: a
    /// transform, or TF32 on split operands.
    fn compared_only(&self) -> bool {
        self.transform || self.split != Split::No
    }

    fn pass(&self) -> Pass {
        match self.id {
            AlgoId::Forward(_) => Pass::Forward,
            AlgoId::Data(_) => Pass::Data,
            AlgoId::Filter(_) => Pass::Filter,
        }
    }
}

/// The shape of `pass` on stacked split operands ([`Split::Stacked`]): the pairs `lo·hi`,
/// `hi·lo`, `hi·hi` side by side along the axis the pass sums over, so that one convolution
/// sums all three — three times the input channels forward, the output channels for the
/// input gradient, the images for the filter gradient.
pub(crate) fn stacked(g: &WindowGeom, cout: usize, pass: Pass) -> (WindowGeom, usize) {
    match pass {
        Pass::Forward | Pass::Inference => (WindowGeom { c: 3 * g.c, ..*g }, cout),
        Pass::Data => (*g, 3 * cout),
        Pass::Filter => (WindowGeom { n: 3 * g.n, ..*g }, cout),
    }
}

/// How one pass of a convolution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    Im2col,
    Cudnn(Algo),
    /// cnnlab's implicit GEMM in 3xTF32 (`kernels/conv_gemm.cu`) with tiles of C of `tile`
    /// (rows, columns: 128×128, 128×64 or 64×64), its sums `promoted` or not (see
    /// `kernels/gemm.cu`): like TF32 on split operands, chosen only where compared.
    Implicit {
        tile: (usize, usize),
        promoted: bool,
    },
}

impl Way {
    /// Whether it may run only where its result was compared with im2col + cuBLAS's.
    fn compared_only(&self) -> bool {
        match self {
            Way::Im2col => false,
            Way::Cudnn(a) => a.compared_only(),
            Way::Implicit { .. } => true,
        }
    }
}

impl std::fmt::Display for Way {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Way::Im2col => write!(f, "im2col + cuBLAS"),
            Way::Implicit { tile, promoted } => {
                let sums = if *promoted { " with promoted sums" } else { "" };
                write!(f, "implicit GEMM in 3xTF32 on {}x{} tiles{sums}", tile.0, tile.1)
            }
            Way::Cudnn(a) => {
                let name = match a.id {
                    AlgoId::Forward(x) => format!("{x:?}"),
                    AlgoId::Data(x) => format!("{x:?}"),
                    AlgoId::Filter(x) => format!("{x:?}"),
                };
                let tensor = matches!(a.math, sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH);
                write!(
                    f,
                    "cuDNN {}{}{}",
                    name.trim_start_matches("CUDNN_CONVOLUTION_"),
                    if a.layout == Layout::Nchw { " on NCHW copies" } else { "" },
                    match (a.split, tensor) {
                        (Split::Passes, _) => " as 3 TF32 passes on split fp32",
                        (Split::Stacked, _) => " in TF32 on stacked split fp32",
                        (Split::No, true) => " (tensor ops)",
                        (Split::No, false) => "",
                    }
                )
            }
        }
    }
}

impl Way {
    /// How the tuning cache writes it: `im2col`, `implicit <rows>x<columns>[ promoted]`, or
    /// `cudnn <algorithm> <math type>` (cuDNN's enum values), followed by ` nchw` on NCHW
    /// copies, ` split` as three TF32 passes or ` stacked` on stacked split operands.
    fn code(&self) -> String {
        match self {
            Way::Im2col => "im2col".into(),
            Way::Implicit { tile: (m, n), promoted: false } => format!("implicit {m}x{n}"),
            Way::Implicit { tile: (m, n), promoted: true } => format!("implicit {m}x{n} promoted"),
            Way::Cudnn(a) => {
                let suffix = match (a.layout, a.split) {
                    (Layout::Nchw, _) => " nchw",
                    (_, Split::Passes) => " split",
                    (_, Split::Stacked) => " stacked",
                    (_, Split::No) => "",
                };
                format!("cudnn {} {}{suffix}", a.id.code(), a.math as u32)
            }
        }
    }

    /// The way `code` names, where it is im2col, one of `own` (cnnlab's kernels that can run
    /// the pass) or one of `candidates` (else None: a cache written by another cuDNN, or with
    /// other settings, is timed again).
    fn parse(code: &str, own: &[Way], candidates: &[Algo]) -> Option<Way> {
        if code == "im2col" {
            return Some(Way::Im2col);
        }
        if let Some(way) = own.iter().find(|w| w.code() == code) {
            return Some(*way);
        }
        let (code, layout) = match code.strip_suffix(" nchw") {
            Some(c) => (c, Layout::Nchw),
            None => (code, Layout::Nhwc),
        };
        let (code, split) = match (code.strip_suffix(" split"), code.strip_suffix(" stacked")) {
            (Some(c), _) => (c, Split::Passes),
            (_, Some(c)) => (c, Split::Stacked),
            _ => (code, Split::No),
        };
        let mut it = code.strip_prefix("cudnn ")?.split(' ').map(|v| v.parse::<u32>().ok());
        let (id, math) = (it.next()??, it.next()??);
        let found = candidates
            .iter()
            .find(|a| a.id.code() == id && a.math as u32 == math && a.layout == layout && a.split == split);
        found.map(|a| Way::Cudnn(*a))
    }
}

impl AlgoId {
    fn code(&self) -> u32 {
        match *self {
            AlgoId::Forward(a) => a as u32,
            AlgoId::Data(a) => a as u32,
            AlgoId::Filter(a) => a as u32,
        }
    }
}

/// A convolution's shape: the window geometry and the output channels.
type Shape = ([usize; 12], usize);

fn shape(g: &WindowGeom, cout: usize) -> Shape {
    ([g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow], cout)
}

/// Values of the NCHW copies of one pass's tensors, at most: the input (or its gradient),
/// the output (or its gradient) and the filter (or its gradient).
pub(crate) fn relayout_values(g: &WindowGeom, cout: usize) -> usize {
    g.n * g.h * g.w * g.c + g.n * g.positions() * cout + cout * g.k()
}

/// Values of the split operands of one pass, at most (see [`Split`]): two of the three
/// tensors, three times each (stacked; hi and lo take two), each starting 16-byte aligned.
pub(crate) fn split_values(g: &WindowGeom, cout: usize) -> usize {
    3 * relayout_values(g, cout) + 16
}

/// What was chosen for a route, shape and pass, and the timings it was chosen by (none for
/// a fixed route).
struct Chosen {
    way: Way,
    timings: Vec<Timing>,
    /// Read from the tuning cache (`tune_cache.rs`) rather than timed here.
    cached: bool,
    /// Why a timed choice could not be kept in the tuning cache.
    not_kept: Option<String>,
}

/// One way as the tuner timed it: its fastest time (NaN: it failed) and how far its result
/// was from im2col + cuBLAS's (None: not compared).
struct Timing {
    way: Way,
    ms: f32,
    deviation: Option<f64>,
    /// The most the deviation could be for the way to be chosen.
    tolerance: f64,
}

impl Timing {
    fn eligible(&self) -> bool {
        eligible(self.ms, self.deviation, self.tolerance, self.way.compared_only())
    }
}

/// Whether the tuner may choose a way that took `ms` and whose result was `deviation` from
/// im2col + cuBLAS's: it ran, and came within `tolerance`; where it was not compared (im2col
/// and cuBLAS did not run) only a plain GEMM-type algorithm, not one that is `compared_only`
/// (a transform, or TF32 on split operands).
pub fn eligible(ms: f32, deviation: Option<f64>, tolerance: f64, compared_only: bool) -> bool {
    ms.is_finite()
        && match deviation {
            Some(d) => d <= tolerance,
            None => !compared_only,
        }
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ms.is_nan() {
            return write!(f, "{} failed", self.way);
        }
        write!(f, "{} {:.3} ms", self.way, self.ms)?;
        match self.deviation {
            _ if self.way == Way::Im2col => Ok(()),
            Some(0.0) => write!(f, " (off by 0)"),
            Some(d) if d <= self.tolerance => write!(f, " (off by {d:.1e})"),
            Some(d) => write!(f, " (off by {d:.1e}, over {:.1e}: left out)", self.tolerance),
            None if self.eligible() => write!(f, " (not compared)"),
            None => write!(f, " (not compared: left out)"),
        }
    }
}

/// How far a result may be from im2col + cuBLAS's, as a relative RMS difference:
/// `DEVIATION_FACTOR` (or `CNNLAB_CONV_TOLERANCE`'s factor) times the rounding of one fp32
/// sum of `terms` products with random signs (√terms · 2⁻²⁴, which both results carry), or of
/// TF32's products (2⁻¹¹) with `--tf32`. A transform within it rounds like a GEMM of the same sums, give or take a small
/// factor; one that computes anything else is off by order 1.
pub fn tolerance(tf32: bool, terms: usize) -> f64 {
    let fp32 = (terms.max(1) as f64).sqrt() * 2f64.powi(-24);
    let products = if tf32 { 2f64.powi(-11) } else { 0.0 };
    factor() * fp32.max(products)
}

/// The relative RMS difference of `y` from `reference` (infinite where `y` holds a NaN, or
/// differs from an all-zero reference).
pub fn deviation(reference: &[f32], y: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&r, &v) in reference.iter().zip(y) {
        diff += (v as f64 - r as f64).powi(2);
        norm += (r as f64).powi(2);
    }
    if diff.is_nan() {
        return f64::INFINITY;
    }
    if diff == 0.0 {
        return 0.0;
    }
    (diff / norm).sqrt()
}

impl Chosen {
    fn fixed(way: Way) -> Chosen {
        Chosen { way, timings: Vec::new(), cached: false, not_kept: None }
    }
}

type ChoiceKey = (ConvRoute, Shape, Pass);

/// The process's choices, shared by every thread (each run takes the same way).
static CHOICES: LazyLock<Mutex<HashMap<ChoiceKey, Chosen>>> = LazyLock::new(Default::default);

fn choices() -> MutexGuard<'static, HashMap<ChoiceKey, Chosen>> {
    CHOICES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The choice of a fixed route for `pass`: `im2col`, or `first`, cuDNN's best candidate
/// (None: cuDNN has none for the shape). Generic over how a way is named, for the tests.
pub fn fixed<W: Copy>(route: ConvRoute, tf32: bool, pass: Pass, first: Option<W>, im2col: W) -> W {
    let cudnn = first.unwrap_or(im2col);
    match route {
        ConvRoute::Im2col => im2col,
        ConvRoute::Cudnn | ConvRoute::CudnnNchw | ConvRoute::Split => cudnn,
        // cnnlab's own kernels where they fit: the backend's `fixed_way` takes them first
        ConvRoute::Implicit => im2col,
        ConvRoute::Inference if pass == Pass::Inference => cudnn,
        ConvRoute::Inference => im2col,
        ConvRoute::Tune => {
            let rule = if tf32 { ConvRoute::Cudnn } else { ConvRoute::Inference };
            fixed(rule, tf32, pass, first, im2col)
        }
    }
}

/// The tuned choice from `timings` (milliseconds): the fastest, where it beats the fixed
/// choice `preferred` by `MARGIN` (or `preferred` could not be timed); else `preferred`.
pub fn pick_timed<W: Copy + PartialEq>(preferred: W, timings: &[(W, f32)]) -> W {
    let best = timings.iter().filter(|t| t.1.is_finite()).min_by(|a, b| a.1.total_cmp(&b.1));
    match (best, timings.iter().find(|t| t.0 == preferred && t.1.is_finite())) {
        (Some(&(way, ms)), Some(&(_, fixed_ms))) if ms < MARGIN * fixed_ms => way,
        (_, Some(_)) => preferred,
        (Some(&(way, _)), None) => way,
        (None, None) => preferred,
    }
}

/// [`fixed`] for this backend's ways: cuDNN's first plain GEMM-type candidate (a transform
/// or TF32 on split operands only runs where the tuner compared its result), or on
/// [`ConvRoute::Split`] its first one in three TF32 passes where it has one; on
/// [`ConvRoute::Implicit`] the first of `own` (cnnlab's kernels that can run the pass).
fn fixed_way(route: ConvRoute, tf32: bool, pass: Pass, own: &[Way], candidates: &[Algo]) -> Way {
    if let (ConvRoute::Implicit, Some(&way)) = (route, own.first()) {
        return way;
    }
    let split = candidates.iter().find(|a| a.split != Split::No).filter(|_| route == ConvRoute::Split);
    let first = split.or_else(|| candidates.iter().find(|a| !a.compared_only())).map(|a| Way::Cudnn(*a));
    fixed(route, tf32, pass, first, Way::Im2col)
}

/// The way `pass` of this shape runs, where known without timing (None: [`tune`] it first);
/// `own`: cnnlab's kernels that can run it (see [`tune`]).
pub(crate) fn known_way(l: &mut Local, g: &WindowGeom, cout: usize, pass: Pass, own: &[Way]) -> Option<Way> {
    let route = route();
    // nothing to choose from: no cuDNN, and none of cnnlab's kernels runs the pass
    if route == ConvRoute::Im2col || (l.dnn.is_none() && own.is_empty()) {
        return Some(Way::Im2col);
    }
    let key = (route, shape(g, cout), pass);
    if let Some(&way) = l.conv.memo.get(&key) {
        return Some(way);
    }
    let mut all = choices();
    let way = match all.get(&key) {
        Some(c) => c.way,
        None if route == ConvRoute::Tune => return None,
        None => {
            let layout = if route == ConvRoute::CudnnNchw { Layout::Nchw } else { Layout::Nhwc };
            let candidates = l.dnn.as_mut().map(|d| d.candidates(g, cout, pass, layout)).unwrap_or_default();
            let way = fixed_way(route, l.conv.tf32, pass, own, &candidates);
            all.insert(key, Chosen::fixed(way));
            way
        }
    };
    l.conv.memo.insert(key, way);
    Some(way)
}

/// Times each way of running `pass` for this shape with `run` (im2col + cuBLAS, then `own`,
/// cnnlab's kernels that can run it, then cuDNN's candidates where cuDNN is loaded) on this
/// thread's stream, compares each one's result in `out` (address and values) with im2col +
/// cuBLAS's, and keeps the choice for the process. The other threads wait for it (they would
/// time the same thing, more noisily, beside this one).
pub(crate) fn tune(
    l: &mut Local,
    g: &WindowGeom,
    cout: usize,
    pass: Pass,
    own: &[Way],
    out: (u64, usize),
    run: &mut dyn FnMut(&mut Local, Way) -> std::result::Result<(), String>,
) -> Way {
    let key = (ConvRoute::Tune, shape(g, cout), pass);
    let mut all = choices();
    if let Some(c) = all.get(&key) {
        return c.way;
    }
    if l.dnn.is_none() && own.is_empty() {
        return Way::Im2col;
    }
    let tf32 = l.conv.tf32;
    let candidates = match l.dnn.as_mut() {
        Some(d) => {
            let mut both = d.candidates(g, cout, pass, Layout::Nhwc);
            both.extend(d.candidates(g, cout, pass, Layout::Nchw));
            both
        }
        None => Vec::new(),
    };
    // an earlier process's choice, where it is still one of the candidates
    let cache_key = l.conv.cache_key(g, cout, pass);
    if let Some(way) = tune_cache::lookup(&cache_key).and_then(|v| Way::parse(&v, own, &candidates)) {
        all.insert(key, Chosen { cached: true, ..Chosen::fixed(way) });
        return way;
    }
    let preferred = fixed_way(ConvRoute::Tune, tf32, pass, own, &candidates);
    let before = l.dnn.as_ref().map(|d| [d.workspace.cap, d.relayout.cap, d.split.cap]);
    // the sums each output value is: a window's taps (forward), the output channels over the
    // window (input gradient), every position of the batch (filter gradient)
    let terms = match pass {
        Pass::Forward | Pass::Inference => g.k(),
        Pass::Data => g.kh * g.kw * cout,
        Pass::Filter => g.n * g.positions(),
    };
    let tolerance = tolerance(tf32, terms);
    let mut reference = None;
    let mut timings = Vec::new();
    // a way whose scratch does not fit is left out, not the run's failure (see
    // `ConvTuning::timing`)
    let set_tuning = |l: &mut Local, on: bool| {
        l.conv.timing = on;
        if let Some(d) = l.dnn.as_mut() {
            d.tuning = on;
        }
    };
    set_tuning(l, true);
    let ways = std::iter::once(Way::Im2col).chain(own.iter().copied()).chain(candidates.into_iter().map(Way::Cudnn));
    for way in ways {
        // a way that failed stays in the list as NaN (`describe` shows it)
        poison(l, out);
        let ms = time(l, &mut |l| run(l, way)).unwrap_or(f32::NAN);
        let mut deviation = None;
        if ms.is_finite() {
            let result = read_prefix(l, out);
            match way {
                Way::Im2col => (reference, deviation) = (result, Some(0.0)),
                Way::Cudnn(_) | Way::Implicit { .. } => {
                    deviation = reference.as_deref().zip(result.as_deref()).map(|(r, y)| self::deviation(r, y))
                }
            }
        }
        timings.push(Timing { way, ms, deviation, tolerance });
    }
    set_tuning(l, false);
    if failed() {
        return preferred; // the run ends with the failure; nothing is kept
    }
    let eligible: Vec<(Way, f32)> =
        timings.iter().map(|t| (t.way, if t.eligible() { t.ms } else { f32::NAN })).collect();
    let way = pick_timed(preferred, &eligible);
    if let (Some(d), Some(before)) = (l.dnn.as_mut(), before) {
        d.give_back_scratch(before, way, g, cout);
    }
    let not_kept = tune_cache::store(&cache_key, &way.code()).err().map(|e| e.to_string());
    all.insert(key, Chosen { way, timings, cached: false, not_kept });
    way
}

/// Fills the values of `out` (address, values) that [`read_prefix`] compares with NaN before a
/// way is timed into it, so that values a way leaves unwritten count as NaN in the comparison:
/// they would otherwise keep the last way's, and a way that writes only part of its output
/// would pass as agreeing.
pub(crate) fn poison(l: &Local, (ptr, len): (u64, usize)) {
    let compared = len.min(COMPARED);
    l.launch_n(K::fill_f32, compared, &[ptr, f(f32::NAN), u(compared)]);
}

/// The first [`COMPARED`] values at `out` (address, values), read back (None where that
/// failed).
pub(crate) fn read_prefix(l: &mut Local, (ptr, len): (u64, usize)) -> Option<Vec<f32>> {
    let mut v = vec![0.0f32; len.min(COMPARED)];
    if v.is_empty() || failed() {
        return None;
    }
    // SAFETY: `out` holds at least `len` values, and `v` takes the first `v.len()`
    check(unsafe { drv::memcpy_dtoh_async(&mut v[..], ptr, l.raw_stream()) }, "download");
    l.sync();
    (!failed()).then_some(v)
}

/// The fastest of [`TIMED_RUNS`] runs of `run`, in milliseconds, after an untimed one (None
/// where it failed: a cuDNN error leaves that candidate out; a device failure is recorded).
pub(crate) fn time(l: &mut Local, run: &mut dyn FnMut(&mut Local) -> std::result::Result<(), String>) -> Option<f32> {
    run(l).ok()?;
    let stream = l.raw_stream();
    let make = || check(drv::event::create(drv_sys::CUevent_flags::CU_EVENT_DEFAULT).map(Some), "event creation");
    let start = make()?;
    let best = make().and_then(|end| {
        // SAFETY (each call): live events on this thread's live stream
        let mut once = || -> Option<f32> {
            check(unsafe { drv::event::record(start, stream) }, "event record");
            run(l).ok()?;
            check(unsafe { drv::event::record(end, stream) }, "event record");
            check(unsafe { drv::event::synchronize(end) }, "event synchronisation");
            let ms = check(unsafe { drv::event::elapsed(start, end) }.map(Some), "event timing")?;
            (!failed()).then_some(ms)
        };
        let best = (0..TIMED_RUNS).try_fold(f32::INFINITY, |b, _| once().map(|ms| b.min(ms)));
        // SAFETY: created above and no longer used
        let _ = unsafe { drv::event::destroy(end) };
        best
    });
    // SAFETY: as `end`
    let _ = unsafe { drv::event::destroy(start) };
    best
}

/// The choices of the process's route so far, one line per convolution shape and pass, with
/// the timings where they were timed (for `--profile` and the closing notes).
pub(crate) fn describe() -> Vec<String> {
    let route = route();
    let mut out: Vec<String> = choices()
        .iter()
        .filter(|((r, _, _), _)| *r == route)
        .map(|((_, (d, cout), pass), c)| {
            let mut line = format!(
                "{}x{}x{}x{} -> {cout}, {}x{} window, stride {}, {pass:?}: {}",
                d[0], d[1], d[2], d[3], d[4], d[5], d[6], c.way
            );
            if c.cached {
                line += " (from the tuning cache)";
            }
            if let Some(e) = &c.not_kept {
                line += &format!(" (not kept in the tuning cache: {e})");
            }
            if !c.timings.is_empty() {
                let t: Vec<String> = c.timings.iter().map(|t| t.to_string()).collect();
                line += &format!(" (timed: {})", t.join(", "));
            }
            line
        })
        .collect();
    out.sort();
    out
}

/// A thread's side of the choice of ways, with or without cuDNN: the choices it has looked up,
/// and the settings that the tuning cache's keys name.
pub(crate) struct ConvTuning {
    tf32: bool,
    /// The choices this thread has looked up (the shared map's lock is taken once per shape).
    memo: HashMap<ChoiceKey, Way>,
    /// The GPU, cuDNN and math settings, as the tuning cache's keys name them.
    setting: String,
    /// The tuner is timing ways: the scratch a way needs (the implicit filter gradient's
    /// partial sums; cuDNN's: see [`Dnn::tuning`], which follows this) is allocated without
    /// recording a failure, so that a way whose scratch does not fit beside the runs on the GPU
    /// is left out (it shows as failed) instead of ending the run.
    pub(crate) timing: bool,
}

impl ConvTuning {
    /// `gpu` names the device; `implicit`: cnnlab's implicit-GEMM kernels are among the ways
    /// (strict fp32 on compute capability 8.0 or newer); `dnn`: the thread's cuDNN, where it
    /// is loaded.
    pub(crate) fn new(gpu: &str, tf32: bool, implicit: bool, dnn: Option<&Dnn>) -> ConvTuning {
        // (choices kept before these kernels were among the ways are timed again)
        let own = if implicit { " or cnnlab's implicit 3xTF32 GEMMs," } else { "" };
        // (choices kept before results were compared, or with other candidates, are timed
        // again) a factor other than the default keeps choices of its own
        let within = match factor() {
            f if f == DEVIATION_FACTOR => String::new(),
            f => format!(" within {f} roundings"),
        };
        let setting = match dnn {
            Some(d) => {
                let math = match (tf32, d.splits) {
                    (true, _) => "TF32",
                    (false, true) => "fp32 or TF32 on split fp32 (3 passes or stacked),",
                    (false, false) => "fp32",
                };
                let with = if d.transforms { "with" } else { "without" };
                format!("{gpu}, cuDNN {}, {math}{own} {with} FFT and Winograd, compared{within}", dnn::get_version())
            }
            None => format!("{gpu}, no cuDNN, {}{own} compared{within}", if tf32 { "TF32" } else { "fp32" }),
        };
        ConvTuning { tf32, memo: HashMap::new(), setting, timing: false }
    }

    /// The tuning cache's key for `pass` of this shape.
    fn cache_key(&self, g: &WindowGeom, cout: usize, pass: Pass) -> String {
        format!(
            "{} | {}x{}x{}x{} -> {cout}, {}x{} window, stride {}x{}, padding {}x{} | {pass:?}",
            self.setting, g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw
        )
    }
}

/// A thread's cuDNN handle (on its stream), its descriptors per shape, and the workspace.
pub(crate) struct Dnn {
    handle: sys::cudnnHandle_t,
    tf32: bool,
    /// FFT and Winograd algorithms are candidates (compared with im2col + cuBLAS like every
    /// candidate: see the module docs); `CNNLAB_CUDNN_TRANSFORMS=0` leaves them out.
    transforms: bool,
    /// Strict fp32 times tensor-core algorithms in TF32 on split operands, in three passes and
    /// stacked (see the module docs); `CNNLAB_CUDNN_SPLIT=0` leaves them out.
    splits: bool,
    plans: HashMap<(Shape, Layout), Option<Plan>>,
    workspace: CudaBuf,
    /// Room for the NCHW copies (see [`Layout`]).
    relayout: CudaBuf,
    /// Room for split operands (see [`Split`]).
    split: CudaBuf,
    /// The tuner is timing ways ([`ConvTuning::timing`], copied here): the scratch a way needs
    /// (workspace, NCHW copies, split operands) is allocated without recording a failure, so
    /// that a way whose scratch does not fit beside the runs on the GPU is left out (it shows
    /// as failed) instead of ending the run. Outside the timing, a way chosen runs or the run
    /// ends with the failure.
    tuning: bool,
    /// The thread's stream, which the handle runs on and the workspace is allocated on.
    stream: drv_sys::CUstream,
}

/// Descriptors and candidate algorithms of one convolution shape (kept for the process's
/// life, like the rest of a thread's CUDA state).
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    forward: Vec<Algo>,
    data: Vec<Algo>,
    filter: Vec<Algo>,
}

/// A shape's descriptors and the handle, for one call.
struct Descriptors {
    handle: sys::cudnnHandle_t,
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

/// cuDNN's scaling factors: alpha 1; beta 0 overwrites the output (which is not read), beta 1
/// adds to it (the later passes of a split way).
const ONE: *const c_void = &1.0f32 as *const f32 as *const c_void;
const ZERO: *const c_void = &0.0f32 as *const f32 as *const c_void;

fn beta(accumulate: bool) -> *const c_void {
    if accumulate {
        ONE
    } else {
        ZERO
    }
}

/// What a heuristic's entry says of one algorithm.
struct Candidate {
    id: AlgoId,
    ok: bool,
    memory: usize,
    deterministic: bool,
    math: sys::cudnnMathType_t,
    /// An FFT or Winograd transform (rounding unlike a GEMM's).
    transform: bool,
}

impl Dnn {
    /// A handle on `stream` (the device was opened, and cuDNN checked there: see [`probe`]).
    pub(crate) fn new(stream: cudarc::driver::sys::CUstream, tf32: bool) -> Dnn {
        let handle = check_setup(dnn::create_handle(), "cuDNN handle creation");
        // SAFETY: a fresh handle and this thread's live stream
        check_setup(unsafe { dnn::set_stream(handle, stream as sys::cudaStream_t) }, "cuDNN stream");
        Dnn {
            handle,
            tf32,
            transforms: transforms_allowed(),
            // TF32 on split operands is a strict-fp32 way (with --tf32 plain TF32 is the point)
            splits: !tf32 && splits_allowed(),
            plans: HashMap::new(),
            workspace: CudaBuf::empty(stream),
            relayout: CudaBuf::empty(stream),
            split: CudaBuf::empty(stream),
            tuning: false,
            stream,
        }
    }

    /// Grows `buf` to `values` (see [`Dnn::tuning`]); whether it holds them.
    fn grow(buf: &mut CudaBuf, values: usize, stream: drv_sys::CUstream, tuning: bool) -> bool {
        if tuning {
            buf.try_reserve(values, stream)
        } else {
            buf.reserve(values, stream);
            !failed() && buf.cap >= values
        }
    }

    /// After timing: the workspace, NCHW and split room that only the candidates which lost
    /// needed are given back (FFT's workspace can take a gigabyte), keeping what the thread
    /// held before (`before`: values of each) and what `chosen` needs.
    fn give_back_scratch(&mut self, before: [usize; 3], chosen: Way, g: &WindowGeom, cout: usize) {
        let [workspace, relayout, split] = match chosen {
            Way::Cudnn(a) if a.layout == Layout::Nchw => [a.workspace.div_ceil(4), relayout_values(g, cout), 0],
            Way::Cudnn(a) if a.split != Split::No => [a.workspace.div_ceil(4), 0, split_values(g, cout)],
            Way::Cudnn(a) => [a.workspace.div_ceil(4), 0, 0],
            Way::Im2col | Way::Implicit { .. } => [0, 0, 0],
        };
        for (buf, keep) in [
            (&mut self.workspace, before[0].max(workspace)),
            (&mut self.relayout, before[1].max(relayout)),
            (&mut self.split, before[2].max(split)),
        ] {
            if buf.cap > keep {
                *buf = CudaBuf::empty(self.stream);
                buf.reserve(keep, self.stream);
            }
        }
    }

    /// Gives back the workspace and the NCHW copies' and split operands' room (see
    /// [`super::Local`]'s).
    pub(crate) fn release_scratch(&mut self) {
        self.workspace = CudaBuf::empty(self.stream);
        self.relayout = CudaBuf::empty(self.stream);
        self.split = CudaBuf::empty(self.stream);
    }

    /// Room for the NCHW copies of a convolution's tensors (see [`Layout`]): its address, or
    /// an error (the way is left out) where the allocation failed (recorded, and the op
    /// skipped, unless the tuner is timing: see [`Dnn::tuning`]).
    pub(crate) fn relayout(&mut self, g: &WindowGeom, cout: usize) -> std::result::Result<u64, String> {
        let fits = Self::grow(&mut self.relayout, relayout_values(g, cout), self.stream, self.tuning);
        fits.then_some(self.relayout.ptr).ok_or_else(|| "no memory for the NCHW copies".into())
    }

    /// Room for the split operands of a convolution's pass (see [`Split`]): as [`Dnn::relayout`].
    pub(crate) fn split_room(&mut self, g: &WindowGeom, cout: usize) -> std::result::Result<u64, String> {
        let fits = Self::grow(&mut self.split, split_values(g, cout), self.stream, self.tuning);
        fits.then_some(self.split.ptr).ok_or_else(|| "no memory for the split operands".into())
    }

    /// The qualifying candidates (see the module docs), in the heuristic's order, each once,
    /// with the math type to run them with: in strict fp32 FMA math whatever the entry says
    /// (the heuristic may rank an algorithm under the default math type, which on Ampere and
    /// newer lets cuDNN use TF32; PyTorch forces FMA math the same way). FFT and Winograd
    /// ones too unless `CNNLAB_CUDNN_TRANSFORMS=0`.
    ///
    /// With `split` (strict fp32, the heuristic asked under a math type that permits TF32):
    /// the GEMM-type algorithms it would run on tensor cores, each once, to run as three TF32
    /// passes ([`Split::Passes`]); not FMA-only ones (three times the products in fp32 are
    /// just slower), transforms (they round their transformed operands to TF32) or entries
    /// that may convert to half precision.
    fn qualifying(&self, found: impl Iterator<Item = Candidate>, layout: Layout, split: bool) -> Vec<Algo> {
        use sys::cudnnMathType_t::{CUDNN_DEFAULT_MATH, CUDNN_FMA_MATH, CUDNN_TENSOR_OP_MATH};
        let mut out: Vec<Algo> = Vec::new();
        for c in found {
            let fits = c.ok && c.deterministic && c.memory <= MAX_WORKSPACE;
            if split {
                let tensor = matches!(c.math, CUDNN_DEFAULT_MATH | CUDNN_TENSOR_OP_MATH);
                if fits && tensor && !c.transform && !out.iter().any(|a| a.id == c.id) {
                    let split = Split::Passes;
                    out.push(Algo { id: c.id, math: c.math, workspace: c.memory, layout, transform: false, split });
                }
                continue;
            }
            let plain = matches!(c.math, CUDNN_FMA_MATH | CUDNN_DEFAULT_MATH);
            let math = if self.tf32 { c.math } else { CUDNN_FMA_MATH };
            let allowed = (self.tf32 || plain) && (!c.transform || self.transforms);
            if fits && allowed && !out.iter().any(|a| a.id == c.id && a.math == math) {
                let split = Split::No;
                out.push(Algo { id: c.id, math, workspace: c.memory, layout, transform: c.transform, split });
            }
        }
        out
    }

    /// cuDNN's candidates for `pass` of this shape in `layout` (none where cuDNN cannot run
    /// it).
    fn candidates(&mut self, g: &WindowGeom, cout: usize, pass: Pass, layout: Layout) -> Vec<Algo> {
        let mut out = self.listed(g, cout, pass, layout);
        if self.splits && layout == Layout::Nhwc {
            // the three-pass algorithms of the stacked shape, run once on it
            let (g3, cout3) = stacked(g, cout, pass);
            let found = self.listed(&g3, cout3, pass, layout).into_iter().filter(|a| a.split == Split::Passes);
            out.extend(found.map(|a| Algo { split: Split::Stacked, ..a }).collect::<Vec<_>>());
        }
        out
    }

    /// The candidates of this shape's plan for `pass` (none where cuDNN cannot run it).
    fn listed(&mut self, g: &WindowGeom, cout: usize, pass: Pass, layout: Layout) -> Vec<Algo> {
        match self.plan(g, cout, layout) {
            None => Vec::new(),
            Some(p) => match pass {
                Pass::Forward | Pass::Inference => p.forward.clone(),
                Pass::Data => p.data.clone(),
                Pass::Filter => p.filter.clone(),
            },
        }
    }

    fn plan(&mut self, g: &WindowGeom, cout: usize, layout: Layout) -> Option<&Plan> {
        let key = (shape(g, cout), layout);
        if !self.plans.contains_key(&key) {
            let plan = self.make_plan(g, cout, layout);
            self.plans.insert(key, plan);
        }
        self.plans.get(&key).and_then(|p| p.as_ref())
    }

    fn make_plan(&self, g: &WindowGeom, cout: usize, layout: Layout) -> Option<Plan> {
        use sys::cudnnDataType_t::CUDNN_DATA_FLOAT as F32;
        use sys::cudnnTensorFormat_t::{CUDNN_TENSOR_NCHW, CUDNN_TENSOR_NHWC};
        // the filter takes the same format: KRSC with NHWC, KCRS with NCHW
        let format = match layout {
            Layout::Nhwc => CUDNN_TENSOR_NHWC,
            Layout::Nchw => CUDNN_TENSOR_NCHW,
        };
        let dims = [g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow, cout];
        if dims.iter().any(|&d| d > i32::MAX as usize) {
            return None;
        }
        let i = |v: usize| v as i32;
        let h = self.handle;
        // SAFETY: descriptors are created before they are set and used, and all calls get
        // this thread's live handle; the heuristics write at most `count` entries
        unsafe {
            let x = dnn::create_tensor_descriptor().ok()?;
            dnn::set_tensor4d_descriptor(x, format, F32, [i(g.n), i(g.c), i(g.h), i(g.w)]).ok()?;
            let y = dnn::create_tensor_descriptor().ok()?;
            dnn::set_tensor4d_descriptor(y, format, F32, [i(g.n), i(cout), i(g.oh), i(g.ow)]).ok()?;
            let w = dnn::create_filter_descriptor().ok()?;
            dnn::set_filter4d_descriptor(w, F32, format, [i(cout), i(g.c), i(g.kh), i(g.kw)]).ok()?;
            let conv = dnn::create_convolution_descriptor().ok()?;
            let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
            dnn::set_convolution2d_descriptor(conv, i(g.ph), i(g.pw), i(g.sh), i(g.sw), 1, 1, mode, F32).ok()?;
            // each direction's qualifying candidates, as the heuristic ranks them under a math
            // type: the run's (FMA in strict fp32, TF32 allowed with --tf32), and in strict fp32
            // one that allows TF32, for the three-pass ways (`split`)
            let query = |split: bool| -> Option<[Vec<Algo>; 3]> {
                use sys::cudnnMathType_t::{CUDNN_DEFAULT_MATH, CUDNN_FMA_MATH};
                let math = if self.tf32 || split { CUDNN_DEFAULT_MATH } else { CUDNN_FMA_MATH };
                dnn::set_convolution_math_type(conv, math).ok()?;
                // one direction's qualifying candidates from heuristic `$get` (its descriptors
                // after the handle: `$a, $b, conv, $c`); `gemm` lists its GEMM-type algorithms
                // (the others transform: FFT, Winograd)
                macro_rules! candidates {
                    ($perf:ty, $n:literal, $algo:ty, $id:path, [$($gemm:ident),+], $get:path, ($a:expr, $b:expr, $c:expr)) => {{
                        let mut out = [std::mem::zeroed::<$perf>(); $n];
                        let mut count = 0;
                        $get(h, $a, $b, conv, $c, $n, &mut count, out.as_mut_ptr()).ok()?;
                        let found = &out[..count.clamp(0, $n) as usize];
                        self.qualifying(found.iter().map(|p| Candidate {
                            id: $id(p.algo),
                            ok: p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS,
                            memory: p.memory,
                            deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                            math: p.mathType,
                            transform: !matches!(p.algo, $(<$algo>::$gemm)|+),
                        }), layout, split)
                    }};
                }
                let forward = candidates!(
                    sys::cudnnConvolutionFwdAlgoPerf_t,
                    8,
                    sys::cudnnConvolutionFwdAlgo_t,
                    AlgoId::Forward,
                    [
                        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT
                    ],
                    dnn::get_convolution_forward_algorithm,
                    (x, w, y)
                );
                let data = candidates!(
                    sys::cudnnConvolutionBwdDataAlgoPerf_t,
                    6,
                    sys::cudnnConvolutionBwdDataAlgo_t,
                    AlgoId::Data,
                    [CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1],
                    dnn::get_convolution_backward_data_algorithm,
                    (w, y, x)
                );
                let filter = candidates!(
                    sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                    7,
                    sys::cudnnConvolutionBwdFilterAlgo_t,
                    AlgoId::Filter,
                    [
                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3
                    ],
                    dnn::get_convolution_backward_filter_algorithm,
                    (x, y, w)
                );
                Some([forward, data, filter])
            };
            let [mut forward, mut data, mut filter] = query(false)?;
            if self.splits && layout == Layout::Nhwc {
                // (a heuristic that fails under TF32 math leaves the plain candidates)
                if let Some([f, d, b]) = query(true) {
                    forward.extend(f);
                    data.extend(d);
                    filter.extend(b);
                }
            }
            Some(Plan { x, y, w, conv, forward, data, filter })
        }
    }

    /// Runs `call` for `algo` on this shape (on its [`stacked`] shape for
    /// [`Split::Stacked`]): the shape's descriptors (x, y, w, convolution) with `algo`'s math
    /// type set, and its workspace. Skipped after a failure, as every op.
    fn run(
        &mut self,
        algo: &Algo,
        g: &WindowGeom,
        cout: usize,
        call: impl FnOnce(&Descriptors, *mut c_void) -> std::result::Result<(), dnn::CudnnError>,
    ) -> std::result::Result<(), String> {
        let (g, cout) = match algo.split {
            Split::Stacked => stacked(g, cout, algo.pass()),
            _ => (*g, cout),
        };
        let Some(p) = self.plan(&g, cout, algo.layout) else {
            return Err("cuDNN cannot run this convolution shape".into());
        };
        let d = Descriptors { x: p.x, y: p.y, w: p.w, conv: p.conv, handle: self.handle };
        // SAFETY: the descriptor is this thread's
        unsafe { dnn::set_convolution_math_type(d.conv, algo.math) }.map_err(|e| e.to_string())?;
        if !Self::grow(&mut self.workspace, algo.workspace.div_ceil(4), self.stream, self.tuning) {
            if failed() {
                return Ok(()); // recorded: the run ends with it
            }
            return Err("no memory for its workspace".into());
        }
        call(&d, self.workspace.ptr as *mut c_void).map_err(|e| e.to_string())
    }

    /// `y = conv(x, w)` (no bias) with `algo`; `y += conv(x, w)` where `accumulate`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &mut self,
        algo: &Algo,
        x: u64,
        w: u64,
        g: &WindowGeom,
        cout: usize,
        y: u64,
        accumulate: bool,
    ) -> std::result::Result<(), String> {
        let AlgoId::Forward(id) = algo.id else { return Err("not a forward algorithm".into()) };
        let bytes = algo.workspace;
        // SAFETY: the buffers hold the shapes the descriptors describe (the op checked them)
        self.run(algo, g, cout, |d, ws| unsafe {
            let beta = beta(accumulate);
            dnn::convolution_forward(d.handle, ONE, d.x, x as _, d.w, w as _, d.conv, id, ws, bytes, beta, d.y, y as _)
        })
    }

    /// `dw = ∂L/∂w` (overwritten; added to where `accumulate`) with `algo`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_filter(
        &mut self,
        algo: &Algo,
        x: u64,
        dy: u64,
        g: &WindowGeom,
        cout: usize,
        dw: u64,
        accumulate: bool,
    ) -> std::result::Result<(), String> {
        let AlgoId::Filter(id) = algo.id else { return Err("not a filter-gradient algorithm".into()) };
        let bytes = algo.workspace;
        // SAFETY: as in `forward`
        self.run(algo, g, cout, |d, ws| unsafe {
            dnn::convolution_backward_filter(
                d.handle,
                ONE,
                d.x,
                x as _,
                d.y,
                dy as _,
                d.conv,
                id,
                ws,
                bytes,
                beta(accumulate),
                d.w,
                dw as _,
            )
        })
    }

    /// `dx = ∂L/∂x` (overwritten; added to where `accumulate`) with `algo`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_data(
        &mut self,
        algo: &Algo,
        w: u64,
        dy: u64,
        g: &WindowGeom,
        cout: usize,
        dx: u64,
        accumulate: bool,
    ) -> std::result::Result<(), String> {
        let AlgoId::Data(id) = algo.id else { return Err("not an input-gradient algorithm".into()) };
        let bytes = algo.workspace;
        // SAFETY: as in `forward`
        self.run(algo, g, cout, |d, ws| unsafe {
            dnn::convolution_backward_data(
                d.handle,
                ONE,
                d.w,
                w as _,
                d.y,
                dy as _,
                d.conv,
                id,
                ws,
                bytes,
                beta(accumulate),
                d.x,
                dx as _,
            )
        })
    }
}
