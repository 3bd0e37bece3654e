//! Convolutions through cuDNN. cnnlab's layouts are cuDNN's NHWC tensors and KRSC filters as
//! they are (`[N, H, W, C]` activations, `[Cout, kh, kw, Cin]` weights in im2col order), so
//! nothing is copied or transposed, and the im2col buffer (rows × K values: 300 MB for a
//! 64→128 layer on a batch of 128 CIFAR images) is not needed.
//!
//! Each direction (forward, backward-data, backward-filter) uses the first algorithm cuDNN's
//! heuristic ranks that is deterministic (a seed gives the same numbers every run, as on the
//! CPU) and, in strict fp32, FMA math (no TF32) and no FFT or Winograd transform, whose
//! rounding differs from a GEMM's: the same sums as im2col + GEMM in another order. With
//! `--tf32` any deterministic algorithm qualifies. The choice is made once per shape and kept.
//! cuDNN runs every convolution with `--tf32` (or `CNNLAB_CUDNN=1`) and, in strict fp32, the
//! forward passes of evaluation and inference only (see [`route`]). Where it does not,
//! libcudnn is not found, or no algorithm qualifies for a shape, the convolution is im2col +
//! cuBLAS (`window.rs`).

use super::{check, check_setup, failed, CudaBuf};
use cudarc::cudnn::{result as dnn, sys};
use std::collections::HashMap;
use std::ffi::c_void;

/// Workspace beyond this is not worth an algorithm (the im2col path needs no more).
const MAX_WORKSPACE: usize = 1 << 30;

/// Which convolutions cuDNN runs in a process (the rest: im2col + cuBLAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    None,
    /// Forward passes that no backward follows (evaluation, inference).
    Inference,
    All,
}

/// The route: `CNNLAB_CUDNN=1` all convolutions, `0` none; unset: all with `--tf32`, and in
/// strict fp32 inference only. Measured on an H200 (`cnnlab bench`, 2026-11-28): in strict fp32
/// the qualifying cuDNN algorithms (GEMM-type, FMA math) trained W1 slower than im2col +
/// cuBLAS (17,138 against 22,969 images/s, one sitting; their backward passes took 2-3.4x their
/// forward) but ran W1's inference faster (72,265 against 52,894 images/s, two sittings);
/// with TF32, cuDNN's tensor-core kernels are the fast route (81,911 images/s training W1).
pub(crate) fn route(tf32: bool) -> Route {
    // SAFETY: only asks the loader whether the library can be opened
    if !unsafe { sys::is_culib_present() } {
        return Route::None;
    }
    match std::env::var("CNNLAB_CUDNN").as_deref() {
        Ok("0") => Route::None,
        Ok(_) => Route::All,
        Err(_) if tf32 => Route::All,
        Err(_) => Route::Inference,
    }
}

