//! The CUDA backend against the CPU: every op's forward and backward on the same inputs,
//! optimizer updates, and whole training runs. On a GPU where a driver is installed; else on
//! the CPU emulator of the CUDA driver (`tests/cuda_emulator/`), and each test says so; tests
//! that can run on neither say that they skipped. The kernel-compilation test needs only
//! libnvrtc (CI installs it).
#![cfg(feature = "cuda")]

use cnnlab::core::cuda::{self, ConvRoute, GemmRoute, Settings};
use cnnlab::core::init::InitRng;
use cnnlab::core::ops::conv2d::{Conv2dOps, WindowGeom};
use cnnlab::core::ops::*;
use cnnlab::core::optim::OptimOps;
use cnnlab::core::{Backend, BackendBase, Cpu, Cuda, Layer, Mode, Tensor};
use cnnlab::data::Dataset;
use cnnlab::models::{ImageArch, ModelKind};
use cnnlab::train::{TrainConfig, Trainer};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::Path;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[path = "cuda_emulator/mod.rs"]
mod emulator;

/// The convolution route is the process's (`cuda::set_convolution_route`), and the tests run
/// on threads of one process: a test that sets it holds this lock for writing, and a test that
/// runs convolutions holds it for reading, so that none trains on another test's route.
/// `training_curves_match_the_cpu` failed once here (its CNN's loss 0.2% off the CPU's at step
/// 14): this race, or the emulator's chance tuning (see that test), can each explain it.
static ROUTE: RwLock<()> = RwLock::new(());

fn route_shared() -> RwLockReadGuard<'static, ()> {
    ROUTE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The lock for writing; the route goes back to `CNNLAB_CUDNN`'s when the guard drops, even
/// where the test failed.
fn route_exclusive() -> RouteGuard {
    RouteGuard(ROUTE.write().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

struct RouteGuard(#[allow(dead_code)] RwLockWriteGuard<'static, ()>);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        cuda::set_convolution_route(ConvRoute::from_env().unwrap_or(ConvRoute::Tune));
        if let Some(Ok(target)) = TARGET.get() {
            cuda::set_implicit_convolutions(default_implicit(target));
        }
    }
}

/// Says why a test did not run, where `cargo test` does not capture it.
fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// What the GPU tests run on.
#[derive(Clone, Debug, PartialEq)]
enum Target {
    Gpu,
    /// The CPU emulator of the CUDA driver and cuBLAS (tests/cuda_emulator), built in this
    /// folder: the backend's code and kernels, without a GPU's timing, concurrency or arithmetic.
    Emulator(std::path::PathBuf),
}

/// A real driver where one is installed; else the emulator, unless `CNNLAB_CUDA_EMULATOR=0`.
fn open_target() -> Result<Target, String> {
    let settings = Settings { ordinal: 0, tf32: false };
    // SAFETY: loading the driver runs no code of ours
    let driver = unsafe { libloading::Library::new("libcuda.so.1") }.is_ok();
    let target = if driver || std::env::var("CNNLAB_CUDA_EMULATOR").as_deref() == Ok("0") {
        cuda::init(settings).map(|()| Target::Gpu).map_err(|e| format!("no usable GPU ({e})"))?
    } else {
        let dir = emulator::load(Path::new(env!("CARGO_TARGET_TMPDIR"))).map_err(|e| format!("no GPU, and {e}"))?;
        cuda::init(settings)
            .map(|()| Target::Emulator(dir))
            .map_err(|e| format!("no GPU, and the CUDA emulator: {e}"))?
    };
    // the tests time their convolutions themselves, and leave the user's tuning cache alone
    cuda::set_tuning_cache(None);
    cuda::set_gemm_route(default_gemm_route(&target));
    cuda::set_implicit_convolutions(default_implicit(&target));
    Ok(target)
}

/// Whether the tests' tuned convolutions time cnnlab's implicit-GEMM kernels: as
/// `CNNLAB_CONV_IMPLICIT` says on a GPU; on the emulator only where it is `1`, for the reason
/// [`default_gemm_route`] gives (the kernels' emulated threads, timed for every shape and pass
/// whose channels suit them, took about a minute and a half of the suite).
/// `implicit_convolutions_match_the_cpu` runs them whatever it says.
fn default_implicit(target: &Target) -> bool {
    let set = std::env::var("CNNLAB_CONV_IMPLICIT").ok();
    match target {
        Target::Gpu => set.as_deref() != Some("0"),
        Target::Emulator(_) => set.as_deref() == Some("1"),
    }
}

/// The GEMM route the tests run on: `CNNLAB_GEMM`'s; unset, tuned on a GPU and cuBLAS on the
/// emulator, where timing the 3xTF32 kernels (each emulated thread in turn, every tensor-core
/// instruction a warp-wide exchange) would take most of the suite's time for each GEMM shape, to
/// pick cuBLAS by the host's clock. `gemms_match_the_cpu_on_every_route` runs the kernels and
/// the tuning; `CNNLAB_GEMM=split64 cargo test` runs every test's GEMMs on a kernel (slowly).
fn default_gemm_route(target: &Target) -> GemmRoute {
    let unset = match target {
        Target::Gpu => GemmRoute::Tune,
        Target::Emulator(_) => GemmRoute::Cublas,
    };
    std::env::var("CNNLAB_GEMM").ok().and_then(|v| v.parse().ok()).unwrap_or(unset)
}

/// [`target`] where it is the emulator; on a GPU, says that `test` skipped and why (a check of
/// what only the emulator can set or count).
fn emulator_only(test: &str, why: &str) -> Option<&'static Target> {
    let target = target(test)?;
    if *target == Target::Gpu {
        skip(test, why);
        return None;
    }
    Some(target)
}

/// Opens GPU 0 (or the emulator) in strict fp32 and says which ran `test`, or says that
/// `test` skipped. CI sets `CNNLAB_REQUIRE_CUDA_EMULATOR`: there the tests may not skip.
fn gpu(test: &str) -> bool {
    target(test).is_some()
}

/// [`gpu`], and which target ran the test.
static TARGET: OnceLock<Result<Target, String>> = OnceLock::new();

fn target(test: &str) -> Option<&'static Target> {
    match TARGET.get_or_init(open_target) {
        Ok(t @ Target::Gpu) => Some(t),
        Ok(t @ Target::Emulator(_)) => {
            let _ = writeln!(std::io::stderr(), "NOTE {test}: ran on the CPU emulator of the CUDA driver, not a GPU");
            Some(t)
        }
        Err(e) if std::env::var_os("CNNLAB_REQUIRE_CUDA_EMULATOR").is_some() => panic!("{test}: {e}"),
        Err(e) => {
            skip(test, e);
            None
        }
    }
}

#[test]
fn every_kernel_compiles_with_nvrtc() {
    match cuda::compile_kernels() {
        Ok(bytes) => assert!(bytes > 10_000, "PTX of {bytes} bytes"),
        // CI installs libnvrtc and sets CNNLAB_REQUIRE_NVRTC: there a missing library fails
        Err(e) if std::env::var_os("CNNLAB_REQUIRE_NVRTC").is_none() && e.to_string().contains("was not found") => {
            skip("every_kernel_compiles_with_nvrtc", &e.to_string())
        }
        Err(e) => panic!("{e}"),
    }
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

/// Largest |a − b| / (1 + |b|); infinite where one of a pair is NaN and the other not (f32::max
/// would pass over a NaN, and a kernel that wrote NaNs would pass).
fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let rel = |(x, y): (&f32, &f32)| match (x.is_nan(), y.is_nan()) {
        (false, false) => (x - y).abs() / (1.0 + y.abs()),
        (true, true) => 0.0,
        _ => f32::INFINITY,
    };
    a.iter().zip(b).map(rel).fold(0.0, f32::max)
}

fn params<B: Backend>(l: &dyn Layer<B>) -> Vec<(&'static str, Vec<f32>, Vec<f32>)> {
    let mut out = Vec::new();
    l.visit_params_ref(&mut |p| out.push((p.name, p.value.to_vec(), p.grad.to_vec())));
    out
}

/// Forward (train and eval mode) and backward of the same layer on both backends; outputs,
/// input gradients and parameter gradients agree within `tol` (relative to 1 + |value|).
/// fp32 with other summation orders: 1e-4 covers every op here with 100-1000 term sums.
fn compare(name: &str, cpu: &mut dyn Layer<Cpu>, gpu: &mut dyn Layer<Cuda>, shape: &[usize], tol: f32) {
    let n: usize = shape.iter().product();
    let x = random(n, 1);
    let (xc, xg) = (Tensor::<Cpu>::from_slice(shape, &x), Tensor::<Cuda>::from_slice(shape, &x));
    let (mut yc, mut yg) = (Tensor::<Cpu>::empty(), Tensor::<Cuda>::empty());
    for mode in [Mode::Eval, Mode::Train] {
        cpu.forward(&xc, &mut yc, mode);
        gpu.forward(&xg, &mut yg, mode);
        assert_eq!(yc.shape(), yg.shape(), "{name}: output shape");
        let e = max_rel(&yg.to_vec(), &yc.to_vec());
        assert!(e <= tol, "{name} forward ({mode:?}): max relative error {e:e}");
    }
    let dy = random(yc.len(), 2);
    let (dyc, dyg) = (Tensor::<Cpu>::from_slice(yc.shape(), &dy), Tensor::<Cuda>::from_slice(yc.shape(), &dy));
    let (mut dxc, mut dxg) = (Tensor::<Cpu>::empty(), Tensor::<Cuda>::empty());
    cpu.backward(&xc, &yc, &dyc, Some(&mut dxc));
    gpu.backward(&xg, &yg, &dyg, Some(&mut dxg));
    let e = max_rel(&dxg.to_vec(), &dxc.to_vec());
    assert!(e <= tol, "{name} input gradient: max relative error {e:e}");
    for ((pn, vc, gc), (_, vg, gg)) in params(cpu).into_iter().zip(params(gpu)) {
        assert_eq!(vc, vg, "{name}.{pn}: the same initial values");
        let e = max_rel(&gg, &gc);
        assert!(e <= tol, "{name}.{pn} gradient: max relative error {e:e}");
    }
}

/// Builds the same layer for both backends from the same seed and compares them.
macro_rules! compare_layer {
    ($name:expr, $shape:expr, $tol:expr, |$rng:ident| $make:expr) => {{
        #[allow(unused_mut, unused_variables)]
        let mut $rng = InitRng::seed_from_u64(7);
        let mut c: Box<dyn Layer<Cpu>> = Box::new($make);
        #[allow(unused_mut, unused_variables)]
        let mut $rng = InitRng::seed_from_u64(7);
        let mut g: Box<dyn Layer<Cuda>> = Box::new($make);
        compare($name, c.as_mut(), g.as_mut(), &$shape, $tol);
    }};
}

#[test]
fn every_op_matches_the_cpu() {
    if !gpu("every_op_matches_the_cpu") {
        return;
    }
    let _route = route_shared();
    let tol = 1e-4;
    compare_layer!("linear", [6, 37], tol, |r| Linear::new(37, 19, &mut r));
    // the convolutions: `convolutions_match_the_cpu_on_every_route`
    compare_layer!("locally connected", [3, 6, 6, 4], tol, |r| {
        LocallyConnected::new(4, 5, (6, 6), (3, 3), (1, 1), (1, 1), &mut r).unwrap()
    });
    compare_layer!("max pool", [3, 8, 8, 5], tol, |r| Pool::new_2d(PoolKind::Max, 2, 2));
    compare_layer!("max pool 3/2", [2, 9, 9, 3], tol, |r| Pool::new_2d(PoolKind::Max, 3, 2));
    // windows that leave the last row and column out, and windows with gaps between them
    compare_layer!("max pool, odd size", [2, 9, 7, 3], tol, |r| Pool::new_2d(PoolKind::Max, 2, 2));
    compare_layer!("avg pool 2/3", [2, 8, 8, 3], tol, |r| Pool::new_2d(PoolKind::Avg, 2, 3));
    compare_layer!("avg pool", [3, 8, 8, 5], tol, |r| Pool::new_2d(PoolKind::Avg, 2, 2));
    compare_layer!("l2 pool", [3, 8, 8, 5], tol, |r| Pool::new_2d(PoolKind::L2, 2, 2));
    compare_layer!("max pool 1d", [4, 40, 3], tol, |r| Pool::new_1d(PoolKind::Max, 2, 2));
    compare_layer!("global average pool", [4, 6, 6, 7], tol, |r| GlobalAvgPool);
    compare_layer!("relu", [7, 33], tol, |r| Relu);
    compare_layer!("gelu", [7, 33], tol, |r| Gelu::default());
    compare_layer!("layer norm", [9, 40], tol, |r| LayerNorm::new(40));
    compare_layer!("layer norm wide", [5, 300], tol, |r| LayerNorm::new(300));
    compare_layer!("batch norm 2d", [6, 5, 5, 7], tol, |r| BatchNorm::new(7));
    // channels in fours: the kernels' vector path (7 and 3 channels take the scalar one)
    compare_layer!("batch norm 2d, 8 channels", [6, 5, 5, 8], tol, |r| BatchNorm::new(8));
    // 20,480 rows: 40 slabs of partial sums, more than the 32 lanes of the second stage
    compare_layer!("batch norm many rows", [80, 16, 16, 3], tol, |r| BatchNorm::new(3));
    compare_layer!("transpose", [3, 37, 45], tol, |r| Transpose);
    compare_layer!("patchify", [2, 8, 8, 3], tol, |r| Patchify { patch: 4 });
    compare_layer!("flatten", [3, 4, 5], tol, |r| Flatten);
    compare_layer!("residual", [4, 12], tol, |r| Residual::new(vec![
        Box::new(Linear::new(12, 12, &mut r)),
        Box::new(Gelu::default()),
    ]));
}

