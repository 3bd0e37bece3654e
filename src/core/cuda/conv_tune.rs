//! Which way each pass of a convolution runs (`window.rs` runs it): im2col + cuBLAS, one of
//! cuDNN's algorithms where cuDNN is loaded (`cudnn.rs`), or one of cnnlab's implicit-GEMM
//! kernels. The timing and the comparison of results are `tuning.rs`'s, shared with the GEMMs.
//!
//! Every timed way's result is also compared with im2col + cuBLAS's (the CPU's
//! arithmetic) on the same call, and one that differs by more than [`DEVIATION_FACTOR`] times
//! the rounding of one sum of the pass's length is left out ([`tolerance`]). That is what lets
//! strict fp32 take cuDNN's FFT and Winograd transforms (whose rounding is not a GEMM's: PyTorch's
//! fp32 takes them unchecked) where they are both faster and that close, and it stops a
//! way that computes something else (a layout mistake) from ever being chosen.
//! `CNNLAB_CUDNN_TRANSFORMS=0` leaves FFT and Winograd out altogether. The fixed routes take
//! the heuristic's first GEMM-type candidate, which is never checked.
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
//! each shape and pass is timed once — im2col + cuBLAS against cuDNN's candidates and cnnlab's kernels, on the
//! call's own buffers — and every run of the process then takes the same choice, so runs
//! trained together agree with runs trained alone. The choice is kept in the tuning cache
//! (`tune_cache.rs`), which later processes on the machine read instead of timing again:
//! processes that each timed for themselves chose differently where two ways timed alike, and
//! so rounded differently (the CUDA emulator's repeated runs showed it). A candidate must beat
//! the fixed choice by [`MARGIN`](super::tuning::MARGIN) to replace it. `CNNLAB_CUDNN=0|1|nchw|inference` fixes the
//! route outright.

use super::cudnn::{self, Algo, Dnn, Layout, Split};
use super::tuning::{deviation, eligible, factor, pick_timed, poison, read_prefix, time, tolerance, DEVIATION_FACTOR};
use super::{failed, tune_cache, Local};
use crate::core::ops::conv2d::WindowGeom;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

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

/// A pass of a convolution. Forward passes of training and of inference are told apart:
/// with im2col, a training forward leaves the columns that the filter gradient reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    Forward,
    Inference,
    Filter,
    Data,
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
            Way::Cudnn(a) => write!(f, "cuDNN {a}"),
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
            Way::Cudnn(a) => format!("cudnn {}", a.code()),
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
        Algo::parse(code.strip_prefix("cudnn ")?, candidates).map(Way::Cudnn)
    }
}

/// A convolution's shape: the window geometry and the output channels.
pub(crate) type Shape = ([usize; 12], usize);

pub(crate) fn shape(g: &WindowGeom, cout: usize) -> Shape {
    ([g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow], cout)
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
    let before = l.dnn.as_ref().map(|d| d.scratch_held());
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
    // a way whose scratch does not fit is left out, not the run's failure (see [`timing_ways`])
    let timing = TimingWays::start();
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
    drop(timing);
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
}

thread_local! {
    /// Whether this thread's tuner is timing ways (see [`timing_ways`]).
    static TIMING_WAYS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread's tuner is timing ways: the scratch a way needs (cuDNN's workspace,
/// NCHW copies and split operands; the implicit filter gradient's partial sums) is then
/// allocated without recording a failure, so that a way whose scratch does not fit beside the
/// runs on the GPU is left out (it shows as failed) instead of ending the run. Outside the
/// timing, a way chosen runs or the run ends with the failure.
pub(crate) fn timing_ways() -> bool {
    TIMING_WAYS.with(|t| t.get())
}

/// Sets [`timing_ways`] for as long as it lives.
struct TimingWays;

impl TimingWays {
    fn start() -> TimingWays {
        TIMING_WAYS.with(|t| t.set(true));
        TimingWays
    }
}

impl Drop for TimingWays {
    fn drop(&mut self) {
        TIMING_WAYS.with(|t| t.set(false));
    }
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
                let math = match (tf32, d.splits()) {
                    (true, _) => "TF32",
                    (false, true) => "fp32 or TF32 on split fp32 (3 passes or stacked),",
                    (false, false) => "fp32",
                };
                let with = if d.transforms() { "with" } else { "without" };
                format!("{gpu}, cuDNN {}, {math}{own} {with} FFT and Winograd, compared{within}", cudnn::version())
            }
            None => format!("{gpu}, no cuDNN, {}{own} compared{within}", if tf32 { "TF32" } else { "fp32" }),
        };
        ConvTuning { tf32, memo: HashMap::new(), setting }
    }

    /// The tuning cache's key for `pass` of this shape.
    fn cache_key(&self, g: &WindowGeom, cout: usize, pass: Pass) -> String {
        format!(
            "{} | {}x{}x{}x{} -> {cout}, {}x{} window, stride {}x{}, padding {}x{} | {pass:?}",
            self.setting, g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw
        )
    }
}
