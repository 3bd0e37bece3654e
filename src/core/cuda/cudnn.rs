//! Convolutions through cuDNN: its candidate algorithms for each shape and pass, and the
//! calls (the tuner, `conv_tune.rs`, chooses among them). cnnlab's layouts are cuDNN's NHWC tensors and KRSC
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
//! FFT and Winograd transforms round unlike a GEMM: they are candidates because the tuner
//! compares every timed result with im2col + cuBLAS's and leaves out one that is too far
//! (PyTorch's fp32 takes them unchecked); `CNNLAB_CUDNN_TRANSFORMS=0` leaves them out
//! altogether. The fixed routes take the heuristic's first GEMM-type candidate, which is
//! never checked.
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

use super::conv_tune::{shape, timing_ways, Pass, Shape, Way};
use super::{check_setup, failed, CudaBuf};
use crate::core::ops::conv2d::WindowGeom;
use crate::error::{Error, Result};
use cudarc::cudnn::{result as dnn, sys};
use cudarc::driver::sys as drv_sys;
use std::collections::HashMap;
use std::ffi::c_void;

/// Workspace beyond this is not worth an algorithm (the im2col path needs no more).
const MAX_WORKSPACE: usize = 1 << 30;

/// Whether FFT and Winograd algorithms are candidates (unless `CNNLAB_CUDNN_TRANSFORMS=0`).
pub(crate) fn transforms_allowed() -> bool {
    std::env::var("CNNLAB_CUDNN_TRANSFORMS").as_deref() != Ok("0")
}

/// Whether strict fp32 times tensor-core algorithms in TF32 on split operands (three passes or
/// stacked: see the module docs), unless `CNNLAB_CUDNN_SPLIT=0`.
pub(crate) fn splits_allowed() -> bool {
    std::env::var("CNNLAB_CUDNN_SPLIT").as_deref() != Ok("0")
}

/// Whether libcudnn can be opened (only asks the loader).
pub(crate) fn present() -> bool {
    // SAFETY: only asks the loader whether the library can be opened
    unsafe { sys::is_culib_present() }
}

/// cuDNN's version number (e.g. 91900 for 9.19.0).
pub(crate) fn version() -> usize {
    dnn::get_version()
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
    pub(crate) fn compared_only(&self) -> bool {
        self.transform || self.split != Split::No
    }

    fn pass(&self) -> Pass {
        match self.id {
            AlgoId::Forward(_) => Pass::Forward,
            AlgoId::Data(_) => Pass::Data,
            AlgoId::Filter(_) => Pass::Filter,
        }
    }

    /// How the tuning cache writes it (after `cudnn `): `<algorithm> <math type>` (cuDNN's
    /// enum values), followed by ` nchw` on NCHW copies, ` split` as three TF32 passes or
    /// ` stacked` on stacked split operands.
    pub(crate) fn code(&self) -> String {
        let suffix = match (self.layout, self.split) {
            (Layout::Nchw, _) => " nchw",
            (_, Split::Passes) => " split",
            (_, Split::Stacked) => " stacked",
            (_, Split::No) => "",
        };
        format!("{} {}{suffix}", self.id.code(), self.math as u32)
    }

    /// The one of `candidates` that `code` names (see [`Algo::code`]; None: a cache written by
    /// another cuDNN, or with other settings).
    pub(crate) fn parse(code: &str, candidates: &[Algo]) -> Option<Algo> {
        let (code, layout) = match code.strip_suffix(" nchw") {
            Some(c) => (c, Layout::Nchw),
            None => (code, Layout::Nhwc),
        };
        let (code, split) = match (code.strip_suffix(" split"), code.strip_suffix(" stacked")) {
            (Some(c), _) => (c, Split::Passes),
            (_, Some(c)) => (c, Split::Stacked),
            _ => (code, Split::No),
        };
        let mut it = code.split(' ').map(|v| v.parse::<u32>().ok());
        let (id, math) = (it.next()??, it.next()??);
        let found = candidates
            .iter()
            .find(|a| a.id.code() == id && a.math as u32 == math && a.layout == layout && a.split == split);
        found.copied()
    }
}

impl std::fmt::Display for Algo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.id {
            AlgoId::Forward(x) => format!("{x:?}"),
            AlgoId::Data(x) => format!("{x:?}"),
            AlgoId::Filter(x) => format!("{x:?}"),
        };
        let tensor = matches!(self.math, sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH);
        write!(
            f,
            "{}{}{}",
            name.trim_start_matches("CUDNN_CONVOLUTION_"),
            if self.layout == Layout::Nchw { " on NCHW copies" } else { "" },
            match (self.split, tensor) {
                (Split::Passes, _) => " as 3 TF32 passes on split fp32",
                (Split::Stacked, _) => " in TF32 on stacked split fp32",
                (Split::No, true) => " (tensor ops)",
                (Split::No, false) => "",
            }
        )
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

impl AlgoId {
    fn code(&self) -> u32 {
        match *self {
            AlgoId::Forward(a) => a as u32,
            AlgoId::Data(a) => a as u32,
            AlgoId::Filter(a) => a as u32,
        }
    }
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
            stream,
        }
    }

    /// FFT and Winograd algorithms are candidates.
    pub(crate) fn transforms(&self) -> bool {
        self.transforms
    }

    /// TF32 on split operands is among the candidates.
    pub(crate) fn splits(&self) -> bool {
        self.splits
    }

    /// The values the workspace, the NCHW copies' room and the split room hold now.
    pub(crate) fn scratch_held(&self) -> [usize; 3] {
        [self.workspace.cap, self.relayout.cap, self.split.cap]
    }

    /// Grows `buf` to `values` (without recording a failure while the tuner times ways: see
    /// [`timing_ways`]); whether it holds them.
    fn grow(buf: &mut CudaBuf, values: usize, stream: drv_sys::CUstream) -> bool {
        if timing_ways() {
            buf.try_reserve(values, stream)
        } else {
            buf.reserve(values, stream);
            !failed() && buf.cap >= values
        }
    }

    /// After timing: the workspace, NCHW and split room that only the candidates which lost
    /// needed are given back (FFT's workspace can take a gigabyte), keeping what the thread
    /// held before (`before`: values of each) and what `chosen` needs.
    pub(crate) fn give_back_scratch(&mut self, before: [usize; 3], chosen: Way, g: &WindowGeom, cout: usize) {
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
    /// skipped, unless the tuner is timing: see [`timing_ways`]).
    pub(crate) fn relayout(&mut self, g: &WindowGeom, cout: usize) -> std::result::Result<u64, String> {
        let fits = Self::grow(&mut self.relayout, relayout_values(g, cout), self.stream);
        fits.then_some(self.relayout.ptr).ok_or_else(|| "no memory for the NCHW copies".into())
    }

    /// Room for the split operands of a convolution's pass (see [`Split`]): as [`Dnn::relayout`].
    pub(crate) fn split_room(&mut self, g: &WindowGeom, cout: usize) -> std::result::Result<u64, String> {
        let fits = Self::grow(&mut self.split, split_values(g, cout), self.stream);
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
    pub(crate) fn candidates(&mut self, g: &WindowGeom, cout: usize, pass: Pass, layout: Layout) -> Vec<Algo> {
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
        if !Self::grow(&mut self.workspace, algo.workspace.div_ceil(4), self.stream) {
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