/// The rules of the convolution routes (`conv_tune.rs`), on named ways: no GPU needed.
#[test]
fn convolution_routes_choose_by_their_rules() {
    use cuda::{fixed_conv_choice as fixed, timed_conv_choice as timed, ConvPass as Pass};
    let (a, im2col) = ("cudnn-a", "im2col");
    assert_eq!(fixed(ConvRoute::Im2col, false, Pass::Inference, Some(a), im2col), im2col);
    assert_eq!(fixed(ConvRoute::Cudnn, false, Pass::Forward, Some(a), im2col), a);
    assert_eq!(fixed(ConvRoute::Cudnn, false, Pass::Forward, None, im2col), im2col, "no candidate: im2col");
    assert_eq!(fixed(ConvRoute::CudnnNchw, false, Pass::Data, Some(a), im2col), a);
    assert_eq!(fixed(ConvRoute::Inference, false, Pass::Forward, Some(a), im2col), im2col);
    assert_eq!(fixed(ConvRoute::Inference, false, Pass::Inference, Some(a), im2col), a);
    // tuning starts from the measured fixed rule: cuDNN with TF32, inference only in fp32
    assert_eq!(fixed(ConvRoute::Tune, true, Pass::Filter, Some(a), im2col), a);
    assert_eq!(fixed(ConvRoute::Tune, false, Pass::Filter, Some(a), im2col), im2col);
    assert_eq!(fixed(ConvRoute::Tune, false, Pass::Inference, Some(a), im2col), a);
    // cnnlab's implicit GEMMs where they run (the backend takes them first), else im2col
    assert_eq!(fixed(ConvRoute::Implicit, false, Pass::Forward, Some(a), im2col), im2col);

    let b = "cudnn-b";
    let t = |i: f32, fa: f32, fb: f32| [(im2col, i), (a, fa), (b, fb)];
    assert_eq!(timed(im2col, &t(1.0, 0.5, 0.8)), a, "twice as fast: taken");
    assert_eq!(timed(im2col, &t(1.0, 0.95, 0.97)), im2col, "within the margin: the fixed way kept");
    assert_eq!(timed(a, &t(0.85, 1.0, 0.95)), im2col, "15% faster than the fixed way: taken");
    assert_eq!(timed(a, &[(im2col, 2.0), (b, 1.5)]), b, "the fixed way did not run: the fastest that did");
    assert_eq!(timed(a, &[]), a, "nothing timed: the fixed way");
    assert_eq!(timed(im2col, &[(im2col, f32::NAN), (b, 1.0)]), b, "a NaN time counts as none");

    // how far a candidate's result may be from im2col + cuBLAS's: 8 fp32 roundings of a sum
    // of that length (a 3x3x64 window: 8·24·2⁻²⁴), or of TF32's products
    let (tol, tol_tf32) = (cuda::conv_tolerance(false, 576), cuda::conv_tolerance(true, 576));
    assert!((tol - 8.0 * 24.0 / 16_777_216.0).abs() < 1e-12, "{tol}");
    assert!((tol_tf32 - 8.0 / 2048.0).abs() < 1e-12, "{tol_tf32}");
    assert!(cuda::conv_tolerance(false, 1 << 20) > 4.0 * tol, "longer sums round more");
    // CNNLAB_CONV_TOLERANCE's factor: 8 unless set, a number from 1 to 10⁶
    assert_eq!(cuda::conv_deviation_factor(None).unwrap(), 8.0);
    assert_eq!(cuda::conv_deviation_factor(Some("64")).unwrap(), 64.0);
    for bad in ["0.5", "nan", "inf", "-8", "1e7", "x", ""] {
        let e = cuda::conv_deviation_factor(Some(bad)).unwrap_err().to_string();
        assert!(e.contains("CNNLAB_CONV_TOLERANCE"), "{bad}: {e}");
    }
    let r = [1.0f32, -2.0, 3.0, 0.5];
    assert_eq!(cuda::conv_deviation(&r, &r), 0.0);
    let d = cuda::conv_deviation(&r, &[1.0, -2.0, 3.0, 0.5 + 1e-3]);
    assert!((d - 1e-3 / (14.25f64).sqrt()).abs() < 1e-6, "relative RMS: {d}");
    assert!(cuda::conv_deviation(&r, &[1.0, f32::NAN, 3.0, 0.5]).is_infinite(), "a NaN is never close");
    assert!(cuda::conv_deviation(&[0.0; 4], &[0.0, 1e-30, 0.0, 0.0]).is_infinite(), "off an all-zero result");
    // a way is chosen only where it ran and came close enough; uncompared, only GEMM-type
    let ok = |ms: f32, d: Option<f64>, transform: bool| cuda::conv_eligible(ms, d, 1e-5, transform);
    assert!(ok(1.0, Some(2e-6), true) && ok(1.0, Some(2e-6), false) && ok(1.0, Some(1e-5), true));
    assert!(!ok(1.0, Some(1e-3), true) && !ok(1.0, Some(1e-3), false), "too far: left out");
    assert!(!ok(1.0, Some(f64::INFINITY), false) && !ok(f32::NAN, Some(0.0), false), "NaN result, failed run");
    assert!(ok(1.0, None, false) && !ok(1.0, None, true), "uncompared: GEMM-type only");

    for (s, r) in [
        ("0", ConvRoute::Im2col),
        ("1", ConvRoute::Cudnn),
        ("nchw", ConvRoute::CudnnNchw),
        ("inference", ConvRoute::Inference),
        ("split", ConvRoute::Split),
        ("implicit", ConvRoute::Implicit),
    ] {
        assert_eq!(s.parse::<ConvRoute>().unwrap(), r);
    }
    assert_eq!("tune".parse::<ConvRoute>().unwrap(), ConvRoute::Tune);
    let e = "fast".parse::<ConvRoute>().unwrap_err().to_string();
    assert!(e.contains("CNNLAB_CUDNN=\"fast\"") && e.contains("tune"), "{e}");
}

/// The convolutions on each route (`conv_tune.rs`): im2col + cuBLAS, cuDNN, cuDNN on NCHW copies,
/// cuDNN for inference only, and timed per shape and pass. The emulator has a stand-in for cuDNN
/// (`cuda_emulator/cudnn.cpp`) whose heuristic offers non-deterministic and tensor-op entries
/// first (cnnlab must pass over them: the stand-in refuses the non-deterministic ones), and
/// FFT and Winograd entries whose results carry a made-up error: the fixed routes never take
/// them, and the tuned route compares each with im2col + cuBLAS and leaves out FFT's (a
/// thousand times an fp32 sum's rounding) while Winograd's (within it) may be chosen.
#[test]
fn convolutions_match_the_cpu_on_every_route() {
    let Some(target) = target("convolutions_match_the_cpu_on_every_route") else { return };
    let _route = route_exclusive();
    let tol = 1e-4;
    let routes = [
        ConvRoute::Im2col,
        ConvRoute::Cudnn,
        ConvRoute::CudnnNchw,
        ConvRoute::Inference,
        ConvRoute::Split,
        ConvRoute::Tune,
    ];
    for route in routes {
        cuda::set_convolution_route(route);
        let tf32_reads_before = emulator_tf32_reads();
        compare_layer!("conv 3x3 pad 1", [4, 9, 9, 3], tol, |r| Conv::new_2d(3, 8, 3, 1, 1, &mut r));
        compare_layer!("conv 3x3 stride 2", [3, 10, 7, 5], tol, |r| Conv::new_2d(5, 6, 3, 2, 1, &mut r));
        compare_layer!("conv 5x5 no pad", [2, 9, 9, 2], tol, |r| Conv::new_2d(2, 4, 5, 1, 0, &mut r));
        compare_layer!("conv 1x1", [3, 5, 5, 16], tol, |r| Conv::new_2d(16, 8, 1, 1, 0, &mut r));
        compare_layer!("conv1d", [5, 40, 1], tol, |r| conv1d::conv1d(1, 25, 5, 2, 1, &mut r));
        // channels in fours: the split operands' kernels take four values a thread
        compare_layer!("conv 3x3 on 8 channels", [2, 6, 6, 8], tol, |r| Conv::new_2d(8, 4, 3, 1, 1, &mut r));
        // this test's shapes (tests running beside it add theirs)
        let ours = ["4x9x9x3 -> 8,", "3x10x7x5 -> 6,", "2x9x9x2 -> 4,", "5x1x40x1 -> 25,", "2x6x6x8 -> 4,"];
        let chosen: Vec<String> =
            cuda::convolution_algorithms().into_iter().filter(|l| ours.iter().any(|o| l.starts_with(o))).collect();
        let _ = writeln!(std::io::stderr(), "{route:?}:\n  {}", chosen.join("\n  "));
        if route == ConvRoute::Im2col {
            assert!(chosen.is_empty(), "im2col needs no choice: {chosen:?}");
            continue;
        }
        if chosen.is_empty() {
            // no libcudnn where the GPU is: every route ran im2col + cuBLAS
            skip("convolutions_match_the_cpu_on_every_route (cuDNN's routes)", "libcudnn was not loaded");
            break;
        }
        // five window shapes (1x1 is a GEMM on every route), each forward (train and eval
        // mode) and backward
        assert_eq!(chosen.len(), 5 * 4, "{route:?}: {chosen:?}");
        for line in &chosen {
            let training = !line.contains("Inference:");
            let cudnn = line.contains(": cuDNN");
            match route {
                // the stand-in offers GEMM-type candidates for every shape
                ConvRoute::Cudnn if matches!(target, Target::Emulator(_)) => {
                    assert!(cudnn && !line.contains("NCHW"), "{line}")
                }
                ConvRoute::CudnnNchw if matches!(target, Target::Emulator(_)) => {
                    assert!(cudnn && line.contains("on NCHW copies"), "{line}")
                }
                // three TF32 passes on split operands, as close to the CPU as fp32 although
                // each pass reads its inputs as TF32 (the stand-in cuts them: counted below)
                ConvRoute::Split if matches!(target, Target::Emulator(_)) => {
                    assert!(cudnn && line.contains(" as 3 TF32 passes on split fp32"), "{line}")
                }
                ConvRoute::Inference if training => assert!(!cudnn, "{line}"),
                ConvRoute::Inference if matches!(target, Target::Emulator(_)) => assert!(cudnn, "{line}"),
                // timed: im2col and at least one of cuDNN's candidates (on a GPU a candidate
                // that the heuristic offers may still fail to run: it shows as failed)
                ConvRoute::Tune => assert!(
                    line.contains("(timed: im2col + cuBLAS ")
                        && line.contains(", cuDNN ")
                        && !(matches!(target, Target::Emulator(_)) && line.contains("failed")),
                    "{line}"
                ),
                _ => {}
            }
            // the way chosen (the timings follow it)
            let way = line.split(": ").nth(1).unwrap_or("").split(" (").next().unwrap_or("");
            if matches!(target, Target::Emulator(_)) && route == ConvRoute::Tune {
                // every qualifying candidate of the stand-in's heuristic is timed (forward: the
                // four GEMM-type algorithms, Winograd and FFT; input gradient: ALGO_1, Winograd,
                // FFT; filter: ALGO_1, ALGO_3, Winograd, FFT), on NHWC and on NCHW copies, and
                // its GEMM-type tensor-op entries on split operands, as three TF32 passes and
                // as one on stacked operands (forward: IMPLICIT_PRECOMP_GEMM, GEMM, DIRECT;
                // input gradient: ALGO_1; filter: ALGO_1), all compared with im2col + cuBLAS:
                // FFT's made-up error leaves it out, every other candidate is within the
                // tolerance (the split ones too, although the stand-in cuts their inputs to
                // TF32: the split operands are TF32 values already; stacked wrongly, they
                // would be off by far more)
                let timed = line.matches(" ms").count() - 1;
                // and cnnlab's implicit GEMMs (three tiles, each with two kinds of sums, where
                // the tests time them: see `default_implicit`) on the one shape and pass they
                // can run here: the filter gradient of 8 channels into 4 (channels in fours)
                let runs = line.starts_with("2x6x6x8 -> 4,") && line.contains("Filter:");
                let own = if runs && cuda::implicit_convolutions() { 6 } else { 0 };
                assert_eq!(line.matches("implicit GEMM in 3xTF32").count(), own, "{line}");
                let (qualifying, split) = if line.contains("Forward:") || line.contains("Inference:") {
                    (6, 3)
                } else if line.contains("Data:") {
                    (3, 1)
                } else {
                    (4, 1)
                };
                assert_eq!(timed, 2 * qualifying + 2 * split + own, "{line}");
                assert_eq!(line.matches("on NCHW copies ").count(), qualifying, "{line}");
                assert_eq!(line.matches(" as 3 TF32 passes on split fp32 ").count(), split, "{line}");
                assert_eq!(line.matches(" in TF32 on stacked split fp32 ").count(), split, "{line}");
                assert_eq!(line.matches("(off by ").count(), 2 * qualifying + 2 * split + own, "{line}");
                assert_eq!(line.matches(": left out)").count(), 2, "{line}");
                let timings = line.split("(timed: ").nth(1).unwrap_or("");
                assert!(
                    timings.matches("_FFT").count() == 2 && timings.matches("_WINOGRAD_NONFUSED").count() == 2,
                    "{line}"
                );
                for part in timings.split(", cuDNN ").filter(|p| p.contains("_FFT")) {
                    assert!(part.ends_with(": left out)") || part.ends_with(": left out))"), "{part}");
                }
                assert!(!way.contains("FFT"), "{line}");
            }
            if matches!(target, Target::Emulator(_)) && cudnn {
                // strict fp32 passes over the stand-in's non-deterministic and tensor-op
                // entries (but for three passes on split operands); the fixed routes over its
                // transforms too
                assert!(!way.contains("tensor ops") && !way.contains("FFT"), "{line}");
                if route != ConvRoute::Tune {
                    assert!(!way.contains("WINOGRAD"), "{line}");
                }
                if !matches!(route, ConvRoute::Tune | ConvRoute::Split) {
                    assert!(!way.contains("TF32"), "{line}");
                }
            }
        }
        if route == ConvRoute::Split && matches!(target, Target::Emulator(_)) {
            assert!(emulator_tf32_reads() > tf32_reads_before, "the split route's passes read TF32");
        }
    }
}