/// Checks, when the device opens, that cuDNN loads and makes a handle (its sub-libraries sit
/// beside libcudnn and must be on the library path too): one error line rather than a failure
/// inside the first convolution.
pub(crate) fn probe() -> crate::error::Result<()> {
    let fail = |e: String| {
        crate::error::Error::Device(format!(
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

/// A thread's cuDNN handle (on its stream), the plans it chose and their workspace.
pub(crate) struct Dnn {
    handle: sys::cudnnHandle_t,
    tf32: bool,
    route: Route,
    /// `CNNLAB_CUDNN_TRANSFORMS=1`: strict fp32 may use FFT and Winograd too (an experiment:
    /// PyTorch's fp32 allows them; their rounding is not a GEMM's).
    transforms: bool,
    plans: HashMap<Key, Option<Plan>>,
    workspace: CudaBuf,
}

/// A convolution's shape: the window geometry and the output channels.
type Key = ([usize; 12], usize);

/// Descriptors and algorithms of one convolution shape (kept for the process's life, like
/// the rest of a thread's CUDA state).
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    forward: (sys::cudnnConvolutionDescriptor_t, sys::cudnnConvolutionFwdAlgo_t, usize),
    backward_data: (sys::cudnnConvolutionDescriptor_t, sys::cudnnConvolutionBwdDataAlgo_t, usize),
    backward_filter: (sys::cudnnConvolutionDescriptor_t, sys::cudnnConvolutionBwdFilterAlgo_t, usize),
}

/// What a heuristic's entry says of one algorithm.
struct Candidate {
    ok: bool,
    memory: usize,
    deterministic: bool,
    math: sys::cudnnMathType_t,
    /// An FFT or Winograd transform (rounding unlike a GEMM's).
    transform: bool,
}

impl Dnn {
    /// A handle on `stream` (the device was opened, and cuDNN checked there: see [`probe`]).
    pub(crate) fn new(stream: cudarc::driver::sys::CUstream, tf32: bool, route: Route) -> Dnn {
        let handle = check_setup(dnn::create_handle(), "cuDNN handle creation");
        // SAFETY: a fresh handle and this thread's live stream
        check_setup(unsafe { dnn::set_stream(handle, stream as sys::cudaStream_t) }, "cuDNN stream");
        let transforms = std::env::var("CNNLAB_CUDNN_TRANSFORMS").as_deref() == Ok("1");
        Dnn { handle, tf32, route, transforms, plans: HashMap::new(), workspace: CudaBuf::empty(stream) }
    }

    /// The first qualifying candidate (see the module docs), by the heuristic's ranking, and
    /// the math type to run it with. In strict fp32 that is FMA math whatever the entry says
    /// (the heuristic may rank an algorithm under the default math type, which on Ampere and
    /// newer lets cuDNN use TF32; PyTorch forces FMA math the same way).
    fn pick(&self, candidates: impl Iterator<Item = Candidate>) -> Option<(usize, sys::cudnnMathType_t, usize)> {
        use sys::cudnnMathType_t::{CUDNN_DEFAULT_MATH, CUDNN_FMA_MATH};
        candidates.enumerate().find_map(|(i, c)| {
            let fits = c.ok && c.deterministic && c.memory <= MAX_WORKSPACE;
            if self.tf32 {
                return fits.then_some((i, c.math, c.memory));
            }
            let plain = matches!(c.math, CUDNN_FMA_MATH | CUDNN_DEFAULT_MATH) && (!c.transform || self.transforms);
            (fits && plain).then_some((i, CUDNN_FMA_MATH, c.memory))
        })
    }

    /// The plan for shape `g` with `cout` output channels (None: no algorithm qualifies).
    fn plan(&mut self, g: &crate::core::ops::conv2d::WindowGeom, cout: usize) -> Option<&Plan> {
        let key = ([g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow], cout);
        if !self.plans.contains_key(&key) {
            let plan = self.make_plan(g, cout);
            self.plans.insert(key, plan);
        }
        self.plans.get(&key).and_then(|p| p.as_ref())
    }

    fn make_plan(&self, g: &crate::core::ops::conv2d::WindowGeom, cout: usize) -> Option<Plan> {
        use sys::cudnnDataType_t::CUDNN_DATA_FLOAT as F32;
        use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC as NHWC;
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
            dnn::set_tensor4d_descriptor(x, NHWC, F32, [i(g.n), i(g.c), i(g.h), i(g.w)]).ok()?;
            let y = dnn::create_tensor_descriptor().ok()?;
            dnn::set_tensor4d_descriptor(y, NHWC, F32, [i(g.n), i(cout), i(g.oh), i(g.ow)]).ok()?;
            let w = dnn::create_filter_descriptor().ok()?;
            dnn::set_filter4d_descriptor(w, F32, NHWC, [i(cout), i(g.c), i(g.kh), i(g.kw)]).ok()?;
            let conv = || -> Option<sys::cudnnConvolutionDescriptor_t> {
                let c = dnn::create_convolution_descriptor().ok()?;
                let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
                dnn::set_convolution2d_descriptor(c, i(g.ph), i(g.pw), i(g.sh), i(g.sw), 1, 1, mode, F32).ok()?;
                let math = if self.tf32 {
                    sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
                } else {
                    sys::cudnnMathType_t::CUDNN_FMA_MATH
                };
                dnn::set_convolution_math_type(c, math).ok()?;
                Some(c)
            };
            // one direction: ask the heuristic, pick (see `pick`), set the math type; `gemm`
            // lists the direction's GEMM-type algorithms (the others transform: FFT, Winograd)
            macro_rules! choose {
                ($perf:ty, $n:literal, $algo:ty, [$($gemm:ident),+], |$c:ident, $out:ident, $count:ident| $get:expr) => {{
                    let $c = conv()?;
                    let mut $out = [std::mem::zeroed::<$perf>(); $n];
                    let mut $count = 0;
                    $get.ok()?;
                    let found = &$out[..$count.clamp(0, $n) as usize];
                    let (k, math, memory) = self.pick(found.iter().map(|p| Candidate {
                        ok: p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS,
                        memory: p.memory,
                        deterministic: p.determinism == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                        math: p.mathType,
                        transform: !matches!(p.algo, $(<$algo>::$gemm)|+),
                    }))?;
                    dnn::set_convolution_math_type($c, math).ok()?;
                    ($c, found[k].algo, memory)
                }};
            }
            let forward = choose!(
                sys::cudnnConvolutionFwdAlgoPerf_t,
                8,
                sys::cudnnConvolutionFwdAlgo_t,
                [
                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                    CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                    CUDNN_CONVOLUTION_FWD_ALGO_DIRECT
                ],
                |c, perf, count| dnn::get_convolution_forward_algorithm(
                    h,
                    x,
                    w,
                    c,
                    y,
                    8,
                    &mut count,
                    perf.as_mut_ptr()
                )
            );
            let backward_data = choose!(
                sys::cudnnConvolutionBwdDataAlgoPerf_t,
                6,
                sys::cudnnConvolutionBwdDataAlgo_t,
                [CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1],
                |c, perf, count| dnn::get_convolution_backward_data_algorithm(
                    h,
                    w,
                    y,
                    c,
                    x,
                    6,
                    &mut count,
                    perf.as_mut_ptr()
                )
            );
            let backward_filter = choose!(
                sys::cudnnConvolutionBwdFilterAlgoPerf_t,
                7,
                sys::cudnnConvolutionBwdFilterAlgo_t,
                [
                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3
                ],
                |c, perf, count| dnn::get_convolution_backward_filter_algorithm(
                    h,
                    x,
                    y,
                    c,
                    w,
                    7,
                    &mut count,
                    perf.as_mut_ptr()
                )
            );
            Some(Plan { x, y, w, forward, backward_data, backward_filter })
        }
    }

    /// The workspace, at least `bytes` (on this thread's stream).
    fn workspace(&mut self, bytes: usize, stream: cudarc::driver::sys::CUstream) -> (*mut c_void, usize) {
        self.workspace.reserve(bytes.div_ceil(4), stream);
        (self.workspace.ptr as *mut c_void, bytes)
    }

    /// `y = conv(x, w)` (no bias); false where no cuDNN algorithm qualifies for the shape, or
    /// where the route leaves training passes to im2col + cuBLAS.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &mut self,
        x: u64,
        w: u64,
        g: &crate::core::ops::conv2d::WindowGeom,
        cout: usize,
        y: u64,
        training: bool,
        stream: cudarc::driver::sys::CUstream,
    ) -> bool {
        if training && self.route != Route::All {
            return false;
        }
        let Some(&Plan { x: xd, y: yd, w: wd, forward: (conv, algo, bytes), .. }) = self.plan(g, cout) else {
            return false;
        };
        let (ws, ws_bytes) = self.workspace(bytes, stream);
        if failed() {
            return true; // skipped, as every op after a failure
        }
        let (one, zero) = (1.0f32, 0.0f32);
        // SAFETY: the buffers hold the shapes the descriptors describe (the op checked them)
        let r = unsafe {
            dnn::convolution_forward(
                self.handle,
                &one as *const f32 as *const c_void,
                xd,
                x as *const c_void,
                wd,
                w as *const c_void,
                conv,
                algo,
                ws,
                ws_bytes,
                &zero as *const f32 as *const c_void,
                yd,
                y as *mut c_void,
            )
        };
        check(r, "cuDNN convolution forward");
        true
    }

    /// `dw = ∂L/∂w` and, if `dx` is given, `dx = ∂L/∂x` (overwritten); false where no cuDNN
    /// algorithm qualifies for the shape.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &mut self,
        x: u64,
        w: u64,
        dy: u64,
        g: &crate::core::ops::conv2d::WindowGeom,
        cout: usize,
        dw: u64,
        dx: Option<u64>,
        stream: cudarc::driver::sys::CUstream,
    ) -> bool {
        if self.route != Route::All {
            return false;
        }
        let Some(&Plan { x: xd, y: yd, w: wd, backward_data, backward_filter, .. }) = self.plan(g, cout) else {
            return false;
        };
        let (one, zero) = (1.0f32, 0.0f32);
        let (alpha, beta) = (&one as *const f32 as *const c_void, &zero as *const f32 as *const c_void);
        let (conv, algo, bytes) = backward_filter;
        let (ws, ws_bytes) = self.workspace(bytes, stream);
        if failed() {
            return true; // skipped, as every op after a failure
        }
        // SAFETY: as in `forward`
        let r = unsafe {
            dnn::convolution_backward_filter(
                self.handle,
                alpha,
                xd,
                x as *const c_void,
                yd,
                dy as *const c_void,
                conv,
                algo,
                ws,
                ws_bytes,
                beta,
                wd,
                dw as *mut c_void,
            )
        };
        check(r, "cuDNN convolution backward (filter)");
        if let Some(dx) = dx {
            let (conv, algo, bytes) = backward_data;
            let (ws, ws_bytes) = self.workspace(bytes, stream);
            if failed() {
                return true;
            }
            // SAFETY: as in `forward`
            let r = unsafe {
                dnn::convolution_backward_data(
                    self.handle,
                    alpha,
                    wd,
                    w as *const c_void,
                    yd,
                    dy as *const c_void,
                    conv,
                    algo,
                    ws,
                    ws_bytes,
                    beta,
                    xd,
                    dx as *mut c_void,
                )
            };
            check(r, "cuDNN convolution backward (data)");
        }
        true
    }

    /// The algorithms chosen so far, for `--profile` and the closing notes.
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .plans
            .iter()
            .map(|((d, cout), p)| {
                let shape =
                    format!("{}x{}x{}x{} -> {cout}, {}x{} window, stride {}", d[0], d[1], d[2], d[3], d[4], d[5], d[6]);
                match p {
                    Some(p) => format!(
                        "{shape}: forward {:?}, backward data {:?}, backward filter {:?}",
                        p.forward.1, p.backward_data.1, p.backward_filter.1
                    ),
                    None => format!("{shape}: im2col + cuBLAS (no cuDNN algorithm qualified)"),
                }
            })
            .collect();
        out.sort();
        out
    }
}