/// cnnlab's implicit-GEMM convolutions in 3xTF32 (`kernels/conv_gemm.cu`) against the CPU:
/// the forward pass of any stride and the input gradient of stride 1 (the filters turned
/// around, the padding the window's less the forward's), where the channels each tap sums come
/// in sixteens, and the filter gradient where both channel counts come in fours (its positions
/// cut into slices on some shapes: two for the first). C's rows and columns are not multiples
/// of either tile, and some span several; taps of one 16-channel step and of three; windows of
/// 3×3, 5×5 and 1×5. On the fixed route (128×128 tiles) and tuned, where each tile's results
/// (128×128, 128×64, 64×64), with the tensor core's own sums and with promoted ones, are
/// compared with im2col + cuBLAS's and must come within the tolerance. The passes the
/// kernels cannot run (3 input channels, 12 forward, 20 for the input gradient, stride 2's
/// input gradient) take another way.
#[test]
fn implicit_convolutions_match_the_cpu() {
    let Some(_) = target("implicit_convolutions_match_the_cpu") else { return };
    let _route = route_exclusive();
    cuda::set_implicit_convolutions(true);
    let tol = 1e-4;
    // each shape's line prefix, and whether the kernels run its forward, its input gradient and
    // its filter gradient
    let shapes = [
        ("4x8x5x16 -> 80,", [true, true, true]),
        ("2x5x7x48 -> 16,", [true, true, true]),
        ("2x8x8x16 -> 32,", [true, true, true]),
        ("2x9x7x16 -> 16,", [true, false, true]),
        ("2x6x6x3 -> 16,", [false, true, false]),
        ("3x1x20x16 -> 32,", [true, true, true]),
        ("2x7x7x12 -> 20,", [false, false, true]),
    ];
    for route in [ConvRoute::Implicit, ConvRoute::Tune] {
        cuda::set_convolution_route(route);
        compare_layer!("3x3 pad 1, 16 into 80", [4, 8, 5, 16], tol, |r| Conv::new_2d(16, 80, 3, 1, 1, &mut r));
        compare_layer!("3x3 pad 1, 48 into 16", [2, 5, 7, 48], tol, |r| Conv::new_2d(48, 16, 3, 1, 1, &mut r));
        compare_layer!("5x5 no pad", [2, 8, 8, 16], tol, |r| Conv::new_2d(16, 32, 5, 1, 0, &mut r));
        compare_layer!("3x3 stride 2", [2, 9, 7, 16], tol, |r| Conv::new_2d(16, 16, 3, 2, 1, &mut r));
        compare_layer!("3 channels in", [2, 6, 6, 3], tol, |r| Conv::new_2d(3, 16, 3, 1, 1, &mut r));
        compare_layer!("conv1d 1x5", [3, 20, 16], tol, |r| conv1d::conv1d(16, 32, 5, 1, 2, &mut r));
        compare_layer!("12 channels into 20", [2, 7, 7, 12], tol, |r| Conv::new_2d(12, 20, 3, 1, 1, &mut r));
        let chosen: Vec<String> = cuda::convolution_algorithms()
            .into_iter()
            .filter(|l| shapes.iter().any(|(prefix, _)| l.starts_with(prefix)))
            .collect();
        let _ = writeln!(std::io::stderr(), "{route:?}:\n  {}", chosen.join("\n  "));
        if chosen.is_empty() {
            skip("implicit_convolutions_match_the_cpu (its routes)", "libcudnn was not loaded");
            return;
        }
        assert_eq!(chosen.len(), shapes.len() * 4, "{route:?}: {chosen:?}");
        for line in &chosen {
            let &(_, [forward, data, filter]) = shapes.iter().find(|(prefix, _)| line.starts_with(prefix)).unwrap();
            let runs = if line.contains("Forward:") || line.contains("Inference:") {
                forward
            } else if line.contains("Data:") {
                data
            } else {
                filter
            };
            let way = line.split(": ").nth(1).unwrap_or("").split(" (").next().unwrap_or("");
            match route {
                ConvRoute::Implicit if runs => assert_eq!(way, "implicit GEMM in 3xTF32 on 128x128 tiles", "{line}"),
                ConvRoute::Implicit => assert_eq!(way, "im2col + cuBLAS", "{line}"),
                _ => {
                    let timings = line.split("(timed: ").nth(1).unwrap_or("");
                    // each tile with the tensor core's own sums and with promoted ones
                    let tiles = ["128x128 tiles", "128x64 tiles", "64x64 tiles"];
                    for way in tiles.iter().flat_map(|t| [t.to_string(), format!("{t} with promoted sums")]) {
                        // the way's entry: its name, its time, and its "(off by …)" to the
                        // parenthesis that closes it (which may hold ", over …: left out")
                        let label = format!("implicit GEMM in 3xTF32 on {way} ");
                        let timed = timings
                            .match_indices(&label)
                            .map(|(at, _)| &timings[at..])
                            .find(|t| t[label.len()..].starts_with(|c: char| c.is_ascii_digit()));
                        let timed = timed.map(|t| &t[..t.find("), ").map_or(t.len(), |end| end + 1)]);
                        match timed {
                            Some(t) => assert!(runs && t.contains(" ms (off by ") && !t.contains("left out"), "{line}"),
                            None => assert!(!runs, "{line}"),
                        }
                    }
                }
            }
        }
    }
}

/// How many convolution inputs the emulator's cuDNN has read cut to TF32 (0 on a GPU).
fn emulator_tf32_reads() -> i64 {
    // SAFETY: the emulator's libraries were opened RTLD_GLOBAL (tests/cuda_emulator/mod.rs),
    // and the symbol is a C function taking nothing and returning a long long
    unsafe {
        let this = libloading::os::unix::Library::this();
        match this.get::<unsafe extern "C" fn() -> i64>(b"cnnlab_emulator_tf32_reads\0") {
            Ok(f) => f(),
            Err(_) => 0,
        }
    }
}

/// The split behind strict fp32's three TF32 passes (`split_tf32`): each value as `hi + lo`,
/// both TF32 values (the low 13 mantissa bits zero), `hi` rounded to nearest (ties to even),
/// `hi + lo` within 2⁻²² of the value (or 2⁻¹³⁷ among subnormal numbers); infinities and NaN all in `hi`; a value whose rounding
/// would overflow is truncated instead.
#[test]
fn split_tf32_splits_each_value() {
    if !gpu("split_tf32_splits_each_value") {
        return;
    }
    let mut x = random(1001, 21);
    x.iter_mut().enumerate().for_each(|(i, v)| *v *= 10f32.powi(i as i32 % 60 - 30));
    let special = [
        0.0,
        -0.0,
        1.0,
        f32::from_bits(0x3f80_1000),  // 1 + 2⁻¹¹: a tie, rounded to the even 1
        f32::from_bits(0x3f80_3000),  // a tie rounded up to the even 0x3f804000
        f32::from_bits(0x3f80_1001),  // just over a tie: up
        -f32::from_bits(0x3f80_0fff), // just under a tie: down
        f32::MAX,
        -f32::MAX,
        f32::MIN_POSITIVE,
        1e-40,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    x.extend(special);
    let xg = Tensor::<Cuda>::from_slice(&[x.len()], &x);
    let (mut hi, mut lo) = (Tensor::<Cuda>::zeros(&[x.len()]), Tensor::<Cuda>::zeros(&[x.len()]));
    cuda::split_tf32(xg.buf(), hi.buf_mut(), lo.buf_mut());
    let (hi, lo) = (hi.to_vec(), lo.to_vec());
    let tf32 = |v: f32| v.to_bits() & 0x1fff == 0;
    for ((&v, &h), &l) in x.iter().zip(&hi).zip(&lo) {
        if v.is_nan() {
            assert!(h.is_nan() && l == 0.0, "{v}: {h} {l}");
            continue;
        }
        if v.is_infinite() {
            assert!(h == v && l == 0.0, "{v}: {h} {l}");
            continue;
        }
        assert!(tf32(h) && tf32(l), "{v:e} ({:#x}): {:#x} {:#x}", v.to_bits(), h.to_bits(), l.to_bits());
        // (where lo is subnormal, TF32's step there, 2⁻¹³⁶, bounds it: tensor cores may flush
        // such values anyway)
        let err = (v as f64 - (h as f64 + l as f64)).abs();
        let bound = (v.abs() as f64 * 2f64.powi(-22)).max(2f64.powi(-137));
        assert!(err <= bound, "{v:e}: {h:e} + {l:e} is off by {err:e}");
        // hi is v to nearest: no TF32 value lies nearer (the neighbours one TF32 step away)
        if v != f32::MAX && v != -f32::MAX {
            for n in [h.to_bits().wrapping_add(0x2000), h.to_bits().wrapping_sub(0x2000)] {
                let n = f32::from_bits(n);
                assert!(
                    !n.is_finite() || (n as f64 - v as f64).abs() >= (h as f64 - v as f64).abs(),
                    "{v:e}: {h:e}, {n:e} nearer"
                );
            }
        }
    }
    let at = |bits: u32| hi[x.iter().position(|v| v.to_bits() == bits).unwrap()].to_bits();
    assert_eq!(at(0x3f80_1000), 0x3f80_0000, "a tie to the even value below");
    assert_eq!(at(0x3f80_3000), 0x3f80_4000, "a tie to the even value above");
    assert_eq!(at(0x3f80_1001), 0x3f80_2000);
    assert_eq!(at(0xbf80_0fff), 0xbf80_0000);
    assert_eq!(at(f32::MAX.to_bits()), 0x7f7f_e000, "rounding up would overflow: truncated");
}

/// im2col and col2im, the GPU's columns for convolutions and the locally-connected layer, to
/// the bit: the columns are the CPU's copy, and each input's gradient is the sum of the columns
/// that read it, added in window order (ki, then kj) from zero. Channels in fours take the
/// kernels' four-channel path, others one value a thread; both must give these same bits.
#[test]
fn window_columns_match_the_cpu_exactly() {
    if !gpu("window_columns_match_the_cpu_exactly") {
        return;
    }
    // (n, h, w, c, window, stride, padding)
    type Shape = (usize, usize, usize, usize, (usize, usize), (usize, usize), (usize, usize));
    let mut shapes: Vec<Shape> = vec![
        (3, 9, 7, 8, (3, 3), (1, 1), (1, 1)),
        (3, 10, 7, 4, (3, 3), (2, 2), (1, 1)),
        (2, 8, 8, 12, (5, 5), (1, 1), (0, 0)),
        (3, 9, 9, 3, (3, 3), (1, 1), (1, 1)),
        (2, 7, 9, 5, (3, 3), (2, 1), (1, 2)),
        (3, 1, 40, 8, (1, 5), (1, 1), (0, 2)),
        (2, 6, 6, 16, (2, 2), (2, 2), (0, 0)),
    ];
    // and shapes drawn at random: windows up to 4, strides up to 3, padding up to the window
    // (a window may then read padding only), channels 1 to 12 (half of them in fours)
    let mut rng = InitRng::seed_from_u64(41);
    while shapes.len() < 40 {
        let c = if rng.random_bool(0.5) { 4 * rng.random_range(1..=3) } else { rng.random_range(1..=11) };
        let k = (rng.random_range(1..=4), rng.random_range(1..=4));
        let st = (rng.random_range(1..=3), rng.random_range(1..=3));
        let pad = (rng.random_range(0..=k.0), rng.random_range(0..=k.1));
        let shape = (2, rng.random_range(1..=8), rng.random_range(1..=8), c, k, st, pad);
        if WindowGeom::new(shape.0, shape.1, shape.2, c, k, st, pad).is_ok() {
            shapes.push(shape);
        }
    }
    for (n, h, w, c, k, st, pad) in shapes {
        let g = WindowGeom::new(n, h, w, c, k, st, pad).unwrap();
        let name = format!("{n}x{h}x{w}x{c}, window {k:?}, stride {st:?}, padding {pad:?}");
        let (per_image, img_len) = (g.positions() * g.k(), h * w * c);
        // images 1..n: a launch that starts past the first image
        let (img0, imgs) = (1, n - 1);
        let x = random(n * img_len, 31);
        let (xc, xg) = (Tensor::<Cpu>::from_slice(&[x.len()], &x), Tensor::<Cuda>::from_slice(&[x.len()], &x));
        let (mut cc, mut cg) = (Tensor::<Cpu>::zeros(&[imgs * per_image]), Tensor::<Cuda>::zeros(&[imgs * per_image]));
        Cpu::im2col(xc.buf(), &g, cc.buf_mut(), img0, imgs);
        Cuda::im2col(xg.buf(), &g, cg.buf_mut(), img0, imgs);
        let (cc, cg) = (cc.to_vec(), cg.to_vec());
        assert!(cc.iter().zip(&cg).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: im2col differs from the CPU's");

        let cols = random(imgs * per_image, 32);
        let colsg = Tensor::<Cuda>::from_slice(&[cols.len()], &cols);
        let mut dx = Tensor::<Cuda>::from_slice(&[n * img_len], &vec![7.0; n * img_len]);
        Cuda::col2im(colsg.buf(), &g, dx.buf_mut(), img0, imgs);
        let dx = dx.to_vec();
        assert!(dx[..img_len].iter().all(|&v| v == 7.0), "{name}: col2im wrote outside its images");
        // the window position whose tap k reads input `at` along one axis, if one does
        let origin = |at: usize, pad: usize, k: usize, stride: usize, out: usize| {
            let t = (at + pad).checked_sub(k)?;
            (t.is_multiple_of(stride) && t / stride < out).then_some(t / stride)
        };
        for b in 0..imgs {
            for iy in 0..h {
                for ix in 0..w {
                    for ch in 0..c {
                        let mut want = 0.0f32;
                        for ki in 0..g.kh {
                            let Some(oy) = origin(iy, g.ph, ki, g.sh, g.oh) else { continue };
                            for kj in 0..g.kw {
                                let Some(ox) = origin(ix, g.pw, kj, g.sw, g.ow) else { continue };
                                want += cols[(b * g.positions() + oy * g.ow + ox) * g.k() + (ki * g.kw + kj) * c + ch];
                            }
                        }
                        let got = dx[(((img0 + b) * h + iy) * w + ix) * c + ch];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{name}: col2im at {b},{iy},{ix},{ch}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn text_ops_match_the_cpu() {
    if !gpu("text_ops_match_the_cpu") {
        return;
    }
    let _route = route_shared();
    let tol = 1e-4;
    compare_layer!("softmax", [5, 37], tol, |r| Softmax::default());
    compare_layer!("softmax causal", [3, 40, 40], tol, |r| Softmax { causal: true });
    compare_layer!("position embedding", [4, 9, 6], tol, |r| PositionEmbedding::new(9, 6, &mut r));
    compare_layer!("attention", [3, 11, 24], tol, |r| Attention::new(2, false));
    compare_layer!("attention causal", [3, 70, 48], tol, |r| Attention::new(4, true));
    compare_layer!("transformer block", [2, 9, 16], tol, |r| transformer_block(16, 2, 32, false, &mut r));
    compare_layer!("attention pool", [4, 9, 16], tol, |r| {
        // a non-zero query, so the weights are not uniform
        let mut p = AttentionPool::new(16);
        p.query.value = Tensor::from_slice(&[16], &random(16, 5));
        p
    });
    // the embedding reads integer ids: its own inputs, repeated ids included
    let (vocab, dim, shape) = (11, 5, [4usize, 13, 1]);
    let ids: Vec<f32> = (0..52).map(|t| ((t * 7) % vocab) as f32).collect();
    let mut c = Embedding::<Cpu>::new(vocab, dim, &mut InitRng::seed_from_u64(3));
    let mut g = Embedding::<Cuda>::new(vocab, dim, &mut InitRng::seed_from_u64(3));
    let (xc, xg) = (Tensor::<Cpu>::from_slice(&shape, &ids), Tensor::<Cuda>::from_slice(&shape, &ids));
    let (mut yc, mut yg) = (Tensor::empty(), Tensor::empty());
    c.forward(&xc, &mut yc, Mode::Train);
    g.forward(&xg, &mut yg, Mode::Train);
    assert_eq!(yc.to_vec(), yg.to_vec(), "embedding rows are copied exactly");
    let dy = random(yc.len(), 4);
    c.backward(&xc, &yc, &Tensor::from_slice(yc.shape(), &dy), None);
    g.backward(&xg, &yg, &Tensor::from_slice(yc.shape(), &dy), None);
    let e = max_rel(&g.table.grad.to_vec(), &c.table.grad.to_vec());
    assert!(e <= tol, "embedding gradient: max relative error {e:e}");
}

#[test]
fn optimizer_updates_match_the_cpu() {
    if !gpu("optimizer_updates_match_the_cpu") {
        return;
    }
    // 1003: the SGD kernel's four-at-a-time loop and its tail
    let n = 1003;
    let (p0, g, m0) = (random(n, 3), random(n, 4), random(n, 5));
    let v0: Vec<f32> = random(n, 6).iter().map(|v| v.abs()).collect();
    let up = |v: &Vec<f32>| Tensor::<Cuda>::from_slice(&[v.len()], v);
    for (decoupled, wd) in [(false, 0.0), (false, 0.01), (true, 0.05)] {
        let (mut pc, mut mc, mut vc) = (p0.clone(), m0.clone(), v0.clone());
        Cpu::adam_update(&mut pc, &g, &mut mc, &mut vc, 0.01, (0.9, 0.999), 1e-8, wd, decoupled, 3);
        let (mut pg, gg, mut mg, mut vg) = (up(&p0), up(&g), up(&m0), up(&v0));
        Cuda::adam_update(
            pg.buf_mut(),
            gg.buf(),
            mg.buf_mut(),
            vg.buf_mut(),
            0.01,
            (0.9, 0.999),
            1e-8,
            wd,
            decoupled,
            3,
        );
        assert!(max_rel(&pg.to_vec(), &pc) < 1e-6, "adam (decoupled {decoupled}, wd {wd})");
        assert!(max_rel(&vg.to_vec(), &vc) < 1e-6);
    }
    for (momentum, nesterov) in [(0.9, false), (0.9, true), (0.0, false)] {
        let (mut pc, mut vc) = (p0.clone(), m0.clone());
        Cpu::sgd_update(&mut pc, &g, &mut vc, 0.05, momentum, 5e-4, nesterov);
        let (mut pg, gg, mut vg) = (up(&p0), up(&g), up(&m0));
        Cuda::sgd_update(pg.buf_mut(), gg.buf(), vg.buf_mut(), 0.05, momentum, 5e-4, nesterov);
        assert!(max_rel(&pg.to_vec(), &pc) < 1e-6, "sgd (momentum {momentum}, nesterov {nesterov})");
        assert!(max_rel(&vg.to_vec(), &vc) < 1e-6);
    }
    let mask: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
    let (mut pg, mg) = (up(&p0), up(&mask));
    Cuda::apply_mask(pg.buf_mut(), mg.buf());
    let want: Vec<f32> = p0.iter().zip(&mask).map(|(a, b)| a * b).collect();
    assert_eq!(pg.to_vec(), want);
}

#[test]
fn big_gemm_and_cross_entropy_match_the_cpu() {
    if !gpu("big_gemm_and_cross_entropy_match_the_cpu") {
        return;
    }
    let _route = route_shared();
    // a CIFAR-sized convolution (the shapes of the W1 benchmark's second layer, batch 8)
    compare_layer!("conv 64->128 on 32x32", [8, 32, 32, 64], 2e-4, |r| Conv::new_2d(64, 128, 3, 1, 1, &mut r));
    let (rows, classes) = (300, 10);
    let logits = random(rows * classes, 8);
    let labels: Vec<f32> = (0..rows).map(|i| (i * 7 % classes) as f32).collect();
    let (mut dc, mut sc) = (vec![0.0; rows * classes], vec![0.0; 6]);
    use cnnlab::core::ops::cross_entropy::CrossEntropyOps;
    Cpu::softmax_cross_entropy(&logits, &labels, Some(&mut dc), rows, classes, &mut sc, 1);
    let (xg, yg) =
        (Tensor::<Cuda>::from_slice(&[rows, classes], &logits), Tensor::<Cuda>::from_slice(&[rows], &labels));
    let (mut dg, mut sg) = (Tensor::<Cuda>::zeros(&[rows, classes]), Tensor::<Cuda>::zeros(&[6]));
    Cuda::softmax_cross_entropy(xg.buf(), yg.buf(), Some(dg.buf_mut()), rows, classes, sg.buf_mut(), 1);
    let sg = sg.to_vec();
    // slot 1 only: the others untouched
    assert_eq!((sg[0], sg[1], sg[4], sg[5]), (0.0, 0.0, 0.0, 0.0));
    assert_eq!(sc[3], sg[3], "correct rows");
    // the row losses are summed in the same order in f64 on both: the same mean up to the
    // rows' own rounding (expf/logf on the GPU)
    assert!((sc[2] - sg[2]).abs() < 1e-5 * sc[2].abs(), "loss {} vs {}", sg[2], sc[2]);
    assert!(max_rel(&dg.to_vec(), &dc) < 1e-6);
}

/// `C = A·B (+ C)` on each GEMM route (`gemm.rs`): cuBLAS, the 3xTF32 kernel with either tile
/// size, with K in slices (split-K) and with promoted sums, and tuned, against a float64
/// reference. Sizes that fill no tile and sizes past one,
/// K not a multiple of the kernel's 16, each operand contiguous along K or along M/N, leading
/// dimensions wider than the matrix, accumulation and batches. The bound is 2⁻²⁰ of each
/// value's sum of |products|: fp32 GEMMs keep to it at these lengths (K up to 300), and one
/// pass of TF32 (the kernel without its small terms) exceeds it some thirty times over.
#[test]
fn gemms_match_the_cpu_on_every_route() {
    let Some(target) = target("gemms_match_the_cpu_on_every_route") else { return };
    let _route = route_exclusive();
    struct Restore(GemmRoute);
    impl Drop for Restore {
        fn drop(&mut self) {
            cuda::set_gemm_route(self.0);
        }
    }
    let _restore = Restore(default_gemm_route(target));
    // (m, n, k, A along K, B along N, padding of each leading dimension, accumulate, batch)
    let cases = [
        (1, 1, 1, true, true, 0, false, 1),
        (5, 7, 3, true, true, 0, true, 1),
        (37, 70, 45, false, true, 3, false, 1),
        (130, 129, 33, true, false, 0, true, 1),
        (64, 64, 16, false, false, 5, false, 1),
        (9, 200, 300, true, true, 1, false, 1),
        (70, 20, 19, true, false, 2, true, 3),
        (3, 5, 0, true, true, 0, true, 1),
    ];
    // every route, the tuned one last (its choices are read below)
    assert_eq!(GemmRoute::ALL.last(), Some(&GemmRoute::Tune));
    for route in GemmRoute::ALL {
        cuda::set_gemm_route(route);
        for (i, &(m, n, k, a_along_k, b_along_n, pad, accumulate, count)) in cases.iter().enumerate() {
            let case = format!("{route:?}, case {i}: {m}x{n}x{k}, batch {count}");
            // row and column strides, and each matrix's stride in its batch
            let (ars, acs, a_len) = if a_along_k { (k + pad, 1, m * (k + pad)) } else { (1, m + pad, k * (m + pad)) };
            let (brs, bcs, b_len) = if b_along_n { (n + pad, 1, k * (n + pad)) } else { (1, k + pad, n * (k + pad)) };
            let (ldc, c_len) = (n + pad, m * (n + pad));
            let (a, b, c0) = (
                random(a_len * count + 1, 10 + i as u64),
                random(b_len * count + 1, 20 + i as u64),
                random(c_len * count + 2, 30 + i as u64),
            );
            let (ag, bg) = (Tensor::<Cuda>::from_slice(&[a.len()], &a), Tensor::<Cuda>::from_slice(&[b.len()], &b));
            let mut cg = Tensor::<Cuda>::from_slice(&[c0.len()], &c0);
            // the operands start one value in: views that start past their allocation's start
            if count == 1 {
                Cuda::matmul(
                    m,
                    n,
                    k,
                    (ag.buf(), 1, ars, acs),
                    (bg.buf(), 1, brs, bcs),
                    (cg.buf_mut(), 1, ldc),
                    accumulate,
                );
            } else {
                Cuda::matmul_batched(
                    count,
                    (m, n, k),
                    (ag.buf(), 1, ars, acs, a_len),
                    (bg.buf(), 1, brs, bcs, b_len),
                    (cg.buf_mut(), 1, ldc, c_len),
                    accumulate,
                );
            }
            let got = cg.to_vec();
            for t in 0..count {
                for r in 0..m {
                    for j in 0..ldc {
                        let at = 1 + t * c_len + r * ldc + j;
                        if j >= n {
                            assert_eq!(
                                got[at].to_bits(),
                                c0[at].to_bits(),
                                "{case}: C's padding at ({r}, {j}) written"
                            );
                            continue;
                        }
                        let (mut sum, mut size) = (0.0f64, 0.0f64);
                        for p in 0..k {
                            let x = a[1 + t * a_len + r * ars + p * acs] as f64
                                * b[1 + t * b_len + p * brs + j * bcs] as f64;
                            sum += x;
                            size += x.abs();
                        }
                        if accumulate {
                            sum += c0[at] as f64;
                            size += (c0[at] as f64).abs();
                        }
                        let err = (got[at] as f64 - sum).abs();
                        assert!(
                            err <= size * 2f64.powi(-20) + 1e-30,
                            "{case}: C({r}, {j}) = {} against {sum} (|products| {size})",
                            got[at]
                        );
                    }
                }
            }
            // nothing written before the first matrix or after the last
            assert_eq!(got[0].to_bits(), c0[0].to_bits(), "{case}: the value before C written");
            assert_eq!(got[c0.len() - 1].to_bits(), c0[c0.len() - 1].to_bits(), "{case}: the value after C written");
        }
    }
    // a NaN in A (all mantissa bits set, as CUDA's own NaN: rounding it on its bits would carry
    // into the sign) makes its row of C NaN on every route, and only that row
    let (m, n, k) = (4, 3, 40);
    let mut a = random(m * k, 40);
    a[2 * k + 5] = f32::from_bits(0x7fff_ffff);
    let b = random(k * n, 41);
    for route in GemmRoute::ALL.into_iter().filter(|&r| r != GemmRoute::Tune) {
        cuda::set_gemm_route(route);
        let (ag, bg) = (Tensor::<Cuda>::from_slice(&[m * k], &a), Tensor::<Cuda>::from_slice(&[k * n], &b));
        let mut cg = Tensor::<Cuda>::zeros(&[m * n]);
        Cuda::matmul(m, n, k, (ag.buf(), 0, k, 1), (bg.buf(), 0, n, 1), (cg.buf_mut(), 0, n), false);
        let c = cg.to_vec();
        for (at, v) in c.iter().enumerate() {
            assert_eq!(v.is_nan(), at / n == 2, "{route:?}: C({}, {}) = {v}", at / n, at % n);
        }
    }
    cuda::set_gemm_route(GemmRoute::Tune);
    // tuning timed each shape that the kernels can run, and says so
    let lines = <Cuda as BackendBase>::choices();
    assert!(lines.iter().any(|l| l.starts_with("GEMMs: each shape timed once")), "{lines:?}");
    let timed: Vec<&String> = lines.iter().filter(|l| l.starts_with("GEMM 130x129x33")).collect();
    assert_eq!(timed.len(), 1, "{lines:?}");
    for way in [
        "cuBLAS",
        "3xTF32 kernel, 128x128 tiles",
        "3xTF32 kernel, 64x64 tiles",
        "3xTF32 kernel, 64x64 tiles, sums in fp32 every 8 of K",
    ] {
        assert!(timed[0].contains(way), "{way} timed: {}", timed[0]);
    }
    assert!(timed[0].contains("off by"), "the kernels' results compared with cuBLAS's: {}", timed[0]);
    assert!(!timed[0].contains("left out"), "the kernels agree with cuBLAS: {}", timed[0]);
    // C's 2 tiles of 128x128 leave the emulator's 16 multiprocessors idle: split-K timed too,
    // K = 300 in 4 slices (each at least 64 of K)
    let long_k: Vec<&String> = lines.iter().filter(|l| l.starts_with("GEMM 9x200x300")).collect();
    assert_eq!(long_k.len(), 1, "{lines:?}");
    assert!(long_k[0].contains("128x128 tiles, K in 4 slices"), "{}", long_k[0]);
    assert!(!long_k[0].contains("left out"), "split-K agrees with cuBLAS: {}", long_k[0]);
    let _ = writeln!(std::io::stderr(), "NOTE gemms_match_the_cpu_on_every_route: {:?} ({})", target, timed[0]);
}

/// The batch gather (crops, flips, shared and per-example permutations) copies values: the
/// GPU's batch equals the CPU's bit for bit.
#[test]
fn batch_gather_matches_the_cpu() {
    if !gpu("batch_gather_matches_the_cpu") {
        return;
    }
    use cnnlab::core::ops::gather_batch::{BatchPlan, ExampleGeom, GatherBatchOps};
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for g in [ExampleGeom { h: 8, w: 6, c: 3 }, ExampleGeom { h: 1, w: 40, c: 1 }] {
        let n = 50;
        let x_train = random(n * g.len(), 12);
        let y_train: Vec<f32> = (0..n).map(|i| (i % 10) as f32).collect();
        let (xc, yc) = (x_train.clone(), y_train.clone());
        let (xg, yg) =
            (Tensor::<Cuda>::from_slice(&[n, g.len()], &x_train), Tensor::<Cuda>::from_slice(&[n], &y_train));
        let p = g.positions() as i32;
        for perms in 0..3 {
            let rows = 17;
            let mut plan = BatchPlan::default();
            for _ in 0..rows {
                let shift = if g.h > 1 { 3 } else { 0 };
                plan.examples.extend_from_slice(&[
                    r.random_range(0..n as i32),
                    r.random_range(-shift..=shift),
                    r.random_range(-shift..=shift),
                    r.random_range(0..2),
                ]);
            }
            let tables = [0, 1, rows][perms];
            for _ in 0..tables {
                let mut perm: Vec<i32> = (0..p).collect();
                for i in (1..perm.len()).rev() {
                    perm.swap(i, r.random_range(0..=i));
                }
                plan.perms.extend(perm);
            }
            assert!(plan.fits(n, g));
            let (mut bx, mut by) = (Vec::new(), Vec::new());
            Cpu::gather_batch(&xc, &yc, g, &plan, &mut bx, &mut by);
            let (mut gx, mut gy) = (Tensor::<Cuda>::empty(), Tensor::<Cuda>::empty());
            Cuda::gather_batch(xg.buf(), yg.buf(), g, &plan, gx.buf_mut(), gy.buf_mut());
            gx.resize(&[bx.len()]);
            gy.resize(&[by.len()]);
            assert_eq!(gx.to_vec(), bx, "{g:?}, {tables} permutation tables: examples");
            assert_eq!(gy.to_vec(), by, "{g:?}, {tables} permutation tables: labels");
        }
    }
}

/// A fit on the GPU gathers its batches from the training split kept there and reads the loss
/// back in blocks: its curve equals a GPU fit on uploaded host batches bit for bit, and the
/// CPU's within rounding.
#[test]
fn resident_batches_train_the_same_run() {
    if !gpu("resident_batches_train_the_same_run") {
        return;
    }
    let _route = route_shared();
    let data = toy_images(512, 4);
    let config = TrainConfig {
        steps: 40,
        batch_size: 32,
        eval_every: 10,
        augment: Some(cnnlab::train::Augment { crop_padding: 2, horizontal_flip: true }),
        arch: ImageArch { cnn_widths: vec![8, 16], pool_after: vec![0], ..ImageArch::small() },
        ..TrainConfig::mnist1d()
    };
    let fit = |resident: Option<bool>| {
        let mut t = Trainer::<Cuda>::for_dataset(ModelKind::Cnn, &data, config.clone()).unwrap();
        t.sampler.permutation = cnnlab::train::PositionPermutation::PerExample;
        if let Some(k) = resident {
            t.keep_data_resident(k);
        }
        t.fit(&data, &mut |_| {}).unwrap().curve
    };
    let (resident, uploaded) = (fit(None), fit(Some(false)));
    assert_eq!(resident, uploaded);
    let mut cpu = Trainer::<Cpu>::for_dataset(ModelKind::Cnn, &data, config.clone()).unwrap();
    cpu.sampler.permutation = cnnlab::train::PositionPermutation::PerExample;
    let cpu = cpu.fit(&data, &mut |_| {}).unwrap().curve;
    for (g, c) in resident.iter().zip(&cpu) {
        assert!((g.train_loss - c.train_loss).abs() <= 1e-3 * (1.0 + c.train_loss), "{g:?} vs {c:?}");
    }
}

/// A small image dataset with learnable structure: the class decides a bright square's place.
fn toy_images(n: usize, seed: u64) -> Dataset {
    let (h, w, c, classes) = (8, 8, 3, 4);
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut make = |n: usize| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let label = i % classes;
            let (oy, ox) = ((label / 2) * 4, (label % 2) * 4);
            for yy in 0..h {
                for xx in 0..w {
                    for _ in 0..c {
                        let inside = yy >= oy && yy < oy + 4 && xx >= ox && xx < ox + 4;
                        x.push(if inside { 1.0 } else { 0.0 } + r.random_range(-0.5f32..0.5));
                    }
                }
            }
            y.push(label as u32);
        }
        (x, y)
    };
    let (x, y) = make(n);
    let (x_test, y_test) = make(n / 4);
    Dataset { name: "toy".into(), example_shape: vec![h, w, c], classes, vocab: None, x, y, x_test, y_test }
}

/// Trains the same model on both backends and compares the learning curves step by step.
fn curves_agree(kind: ModelKind, data: &Dataset, config: TrainConfig, tol: f32) {
    let mut cpu = Trainer::<Cpu>::for_dataset(kind, data, config.clone()).unwrap();
    let mut gpu = Trainer::<Cuda>::for_dataset(kind, data, config.clone()).unwrap();
    for step in 0..config.steps {
        let (lc, ac) = cpu.step(data, step).unwrap();
        let (lg, ag) = gpu.step(data, step).unwrap();
        assert!((lc - lg).abs() <= tol * (1.0 + lc.abs()), "{kind:?} step {step}: loss cuda {lg} vs cpu {lc}");
        if step < 3 {
            assert_eq!(ac, ag, "{kind:?} step {step}: batch accuracy");
        }
    }
    let (_, acc_c) = cpu.evaluate(data).unwrap();
    let (_, acc_g) = gpu.evaluate(data).unwrap();
    assert!((acc_c - acc_g).abs() <= 0.02, "{kind:?}: test accuracy cuda {acc_g} vs cpu {acc_c}");
}

#[test]
fn training_curves_match_the_cpu() {
    let Some(target) = target("training_curves_match_the_cpu") else { return };
    // on a GPU the default route (each convolution timed); on the emulator, whose timing is the
    // host's, tuning would pick by chance among ways that round differently (its Winograd
    // carries a made-up error), so there the CPU's way: im2col + GEMM
    let _route = route_exclusive();
    if *target != Target::Gpu {
        cuda::set_convolution_route(ConvRoute::Im2col);
    }
    // images: every image model with BatchNorm, SGD + Nesterov + weight decay, augmentation
    let data = toy_images(512, 1);
    let arch = ImageArch {
        cnn_widths: vec![8, 16],
        pool_after: vec![0],
        global_pool: true,
        mlp_hidden: vec![32],
        mixer: cnnlab::models::dnn::MixerSize { dim: 8, depth: 2, token_hidden: 16, channel_hidden: 16 },
        ..ImageArch::small()
    };
    let config = TrainConfig {
        steps: 30,
        batch_size: 32,
        lr: 0.05,
        optimizer: cnnlab::core::optim::OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4, nesterov: true },
        arch,
        ..TrainConfig::mnist1d()
    };
    // rounding differences grow through training; the first 30 steps stay within 1e-3
    for kind in [ModelKind::Cnn, ModelKind::Lcn, ModelKind::Dnn, ModelKind::Mlp, ModelKind::Logistic] {
        curves_agree(kind, &data, config.clone(), 1e-3);
    }
    // sequences: MNIST-1D with its recipe (Adam), the CNN and the Mixer
    let mnist = cnnlab::data::mnist1d_default().unwrap();
    let config = TrainConfig { steps: 30, ..TrainConfig::mnist1d() };
    for kind in [ModelKind::Cnn, ModelKind::Dnn, ModelKind::Mlp] {
        curves_agree(kind, &mnist, config.clone(), 1e-3);
    }
}

#[test]
fn sequential_runs_on_two_threads_match_one() {
    if !gpu("sequential_runs_on_two_threads_match_one") {
        return;
    }
    let _route = route_shared();
    // each thread has its own stream: two runs at once give the numbers of one run alone
    let data = toy_images(256, 2);
    let config = TrainConfig { steps: 20, batch_size: 32, ..TrainConfig::mnist1d() };
    let run = |seed: u64| {
        let mut t =
            Trainer::<Cuda>::for_dataset(ModelKind::Cnn, &data, TrainConfig { seed, ..config.clone() }).unwrap();
        (0..20).map(|s| t.step(&data, s).unwrap().0).collect::<Vec<f32>>()
    };
    let alone = run(3);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(3));
        let b = s.spawn(|| run(4));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, alone);
    assert_ne!(a, b);
}

/// A CUDA call that fails — a real allocation far beyond the GPU's memory, then an injected
/// failure inside a run — is an error, not a panic: the thread skips its later ops, the
/// trainer returns the failure, and the thread's next run trains as usual.
#[test]
fn a_device_failure_is_an_error_and_the_next_run_trains() {
    use cnnlab::core::backend::BackendBase;
    if !gpu("a_device_failure_is_an_error_and_the_next_run_trains") {
        return;
    }
    let _route = route_shared();
    // 4 TiB: the allocation fails and the failure is recorded, as running out of memory; the
    // buffer keeps its length (host code reading it back gets the values it expects: zeros)
    let huge = Tensor::<Cuda>::zeros(&[1 << 40]);
    assert_eq!(Cuda::len(huge.buf()), 1 << 40);
    match Cuda::take_error() {
        Some(cnnlab::Error::DeviceMemory(m)) => assert!(m.contains("allocation"), "{m}"),
        other => panic!("expected an allocation failure, got {other:?}"),
    }
    drop(huge);
    assert!(Cuda::take_error().is_none(), "taken once");
    let data = toy_images(256, 5);
    let config = TrainConfig { steps: 12, batch_size: 32, eval_every: 6, ..TrainConfig::mnist1d() };
    let mut t = Trainer::<Cuda>::for_dataset(ModelKind::Cnn, &data, config.clone()).unwrap();
    cuda::inject_failure("a test");
    match t.fit(&data, &mut |_| {}) {
        Err(cnnlab::Error::Device(m)) => assert!(m.contains("a test"), "{m}"),
        other => panic!("expected a device error, got {:?}", other.map(|r| r.final_test_accuracy)),
    }
    let mut t = Trainer::<Cuda>::for_dataset(ModelKind::Cnn, &data, config.clone()).unwrap();
    let mut cpu = Trainer::<Cpu>::for_dataset(ModelKind::Cnn, &data, config).unwrap();
    let (g, c) = (t.fit(&data, &mut |_| {}).unwrap(), cpu.fit(&data, &mut |_| {}).unwrap());
    let (g, c) = (g.curve.last().unwrap().train_loss, c.curve.last().unwrap().train_loss);
    assert!((g - c).abs() <= 1e-3 * (1.0 + c), "after a failure: loss {g} vs cpu {c}");
}

/// The `cnnlab` binary as a command run in `dir` on `target` (the emulator's libraries on its
/// library path), or None where the binary is not here (`test` says it skipped).
fn cnnlab_command(test: &str, target: &Target, dir: &Path) -> Option<std::process::Command> {
    // CNNLAB_BIN: the binary where the test binary was carried elsewhere (scripts/gpu_check.sh)
    let exe = std::env::var_os("CNNLAB_BIN").map(std::path::PathBuf::from);
    let exe = exe.unwrap_or_else(|| env!("CARGO_BIN_EXE_cnnlab").into());
    let exe = exe.canonicalize().unwrap_or(exe);
    if !exe.exists() {
        skip(test, &format!("{} is not here (set CNNLAB_BIN)", exe.display()));
        return None;
    }
    let mut cmd = std::process::Command::new(&exe);
    cmd.current_dir(dir).env_remove("CNNLAB_CUDNN");
    if let Target::Emulator(lib) = target {
        let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
        cmd.env("LD_LIBRARY_PATH", format!("{}:{path}", lib.display()));
        // GEMM-type ways in fp32 only: the emulator's timing is the host's, so tuning picks by
        // chance, and its Winograd carries a made-up error (one CLI run ended at 0.430 against
        // the CPU's 0.416; with GEMM-type ways only, such runs match the CPU's to the bit), as
        // TF32 on split operands rounds differently. A test of those ways removes this.
        cmd.env("CNNLAB_CUDNN_TRANSFORMS", "0").env("CNNLAB_CUDNN_SPLIT", "0");
        // the GEMMs of this process (`default_gemm_route`)
        if std::env::var_os("CNNLAB_GEMM").is_none() {
            cmd.env("CNNLAB_GEMM", "cublas");
        }
    }
    Some(cmd)
}

/// The test accuracies of `reproduce --json -`'s rows, in order.
fn table_accuracies(json: &[u8]) -> Vec<f64> {
    let json: serde_json::Value = serde_json::from_slice(json).unwrap();
    let rows = json["rows"].as_array().unwrap();
    rows.iter().flat_map(|r| r["accuracies"].as_array().unwrap().iter().map(|a| a.as_f64().unwrap())).collect()
}

/// The command line on the GPU: `reproduce --device cuda` trains the table's runs at once, each
/// on its own thread and stream, and its accuracies are the CPU's within a point (the curves
/// differ by rounding only; 60 steps). A second process, reading the convolution choices that
/// the first timed and kept in the tuning cache, gives the same curves to the bit.
#[test]
fn the_cli_reproduces_on_cuda() {
    let Some(target) = target("the_cli_reproduces_on_cuda") else { return };
    let dir = tempfile::tempdir().unwrap();
    if cnnlab_command("the_cli_reproduces_on_cuda", target, dir.path()).is_none() {
        return;
    }
    let cache = dir.path().join("cache").join("convolutions.json");
    let run = |device: &str, run_dir: &str| -> Vec<f64> {
        let Some(mut cmd) = cnnlab_command("the_cli_reproduces_on_cuda", target, dir.path()) else { unreachable!() };
        cmd.args(["reproduce", "--models", "cnn,mlp", "--steps", "60", "--eval-every", "30"]);
        cmd.args(["--seeds", "2", "--quiet", "--json", "-", "--device", device, "--run-dir", run_dir]);
        cmd.env("CNNLAB_TUNE_CACHE", &cache);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
        let accuracies = table_accuracies(&out.stdout);
        assert_eq!(accuracies.len(), 8, "cnn and mlp, original and permuted, two seeds");
        accuracies
    };
    let (gpu, cpu) = (run("cuda", "cuda"), run("cpu", "cpu"));
    let _ = writeln!(std::io::stderr(), "the_cli_reproduces_on_cuda: accuracies cuda {gpu:?}, cpu {cpu:?}");
    assert!(cpu.iter().cloned().fold(0.0, f64::max) > 0.3, "the runs learned (chance is 0.1)");
    for (g, c) in gpu.iter().zip(&cpu) {
        assert!((g - c).abs() <= 0.01, "test accuracy cuda {g} vs cpu {c}");
    }
    // the run's provenance says how the GPU convolved (the route, and each choice where cuDNN
    // is loaded)
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cuda").join("provenance.json")).unwrap()).unwrap();
    let choices = record["backend_choices"].as_array().cloned().unwrap_or_default();
    assert!(choices.first().and_then(|c| c.as_str()).is_some_and(|c| c.starts_with("convolutions: ")), "{record}");
    // the first process kept its choices: where cuDNN is loaded, each convolution pass
    let kept: std::collections::BTreeMap<String, String> = match std::fs::read(&cache) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(_) => Default::default(),
    };
    if kept.is_empty() {
        return skip("the_cli_reproduces_on_cuda (a second process)", "no tuned choices: libcudnn was not loaded");
    }
    assert!(kept.keys().any(|k| k.ends_with("| Forward")) && kept.keys().any(|k| k.ends_with("| Data")), "{kept:?}");
    // a rewrite (a new file renamed into place) would mean it timed again
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cache).unwrap());
    let before = inode();
    let again = run("cuda", "again");
    assert_eq!(inode(), before, "the second process read the cache and timed nothing");
    assert_eq!(again, gpu, "a second process, same seeds: the same accuracies");
    for name in ["cnn-original-seed0.jsonl", "cnn-permuted-seed1.jsonl"] {
        let read = |d: &str| std::fs::read_to_string(dir.path().join(d).join(name)).unwrap();
        assert_eq!(read("again"), read("cuda"), "{name}: a second process's curve, to the bit");
    }
}

/// `LD_LIBRARY_PATH` for a process that cannot load cuDNN: the emulator's folder (where it
/// runs the test) as links to its libraries but libcudnn, in `dir`, then the path's folders
/// that hold no libcudnn.
fn library_path_without_cudnn(target: &Target, dir: &Path) -> std::ffi::OsString {
    let is_cudnn = |name: &std::ffi::OsStr| name.to_string_lossy().starts_with("libcudnn");
    let holds_cudnn = |folder: &Path| {
        std::fs::read_dir(folder).is_ok_and(|mut files| files.any(|f| f.is_ok_and(|f| is_cudnn(&f.file_name()))))
    };
    let mut folders = Vec::new();
    if let Target::Emulator(lib) = target {
        let links = dir.join("lib-without-cudnn");
        std::fs::create_dir_all(&links).unwrap();
        for file in std::fs::read_dir(lib).unwrap().map(|f| f.unwrap()) {
            if !is_cudnn(&file.file_name()) {
                std::os::unix::fs::symlink(file.path(), links.join(file.file_name())).unwrap();
            }
        }
        folders.push(links);
    }
    let path = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    folders.extend(std::env::split_paths(&path).filter(|f| !f.as_os_str().is_empty() && !holds_cudnn(f)));
    std::env::join_paths(folders).unwrap()
}

/// cnnlab's implicit-GEMM convolutions need no cuDNN: in a process that cannot load it, the
/// tuned route times them against im2col + cuBLAS (strict fp32, compute capability 8.0 or
/// newer) and keeps the choices under keys that say so, and `CNNLAB_CUDNN=implicit` trains on
/// them as the CPU does, to rounding. A CNN of 16-channel layers on a folder of small images,
/// without BatchNorm (whose conv bias gets only rounding noise as its gradient, which Adam
/// turns into whole steps: CPU and GPU then part by 4e-4 in test loss on any route).
#[test]
fn implicit_convolutions_run_without_cudnn() {
    let test = "implicit_convolutions_run_without_cudnn";
    let Some(target) = target(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    for (ci, class) in ["rows", "columns"].iter().enumerate() {
        std::fs::create_dir_all(data.join(class)).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ci as u64);
        for i in 0..8 {
            let image = image::RgbImage::from_fn(8, 8, |x, y| {
                let v = (if ci == 0 { x } else { y } * 30) as u8 + rng.random_range(0..40u8);
                image::Rgb([v, 255 - v, v / 2])
            });
            image.save(data.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let path = library_path_without_cudnn(target, dir.path());
    let cache = dir.path().join("convolutions.json");
    let command = |args: &[&str]| -> Option<std::process::Command> {
        let mut cmd = cnnlab_command(test, target, dir.path())?;
        cmd.env("LD_LIBRARY_PATH", &path).env("CNNLAB_TUNE_CACHE", &cache).env_remove("CNNLAB_CONV_IMPLICIT");
        cmd.args(args);
        Some(cmd)
    };
    let Some(mut devices) = command(&["devices"]) else { return };
    let said = String::from_utf8_lossy(&devices.output().unwrap().stdout).into_owned();
    if !said.contains("libcudnn not found") {
        return skip(test, &format!("libcudnn is on the system's library paths:\n{said}"));
    }
    // each evaluation's (train loss, test loss), and the convolution choices
    let spec = format!("folder:{}", data.display());
    let train = |device: &str, route: &str, run_dir: &str| -> (Vec<(f64, f64)>, Vec<String>) {
        let mut cmd =
            command(&["reproduce", "--dataset", &spec, "--models", "cnn", "--conditions", "original"]).unwrap();
        cmd.args(["--widths", "16,16", "--pool-after", "0", "--batch-norm", "false", "--seeds", "1", "--steps", "6"]);
        cmd.args(["--eval-every", "3", "--quiet", "--device", device, "--run-dir", run_dir]);
        cmd.env("CNNLAB_CUDNN", route);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{device} {route}: {}", String::from_utf8_lossy(&out.stderr));
        let run = dir.path().join(run_dir);
        let curve = std::fs::read_to_string(run.join("cnn-original-seed0.jsonl")).unwrap();
        let points = curve.lines().map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap());
        let points: Vec<(f64, f64)> =
            points.map(|p| (p["train_loss"].as_f64().unwrap(), p["test_loss"].as_f64().unwrap())).collect();
        assert_eq!(points.len(), 2, "{run_dir}: two evaluations");
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("provenance.json")).unwrap()).unwrap();
        let choices = record["backend_choices"].as_array().cloned().unwrap_or_default();
        (points, choices.iter().filter_map(|c| c.as_str().map(String::from)).collect())
    };
    let (_, tuned) = train("cuda", "tune", "tuned");
    let _ = writeln!(std::io::stderr(), "{test}: tuned choices\n{}", tuned.join("\n"));
    assert!(tuned[0].starts_with("convolutions (libcudnn not found): each shape and pass timed once"), "{tuned:?}");
    let timed_implicit = |pass: &str| {
        tuned.iter().any(|c| {
            c.contains(&format!("16 -> 16, 3x3 window, stride 1, {pass}: "))
                && c.contains("implicit GEMM in 3xTF32 on 64x64 tiles")
                && !c.contains("cuDNN")
        })
    };
    if *target == Target::Gpu && !timed_implicit("Forward") {
        return skip(test, "the GPU runs no implicit-GEMM kernels (compute capability under 8.0?)");
    }
    for pass in ["Forward", "Inference", "Filter", "Data"] {
        assert!(timed_implicit(pass), "{pass}: timed against im2col + cuBLAS alone\n{tuned:?}");
    }
    // each compared with im2col + cuBLAS and within its tolerance (emulated, the same sums)
    assert!(tuned.iter().all(|c| !c.contains("left out")), "{tuned:?}");
    let kept: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert!(kept.len() >= 4 && kept.keys().all(|k| k.contains(", no cuDNN, fp32 or cnnlab's implicit")), "{kept:?}");
    // trained on the kernels, as on the CPU
    let (implicit, choices) = train("cuda", "implicit", "implicit");
    assert!(choices.iter().any(|c| c.ends_with("Filter: implicit GEMM in 3xTF32 on 128x128 tiles")), "{choices:?}");
    let (cpu, _) = train("cpu", "tune", "cpu");
    let _ = writeln!(std::io::stderr(), "{test}: implicit {implicit:?}, cpu {cpu:?}");
    // as `tf32_trains_close_to_the_cpu_but_not_as_strict_fp32`: a GPU's own fp32 rounds unlike
    // the CPU's; the emulator's sums match it to about 1e-7 here
    let tol = if *target == Target::Gpu { 1e-2 } else { 1e-5 };
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-6);
    for (g, c) in implicit.iter().zip(&cpu) {
        assert!(rel(g.0, c.0) < tol && rel(g.1, c.1) < tol, "implicit {g:?} vs cpu {c:?}");
    }
}

/// `--tf32` (TF32 tensor cores in cuBLAS and cuDNN, the PyTorch reference's math) trains close
/// to the CPU, and not as strict fp32 does: its curves differ from the strict run's (the
/// emulator cuts TF32 inputs to 10 mantissa bits, as a tensor core reads them), by about what
/// TF32's rounding gives, while the strict run's losses match the CPU's to rounding.
#[test]
fn tf32_trains_close_to_the_cpu_but_not_as_strict_fp32() {
    let test = "tf32_trains_close_to_the_cpu_but_not_as_strict_fp32";
    let Some(target) = target(test) else { return };
    let _route = route_shared();
    let dir = tempfile::tempdir().unwrap();
    // each evaluation's (train loss, test accuracy) of the CNN and the MLP
    let run = |device: &str, tf32: bool, run_dir: &str| -> Option<Vec<(f64, f64)>> {
        let mut cmd = cnnlab_command(test, target, dir.path())?;
        cmd.args(["reproduce", "--models", "cnn,mlp", "--conditions", "original", "--steps", "60"]);
        cmd.args(["--eval-every", "20", "--seeds", "1", "--quiet", "--device", device, "--run-dir", run_dir]);
        cmd.env("CNNLAB_TUNE_CACHE", "0");
        if tf32 {
            cmd.arg("--tf32");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{device} tf32 {tf32}: {}", String::from_utf8_lossy(&out.stderr));
        let mut points = Vec::new();
        for model in ["cnn", "mlp"] {
            let curve = std::fs::read_to_string(dir.path().join(run_dir).join(format!("{model}-original-seed0.jsonl")));
            for line in curve.unwrap().lines() {
                let p: serde_json::Value = serde_json::from_str(line).unwrap();
                points.push((p["train_loss"].as_f64().unwrap(), p["test_accuracy"].as_f64().unwrap()));
            }
        }
        assert_eq!(points.len(), 6, "{run_dir}: three evaluations of two models");
        Some(points)
    };
    let Some(tf32) = run("cuda", true, "tf32") else { return };
    let (strict, cpu) = (run("cuda", false, "strict").unwrap(), run("cpu", false, "cpu").unwrap());
    let _ = writeln!(std::io::stderr(), "{test}: tf32 {tf32:?}\n strict {strict:?}\n cpu {cpu:?}");
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-6);
    // a GPU's own fp32 rounds unlike the CPU's (FMA contraction, cuDNN's algorithms), and 60
    // steps of training carry that further than the emulator's (measured there: 1e-7)
    let strict_tol = if *target == Target::Gpu { 1e-2 } else { 1e-4 };
    for ((t, s), c) in tf32.iter().zip(&strict).zip(&cpu) {
        assert!(rel(s.0, c.0) < strict_tol, "strict fp32 loss {} vs cpu {}", s.0, c.0);
        // TF32 keeps 10 of fp32's 23 mantissa bits: its losses drift by parts per thousand
        assert!(rel(t.0, c.0) < 0.05 && (t.1 - c.1).abs() <= 0.05, "tf32 {t:?} vs cpu {c:?}");
    }
    assert!(tf32.iter().zip(&strict).any(|(t, s)| rel(t.0, s.0) > 1e-5), "--tf32 ran as strict fp32: {tf32:?}");
}

/// The most memory the emulated GPU held, from the lines `CNNLAB_EMULATOR_PEAK` has the
/// emulator print to `stderr` (one for each copy of the driver the process loaded: the one
/// that allocated has the peak).
fn emulator_peak(stderr: &str) -> u64 {
    let peak = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("emulator: peak device memory ")?.strip_suffix(" bytes")?.parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no peak in {stderr}"));
    assert!(peak > 0, "{stderr}");
    peak
}

/// A folder dataset of 16x16 images of two classes in `dir`/images, `train` and `test` of
/// each class in its train/ and test/ folders; its path.
fn image_folder(dir: &Path, train: usize, test: usize) -> std::path::PathBuf {
    let data = dir.join("images");
    for (split, count) in [("train", train), ("test", test)] {
        for class in ["a", "b"] {
            let folder = data.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                let image =
                    image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, i as u8]));
                image.save(folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    data
}

/// A run's up-front memory estimate (what a GPU must have free for it to start) bounds what it
/// allocates, without asking several times that: the full preset's CNN, Mixer and LCN on 16x16
/// images, batches of 32 and evaluation in one chunk of 200 (a GPU evaluates up to 1000 at
/// once, fewer where they would take over an eighth of its memory: the 200 fit the eighth of
/// the emulated GPU that states the estimate too), against the emulator's peak. Evaluation's rows were counted as training ones before
/// (2.6 times a CNN's peak at full size), and the Mixer's count of its layers' outputs was 1.5
/// times short of what its evaluation held.
#[test]
fn memory_estimates_bound_the_gpu_runs() {
    let test = "memory_estimates_bound_the_gpu_runs";
    let Some(target) =
        emulator_only(test, "a real GPU's peak is not read this way (the emulator counts its allocations)")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = image_folder(dir.path(), 32, 100);
    let spec = format!("folder:{}", data.display());
    let train = |model: &str, env: (&str, &str)| -> Option<std::process::Output> {
        let mut cmd = cnnlab_command(test, target, dir.path())?;
        cmd.args(["train", "--model", model, "--dataset", &spec, "--preset", "full", "--steps", "1"]);
        cmd.args(["--eval-every", "1", "--batch-size", "32", "--device", "cuda", "--quiet"]);
        cmd.env("CNNLAB_TUNE_CACHE", "0").env("CNNLAB_CUDNN", "0").env(env.0, env.1);
        Some(cmd.output().unwrap())
    };
    for model in ["cnn", "dnn", "lcn"] {
        let Some(out) = train(model, ("CNNLAB_EMULATOR_PEAK", "1")) else { return };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{model}: {stderr}");
        let peak = emulator_peak(&stderr) as f64;
        // the estimate, as the refusal of a GPU with a megabyte states it (to a tenth of a MiB)
        let out = train(model, ("CNNLAB_EMULATOR_MEMORY", "1048576")).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stderr.split("needs about ").nth(1).and_then(|s| s.split(" of memory").next());
        let estimate = match said.and_then(|s| s.split_once(' ')) {
            Some((v, "MiB")) => v.parse::<f64>().unwrap() * (1u64 << 20) as f64,
            Some((v, "GiB")) => v.parse::<f64>().unwrap() * (1u64 << 30) as f64,
            _ => panic!("{model}: no estimate in {stderr}"),
        };
        let _ = writeln!(std::io::stderr(), "{test}: {model} peak {peak:.0} bytes, estimate {estimate:.0}");
        assert!(estimate >= peak && estimate <= 2.5 * peak, "{model}: estimate {estimate} for a peak of {peak}");
    }
}

/// A GPU with less memory evaluates in smaller chunks (up to an eighth of its memory, at least
/// 1 GiB) instead of refusing the run: the full preset's Mixer on 16x16 images with 1000 test
/// images, which evaluated 1000 at a time would be estimated at over 4 GiB, trains and
/// evaluates on an emulated GPU of 3 GiB, within it.
#[test]
fn small_gpus_evaluate_in_smaller_chunks() {
    use cnnlab::models::footprint::footprint;
    let test = "small_gpus_evaluate_in_smaller_chunks";
    let Some(target) = emulator_only(test, "a real GPU's memory cannot be made smaller (the emulator's can)") else {
        return;
    };
    let gib = (1u64 << 30) as f64;
    let whole = footprint(ModelKind::Dnn, &[16, 16, 3], 2, &ImageArch::standard()).run_bytes(32, 1000);
    assert!(whole > 4.0 * gib, "1000 at a time: {whole} bytes");
    let dir = tempfile::tempdir().unwrap();
    let data = image_folder(dir.path(), 16, 500);
    let Some(mut cmd) = cnnlab_command(test, target, dir.path()) else { return };
    let spec = format!("folder:{}", data.display());
    cmd.args(["train", "--model", "dnn", "--dataset", &spec, "--preset", "full", "--steps", "1", "--eval-every", "1"]);
    cmd.args(["--batch-size", "32", "--device", "cuda", "--quiet"]);
    cmd.env("CNNLAB_EMULATOR_MEMORY", (3u64 << 30).to_string()).env("CNNLAB_EMULATOR_PEAK", "1");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let peak = emulator_peak(&stderr) as f64;
    let _ = writeln!(std::io::stderr(), "{test}: peak {peak:.0} bytes; 1000 at a time estimated at {whole:.0}");
    assert!(peak < 3.0 * gib, "{peak}");
}

/// A training step stays on the GPU (issue 8): after warm-up the step allocates no device
/// memory, the host waits for the GPU at most once in 64 steps (the trainer reads the loss
/// statistics back every `STATS_SLOTS` = 64 steps, not each step's loss: a smaller interval must
/// change this test knowingly), and what a step uploads is the batch's indices and augmentation
/// (the training split is on the GPU already), not its images. Counted by the emulator
/// (`CNNLAB_EMULATOR_CALLS`) over the steps one run trains beyond another's, evaluation the same
/// in both: the full preset's four networks (narrowed) on 16x16 images, with crops and flips.
#[test]
fn a_training_step_stays_on_the_gpu() {
    let test = "a_training_step_stays_on_the_gpu";
    let Some(target) = emulator_only(test, "a real driver's calls are not counted (the emulator counts them)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = image_folder(dir.path(), 32, 8);
    let spec = format!("folder:{}", data.display());
    let batch = 16;
    let (short, long) = (64, 128);
    for model in ["cnn", "dnn", "lcn", "mlp"] {
        let calls = |steps: usize| -> Option<std::collections::HashMap<String, f64>> {
            let mut cmd = cnnlab_command(test, target, dir.path())?;
            let steps = steps.to_string();
            cmd.args(["train", "--model", model, "--dataset", &spec, "--preset", "full", "--widths", "8,16"]);
            cmd.args(["--pool-after", "0", "--mixer-dim", "16", "--mixer-depth", "1", "--patch", "4"]);
            cmd.args(["--mlp-hidden", "32", "--batch-size", &batch.to_string(), "--steps", &steps]);
            cmd.args(["--eval-every", &steps, "--device", "cuda", "--quiet"]);
            cmd.env("CNNLAB_EMULATOR_CALLS", "1").env("CNNLAB_TUNE_CACHE", "0").env("CNNLAB_CUDNN", "0");
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{model}: {stderr}");
            let line = stderr.lines().find_map(|l| l.strip_prefix("emulator: calls ")).expect("no calls line");
            let words: Vec<&str> = line.split(' ').collect();
            Some(words.chunks(2).map(|kv| (kv[0].to_string(), kv[1].parse().unwrap())).collect())
        };
        let Some(before) = calls(short) else { return };
        let after = calls(long).unwrap();
        let steps = (long - short) as f64;
        let more = |what: &str| after[what] - before[what];
        let _ = writeln!(
            std::io::stderr(),
            "{test}: {model}, per step: {} launches, {} waits, {} allocations, {} uploads of {} bytes, {} downloads",
            more("launches") / steps,
            more("waits") / steps,
            more("allocations") / steps,
            more("uploads") / steps,
            more("upload_bytes") / steps,
            more("downloads") / steps
        );
        assert!(more("launches") >= steps, "{model}: the steps ran on the GPU");
        assert_eq!(more("allocations"), 0.0, "{model}: device memory allocated inside the training step");
        assert!(more("waits") <= steps / 64.0, "{model}: {} waits in {steps} steps", more("waits"));
        assert!(more("downloads") <= steps / 64.0, "{model}: {} downloads in {steps} steps", more("downloads"));
        // an index, a crop's offsets and a flip: 16 bytes an example at most; a 16x16 RGB image
        // is 3 KiB
        assert!(more("uploads") <= steps, "{model}: {} uploads in {steps} steps", more("uploads"));
        let bytes = more("upload_bytes") / steps;
        assert!(bytes <= (16 * batch) as f64, "{model}: {bytes} bytes uploaded a step");
    }
}

/// Runs that do not fit in the GPU's memory beside others run again with fewer at once and
/// give the numbers they give alone (`Device::run_jobs`), whether the ledger of the GPU's
/// memory refused the second run before it allocated (its estimate beside the first's) or
/// both started and one ran out. On the emulator, whose memory is set between one run's peak
/// and two runs' estimates, and then between two estimates and two peaks (the estimate of
/// this MNIST-1D MLP is 0.84 times its peak, the backend's fixed scratch left out).
#[test]
fn runs_that_do_not_fit_beside_others_run_again() {
    let test = "runs_that_do_not_fit_beside_others_run_again";
    let Some(target) = emulator_only(test, "a real GPU's memory cannot be made smaller (the emulator's can)") else {
        return;
    };
    let _route = route_shared();
    let dir = tempfile::tempdir().unwrap();
    let run = |parallel: &str, env: (&str, &str)| -> Option<(Vec<f64>, String)> {
        let mut cmd = cnnlab_command(test, target, dir.path())?;
        cmd.args(["reproduce", "--models", "mlp", "--steps", "40", "--eval-every", "20", "--seeds", "2"]);
        cmd.args(["--quiet", "--json", "-", "--device", "cuda", "--parallel-runs", parallel]).env(env.0, env.1);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "--parallel-runs {parallel}: {stderr}");
        Some((table_accuracies(&out.stdout), stderr))
    };
    let Some((alone, stderr)) = run("1", ("CNNLAB_EMULATOR_PEAK", "1")) else { return };
    let peak = emulator_peak(&stderr);
    // one run's estimate, as the refusal of a GPU of a kilobyte states it (to a tenth of a MiB)
    let mut cmd = cnnlab_command(test, target, dir.path()).unwrap();
    cmd.args(["train", "--model", "mlp", "--steps", "1", "--device", "cuda", "--quiet"]);
    let refused = cmd.env("CNNLAB_EMULATOR_MEMORY", "1024").output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    let mib: f64 = said.split("needs about ").nth(1).and_then(|s| s.split(" MiB").next()?.parse().ok()).unwrap();
    let estimate = (mib * (1u64 << 20) as f64) as u64;
    assert!(estimate < peak && 2 * estimate > peak * 21 / 20, "estimate {estimate}, peak {peak}: {said}");
    for (memory, reason) in [
        // one run fits, two estimates do not: the second is refused before it allocates
        (peak * 21 / 20, "beside the"),
        // two estimates fit, two runs do not: both start, and one runs out part way
        (estimate + peak, "the GPU ran out of memory"),
    ] {
        let (beside, stderr) = run("2", ("CNNLAB_EMULATOR_MEMORY", &memory.to_string())).unwrap();
        let notes: Vec<&str> = stderr.lines().filter(|l| l.contains("did not fit")).collect();
        let _ = writeln!(std::io::stderr(), "{test}: peak {peak}, estimate {estimate}; in {memory} bytes: {notes:?}");
        let again = "did not fit in GPU memory beside others: running again, 1 at once (";
        assert!(notes.iter().any(|n| n.contains(again) && n.contains(reason)), "{reason}: {stderr}");
        assert_eq!(beside.len(), 4, "original and permuted, two seeds");
        assert_eq!(beside, alone, "the runs run again give the numbers they give alone");
    }
}

/// A way whose scratch does not fit on the GPU beside the run is left out of the tuning,
/// shown as failed, instead of ending the run: here the emulator refuses allocations over
/// 4 MiB, which the split operands of the 1000-image evaluation batch (6.2 MB in the first
/// convolution) and cuDNN GEMM's workspace there (17 MB) exceed, while the run's own buffers,
/// the NCHW copies (2.2 MB) and the training batch's scratch fit.
#[test]
fn tuning_leaves_out_ways_whose_scratch_does_not_fit() {
    let test = "tuning_leaves_out_ways_whose_scratch_does_not_fit";
    let Some(target) = emulator_only(test, "a real GPU's allocations cannot be capped (the emulator's can)") else {
        return;
    };
    let _route = route_shared();
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cmd) = cnnlab_command(test, target, dir.path()) else { return };
    cmd.args(["reproduce", "--models", "cnn", "--conditions", "original", "--seeds", "1", "--steps", "4"]);
    cmd.args(["--eval-every", "4", "--quiet", "--device", "cuda", "--run-dir", "run"]);
    cmd.env("CNNLAB_TUNE_CACHE", "0").env_remove("CNNLAB_CUDNN_SPLIT");
    let out = cmd.env("CNNLAB_EMULATOR_MAX_ALLOCATION", (4 << 20).to_string()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("ran out"), "{stderr}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/provenance.json")).unwrap()).unwrap();
    let lines: Vec<String> = record["backend_choices"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let line = |shape: &str, pass: &str| -> &String {
        let found = lines.iter().find(|l| l.starts_with(shape) && l.contains(pass));
        found.unwrap_or_else(|| panic!("no {shape} {pass} in {lines:#?}"))
    };
    let eval = line("1000x1x40x1 -> 25,", "Inference:");
    for left_out in [
        "FWD_ALGO_IMPLICIT_PRECOMP_GEMM as 3 TF32 passes on split fp32 failed",
        "FWD_ALGO_IMPLICIT_PRECOMP_GEMM in TF32 on stacked split fp32 failed",
        "FWD_ALGO_GEMM failed",
    ] {
        assert!(eval.contains(left_out), "{left_out}: {eval}");
    }
    assert!(eval.contains("FWD_ALGO_IMPLICIT_PRECOMP_GEMM on NCHW copies ") && eval.contains(" ms (off by "), "{eval}");
    // the training batch's split operands fit: timed and compared
    let train = line("100x1x40x1 -> 25,", "Forward:");
    assert!(train.contains("as 3 TF32 passes on split fp32 ") && !train.contains("failed"), "{train}");
}

/// The GEMM choices go to the tuning cache and come back from it in the next process: a short
/// `train` times each of its GEMM shapes once (cuBLAS wins on the emulator, whose kernels run
/// a thread at a time), then trains on the choices read back, here rewritten to the kernel ways
/// (split-K included), which must parse and run; an entry naming no way is timed again. The
/// choices are read from the run's provenance.
#[test]
fn gemm_choices_are_kept_in_the_tuning_cache() {
    let test = "gemm_choices_are_kept_in_the_tuning_cache";
    let Some(target) = target(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    let bench = || -> Option<String> {
        let mut cmd = cnnlab_command(test, target, dir.path())?;
        cmd.args(["train", "--model", "mlp", "--steps", "4", "--device", "cuda", "--quiet", "--overwrite"]);
        cmd.args(["--save", "run"]).env("CNNLAB_GEMM", "tune").env("CNNLAB_TUNE_CACHE", &cache);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let provenance: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("run/provenance.json")).unwrap()).unwrap();
        let choices = provenance["backend_choices"].as_array().expect("backend_choices");
        Some(choices.iter().filter_map(|c| c.as_str()).collect::<Vec<_>>().join("\n"))
    };
    let Some(first) = bench() else { return };
    let gemm_lines =
        |out: &str| -> Vec<String> { out.lines().filter(|l| l.starts_with("GEMM ")).map(String::from).collect() };
    let timed = gemm_lines(&first);
    assert!(timed.len() >= 4 && timed.iter().all(|l| l.contains("(timed: cuBLAS ")), "{first}");
    // the cache's GEMM entries, rewritten: every way in turn, and one that names none
    let kept: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    let keys: Vec<&String> = kept.keys().filter(|k| k.contains("| GEMM ")).collect();
    assert_eq!(keys.len(), timed.len(), "{kept:?}");
    let codes = [
        "3xtf32-128",
        "3xtf32-64",
        "3xtf32-128-k2",
        "3xtf32-64-k3",
        "cublas",
        "3xtf32-96",
        "3xtf32-128-p",
        "3xtf32-64-k2-p",
        "3xtf32-64-p-k2",
    ];
    let rewritten: serde_json::Map<String, serde_json::Value> =
        keys.iter().enumerate().map(|(i, k)| ((*k).clone(), codes[i % codes.len()].into())).collect();
    std::fs::write(&cache, serde_json::to_vec(&rewritten).unwrap()).unwrap();
    let second = bench().unwrap();
    let lines = gemm_lines(&second);
    let shape = |l: &str| l.split(':').next().unwrap_or("").to_string();
    for (i, k) in keys.iter().enumerate() {
        // the key names the shape as "GEMM MxNxK, A along …"; the line as "GEMM MxNxK (A along …"
        let dims = k.split("| GEMM ").nth(1).unwrap().split(',').next().unwrap();
        let along: Vec<&str> = k.split(" along ").skip(1).map(|s| s.split(',').next().unwrap()).collect();
        let name = |a: &str| if a == "MN" { "M/N".to_string() } else { a.to_string() };
        let want = format!("GEMM {dims} (A along {}, B along {}), batch 1", name(along[0]), name(along[1]));
        let line = lines.iter().find(|l| shape(l) == want).unwrap_or_else(|| panic!("{want}: {second}"));
        let way = match codes[i % codes.len()] {
            "3xtf32-128" => "3xTF32 kernel, 128x128 tiles (from the tuning cache)",
            "3xtf32-64" => "3xTF32 kernel, 64x64 tiles (from the tuning cache)",
            "3xtf32-128-k2" => "3xTF32 kernel, 128x128 tiles, K in 2 slices (from the tuning cache)",
            "3xtf32-64-k3" => "3xTF32 kernel, 64x64 tiles, K in 3 slices (from the tuning cache)",
            "cublas" => "cuBLAS (from the tuning cache)",
            "3xtf32-128-p" => "3xTF32 kernel, 128x128 tiles, sums in fp32 every 8 of K (from the tuning cache)",
            "3xtf32-64-k2-p" => {
                "3xTF32 kernel, 64x64 tiles, K in 2 slices, sums in fp32 every 8 of K (from the tuning cache)"
            }
            // not the order `code` writes: named no way, timed again
            _ => "(timed: cuBLAS ",
        };
        assert!(line.contains(way), "{}: {line}", codes[i % codes.len()]);
    }
}

/// `analyze receptive-field`, `effective-dim` and `prune` with `--device cuda` give the CPU's
/// measurements of the same saved run, to rounding (the run trained on the CPU).
#[test]
fn analyses_match_the_cpu() {
    let test = "analyses_match_the_cpu";
    let Some(target) = target(test) else { return };
    let _route = route_shared();
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| -> Option<()> {
        let mut cmd = cnnlab_command(test, target, dir.path())?;
        cmd.args(args).arg("--quiet");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Some(())
    };
    if cli(&["train", "--model", "cnn", "--steps", "300", "--save", "run"]).is_none() {
        return;
    }
    let json = |path: String| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(&path)).unwrap_or_else(|e| panic!("{path}: {e}")))
            .unwrap()
    };
    let close = |what: &str, g: f64, c: f64, tol: f64| {
        assert!((g - c).abs() <= tol * c.abs().max(1.0), "{what}: cuda {g} vs cpu {c}");
    };
    for device in ["cpu", "cuda"] {
        let out = format!("rf-{device}");
        cli(&["analyze", "receptive-field", "--run", "run", "--examples", "32", "--out", &out, "--device", device]);
        let out = format!("ed-{device}");
        let args = ["--examples", "200", "--samples", "3000", "--out", &out, "--device", device];
        cli(&[&["analyze", "effective-dim", "--run", "run"][..], &args].concat());
        let out = format!("prune-{device}");
        let args = ["--sparsities", "0.5,0.9", "--fine-tune-steps", "30", "--rounds", "2", "--lottery-steps", "60"];
        cli(&[&["analyze", "prune", "--run", "run", "--out", &out, "--device", device][..], &args].concat());
    }
    for f in ["rf-cuda/receptive_field", "ed-cuda/effective_dim", "prune-cuda/prune"] {
        assert_eq!(json(format!("{f}.provenance.json"))["device"], "cuda:0", "{f} ran on the GPU");
    }
    // receptive fields: each block's gradient map and what is read off it
    let (g, c) = (json("rf-cuda/receptive_field.json".into()), json("rf-cpu/receptive_field.json".into()));
    let (gl, cl) = (g["layers"].as_array().unwrap(), c["layers"].as_array().unwrap());
    assert_eq!(gl.len(), 3, "{g}");
    assert_eq!(gl.len(), cl.len());
    for (gl, cl) in gl.iter().zip(cl) {
        assert_eq!(gl["effective_size_90"], cl["effective_size_90"], "{gl}");
        close("rms radius", gl["rms_radius"].as_f64().unwrap(), cl["rms_radius"].as_f64().unwrap(), 1e-4);
        close(
            "mass inside",
            gl["mass_inside_theory"].as_f64().unwrap(),
            cl["mass_inside_theory"].as_f64().unwrap(),
            1e-5,
        );
        for (a, b) in gl["map"].as_array().unwrap().iter().zip(cl["map"].as_array().unwrap()) {
            close("map", a.as_f64().unwrap(), b.as_f64().unwrap(), 1e-4);
        }
    }
    // effective dimensions: the spectra of what each layer reads, and the zeros of each ReLU
    let (g, c) = (json("ed-cuda/effective_dim.json".into()), json("ed-cpu/effective_dim.json".into()));
    assert_eq!(g["raw_patches"], c["raw_patches"], "the input's spectra are the CPU's own");
    assert_eq!(g["layers"].as_array().unwrap().len(), 4, "{g}");
    for (gl, cl) in g["layers"].as_array().unwrap().iter().zip(c["layers"].as_array().unwrap()) {
        let (gs, cs) = (&gl["spectrum"], &cl["spectrum"]);
        close(
            "participation ratio",
            gs["participation_ratio"].as_f64().unwrap(),
            cs["participation_ratio"].as_f64().unwrap(),
            1e-3,
        );
        for k in ["components_90", "components_99"] {
            let (a, b) = (gs[k].as_i64().unwrap(), cs[k].as_i64().unwrap());
            assert!((a - b).abs() <= 1, "{k}: cuda {a} vs cpu {b} (a count at a threshold may move by one)");
        }
        close("zeros read", gl["zero_fraction"].as_f64().unwrap(), cl["zero_fraction"].as_f64().unwrap(), 1e-3);
    }
    for (gs, cs) in g["nonlinearities"].as_array().unwrap().iter().zip(c["nonlinearities"].as_array().unwrap()) {
        close("zero outputs", gs["zero_fraction"].as_f64().unwrap(), cs["zero_fraction"].as_f64().unwrap(), 1e-3);
    }
    // pruning: one-shot curves and lottery rounds train on the device
    let (g, c) = (json("prune-cuda/prune.json".into()), json("prune-cpu/prune.json".into()));
    let accuracies = |v: &serde_json::Value| -> Vec<f64> {
        let mut out = Vec::new();
        collect_accuracies(v, &mut out);
        out
    };
    let (ga, ca) = (accuracies(&g), accuracies(&c));
    assert!(ca.len() >= 6, "{c}");
    assert_eq!(ga.len(), ca.len());
    for (a, b) in ga.iter().zip(&ca) {
        assert!((a - b).abs() <= 0.01, "pruned accuracy cuda {a} vs cpu {b}");
    }
}

/// Every number under a key that names an accuracy, in document order.
fn collect_accuracies(v: &serde_json::Value, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x.as_f64() {
                    Some(a) if k.contains("accuracy") || k == "fine_tuned" => out.push(a),
                    _ => collect_accuracies(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_accuracies(x, out)),
        _ => {}
    }
}

/// `CNNLAB_CONV_TOLERANCE` sets how far a timed convolution may round from im2col + cuBLAS:
/// by default the emulator's FFT (whose made-up error is a thousand times an fp32 sum's
/// rounding) is left out; with a factor of a million it is timed into the choice. A bad value
/// is one line when the device opens, not a panic or a silent default.
#[test]
fn the_convolution_tolerance_is_set_by_its_variable() {
    let test = "the_convolution_tolerance_is_set_by_its_variable";
    let Some(target) = target(test) else { return };
    let _route = route_shared();
    let dir = tempfile::tempdir().unwrap();
    let train = |tolerance: Option<&str>, name: &str| -> Option<std::process::Output> {
        let mut cmd = cnnlab_command(test, target, dir.path())?;
        cmd.args(["reproduce", "--models", "cnn", "--conditions", "original", "--seeds", "1", "--steps", "2"]);
        cmd.args(["--eval-every", "2", "--quiet", "--device", "cuda", "--run-dir", name]);
        // the emulator's FFT and Winograd are what this test is about
        cmd.env("CNNLAB_TUNE_CACHE", "0").env_remove("CNNLAB_CUDNN_TRANSFORMS");
        if let Some(t) = tolerance {
            cmd.env("CNNLAB_CONV_TOLERANCE", t);
        }
        Some(cmd.output().unwrap())
    };
    let Some(out) = train(Some("lots"), "bad") else { return };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("CNNLAB_CONV_TOLERANCE=\"lots\""), "{err}");
    if *target == Target::Gpu {
        return skip(test, "the rest checks the emulator's made-up FFT error (a GPU's is its own)");
    }
    // the choices each run recorded, with their timings and differences
    let choices = |tolerance: Option<&str>, name: &str| -> String {
        let out = train(tolerance, name).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(name).join("provenance.json")).unwrap()).unwrap();
        let lines = record["backend_choices"].as_array().cloned().unwrap_or_default();
        lines.iter().filter_map(|l| l.as_str()).collect::<Vec<_>>().join("\n")
    };
    let default = choices(None, "default");
    if !default.contains("(timed: ") {
        return skip(test, "no tuned choices: libcudnn was not loaded");
    }
    assert!(default.contains("FFT") && default.contains(": left out)"), "{default}");
    let wide = choices(Some("1000000"), "wide");
    assert!(wide.contains("FFT") && !wide.contains("left out"), "{wide}");
}
