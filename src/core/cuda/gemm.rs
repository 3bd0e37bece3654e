//! GEMMs: cuBLAS's, or in strict fp32 on GPUs with TF32 tensor cores (compute capability 8.0
//! and newer) the 3xTF32 kernels of `kernels/gemm.cu`, which split each fp32 operand into two
//! TF32 values in registers and round like an fp32 GEMM give or take a small factor.
//!
//! Which one runs is the [`GemmRoute`]'s (`CNNLAB_GEMM`): by default ([`GemmRoute::Tune`])
//! each GEMM shape (sizes, operand layouts, batch) is timed once, cuBLAS against the kernel's
//! two tile sizes (and each with K in slices where C's tiles leave the GPU idle: split-K), on
//! the call's own operands into scratch, and each kernel's result is
//! compared with cuBLAS's as the convolution tuner compares its ways (`tuning.rs`: the same
//! tolerance, margin and tuning cache). A kernel replaces cuBLAS only where it agrees and takes
//! under [`MARGIN`] of its time; with `--tf32` cuBLAS always runs (on its own TF32 tensor cores).

use super::tuning::{self, deviation, eligible, pick_timed, read_prefix, time, tolerance, MARGIN};
use super::{check, device, failed, i, tune_cache, u, CudaBuf, Local, K};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

/// How the GPU runs fp32 GEMMs (`CNNLAB_GEMM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmRoute {
    /// cuBLAS's fp32 GEMM always.
    Cublas,
    /// The 3xTF32 kernel with 128×128 tiles, uncompared, wherever the GPU and shape allow:
    /// for tests and for measuring it.
    Split,
    /// The same with 64×64 tiles.
    Split64,
    /// 128×128 tiles with K cut into up to four slices (split-K), uncompared: for tests.
    SplitK,
    /// 64×64 tiles with each 8 of K summed apart (promoted sums), uncompared: for tests.
    SplitPromoted,
    /// Timed and compared per shape (the default).
    Tune,
}

impl GemmRoute {
    /// Every route, in the order of their discriminants.
    pub const ALL: [GemmRoute; 6] = [
        GemmRoute::Cublas,
        GemmRoute::Split,
        GemmRoute::Split64,
        GemmRoute::SplitK,
        GemmRoute::SplitPromoted,
        GemmRoute::Tune,
    ];

    /// The route `CNNLAB_GEMM` names (unset: [`GemmRoute::Tune`]).
    pub fn from_env() -> Result<GemmRoute> {
        match std::env::var("CNNLAB_GEMM") {
            Err(_) => Ok(GemmRoute::Tune),
            Ok(v) => v.parse(),
        }
    }
}

impl std::str::FromStr for GemmRoute {
    type Err = Error;
    fn from_str(s: &str) -> Result<GemmRoute> {
        match s {
            "cublas" => Ok(GemmRoute::Cublas),
            "split" => Ok(GemmRoute::Split),
            "split64" => Ok(GemmRoute::Split64),
            "splitk" => Ok(GemmRoute::SplitK),
            "splitp" => Ok(GemmRoute::SplitPromoted),
            "tune" => Ok(GemmRoute::Tune),
            other => Err(Error::Device(format!(
                "CNNLAB_GEMM={other:?} names no GEMM route: use cublas, split, split64, splitk or splitp (the \
                 3xTF32 kernel with 128x128 or 64x64 tiles, with K in slices, or with promoted sums) or tune \
                 (timed per shape, the default)"
            ))),
        }
    }
}

static ROUTE: AtomicU8 = AtomicU8::new(GemmRoute::Tune as u8);

/// Sets the process's route (from `CNNLAB_GEMM` when the device opens; tests switch it).
pub(crate) fn set_route(route: GemmRoute) {
    ROUTE.store(route as u8, Ordering::Relaxed);
}

pub(crate) fn route() -> GemmRoute {
    GemmRoute::ALL[ROUTE.load(Ordering::Relaxed) as usize % GemmRoute::ALL.len()]
}

/// Strides between the matrices of a batched GEMM (in values).
#[derive(Clone, Copy)]
pub(crate) struct Batch {
    pub count: usize,
    pub a: usize,
    pub b: usize,
    pub c: usize,
}

/// One GEMM's operands, as `Backend::matmul` gives them: row-major `C = A·B (+ C)`, A(i, k)
/// at `a.0 + 4·(i·a.1 + k·a.2)`, B(k, j) at `b.0 + 4·(k·b.1 + j·b.2)`, C(i, j) at
/// `c.0 + 4·(i·c.1 + j)`; one stride of A and of B is 1.
#[derive(Clone, Copy)]
pub(crate) struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: (u64, usize, usize),
    pub b: (u64, usize, usize),
    pub c: (u64, usize),
    pub accumulate: bool,
    pub batch: Option<Batch>,
}

/// The ways a GEMM runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    Cublas,
    /// The 3xTF32 kernel with `tile`×`tile` tiles of C a block (128 or 64), K cut into `slices`
    /// whose partial sums are added after (split-K; 1: not cut); `promoted`: each 8 of K summed
    /// on its own and added to C's sums in fp32 (see `kernels/gemm.cu`).
    Split {
        tile: usize,
        slices: usize,
        promoted: bool,
    },
}

impl Way {
    /// `3xtf32-TILE`, then `-kSLICES` for split-K and `-p` for promoted sums.
    fn code(self) -> String {
        match self {
            Way::Cublas => "cublas".into(),
            Way::Split { tile, slices, promoted } => {
                let k = if slices > 1 { format!("-k{slices}") } else { String::new() };
                format!("3xtf32-{tile}{k}{}", if promoted { "-p" } else { "" })
            }
        }
    }

    fn parse(code: &str) -> Option<Way> {
        if code == "cublas" {
            return Some(Way::Cublas);
        }
        let mut parts = code.strip_prefix("3xtf32-")?.split('-');
        let tile: usize = parts.next()?.parse().ok()?;
        let (mut slices, mut promoted) = (1, false);
        for part in parts {
            match part.strip_prefix('k') {
                Some(n) if slices == 1 && !promoted => slices = n.parse().ok()?,
                None if part == "p" && !promoted => promoted = true,
                _ => return None,
            }
        }
        ((tile == 128 || tile == 64) && (1..=MAX_SLICES).contains(&slices)).then_some(Way::Split {
            tile,
            slices,
            promoted,
        })
    }
}

impl std::fmt::Display for Way {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Way::Split { tile, slices, promoted } = *self else { return f.write_str("cuBLAS") };
        write!(f, "3xTF32 kernel, {tile}x{tile} tiles")?;
        if slices > 1 {
            write!(f, ", K in {slices} slices")?;
        }
        if promoted {
            f.write_str(", sums in fp32 every 8 of K")?;
        }
        Ok(())
    }
}

/// The most slices of K a split-K way cuts (its partial sums take `slices` times C's memory).
const MAX_SLICES: usize = 32;

/// How many slices of K the tuner tries for `g` with `tile`-sized tiles: enough to give each
/// multiprocessor two blocks where C's tiles alone leave them idle, each slice at least 64 of K
/// (four steps of the kernel); 1 (no split-K way) where C's tiles fill the GPU or K is short.
fn slices_to_fill(g: &Gemm, tile: usize, multiprocessors: usize) -> usize {
    let count = g.batch.map_or(1, |b| b.count);
    fill(g.m.div_ceil(tile) * g.n.div_ceil(tile) * count, g.k, count, multiprocessors)
}

/// [`slices_to_fill`]'s rule for `blocks` blocks of a batch of `count` matrices summing `k` terms.
fn fill(blocks: usize, k: usize, count: usize, multiprocessors: usize) -> usize {
    if blocks >= multiprocessors {
        return 1;
    }
    let wanted = (2 * multiprocessors).div_ceil(blocks);
    wanted.min(k / 64).min(MAX_SLICES).min(65535 / count).max(1)
}

/// [`slices_to_fill`] for an `m`×`n` output of sums of `k` terms in tiles of `bm`×`bn`, on this
/// GPU (the implicit-GEMM filter gradient's, `window.rs`).
pub(crate) fn slices_for(m: usize, n: usize, k: usize, (bm, bn): (usize, usize)) -> usize {
    fill(m.div_ceil(bm) * n.div_ceil(bn), k, 1, device().multiprocessors)
}

/// What decides a GEMM's way: its sizes, whether A and B are contiguous along K, and the
/// batch's size.
pub(crate) type Shape = (usize, usize, usize, bool, bool, usize);

fn shape(g: &Gemm) -> Shape {
    (g.m, g.n, g.k, g.a.2 == 1, g.b.1 == 1, g.batch.map_or(1, |b| b.count))
}

/// What was chosen for a shape, with the timings it was chosen by.
struct Chosen {
    way: Way,
    /// (way, milliseconds (NaN: failed), deviation from cuBLAS's result)
    timings: Vec<(Way, f32, Option<f64>)>,
    cached: bool,
}

static CHOICES: LazyLock<Mutex<HashMap<Shape, Chosen>>> = LazyLock::new(Default::default);

fn choices() -> MutexGuard<'static, HashMap<Shape, Chosen>> {
    CHOICES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the 3xTF32 kernels can run `g` at all: strict fp32 on compute capability 8.0 or
/// newer, offsets within each matrix under 2³¹ (the kernels index in 32 bits), a grid in the
/// launch limits.
fn kernel_fits(g: &Gemm) -> bool {
    let dev = device();
    let span = |rows: usize, cols: usize, s_row: usize, s_col: usize| {
        rows.saturating_sub(1).saturating_mul(s_row).saturating_add(cols.saturating_sub(1).saturating_mul(s_col))
    };
    let limit = i32::MAX as usize;
    dev.split_tf32()
        && g.m.max(g.n).max(g.k) < limit
        && [g.a.1, g.a.2, g.b.1, g.b.2, g.c.1].iter().all(|&s| s < limit)
        && span(g.m, g.k, g.a.1, g.a.2) < limit
        && span(g.k, g.n, g.b.1, g.b.2) < limit
        && span(g.m, g.n, g.c.1, 1) < limit
        && g.m.div_ceil(64) <= 65535
        && g.batch.is_none_or(|b| b.count <= 65535)
}

/// Row-major `C = A·B (+ C)` (see [`Gemm`] for the operands: address, row stride, column
/// stride), `batch` matrices at once where given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    l: &mut Local,
    m: usize,
    n: usize,
    k: usize,
    a: (u64, usize, usize),
    b: (u64, usize, usize),
    c: (u64, usize),
    accumulate: bool,
    batch: Option<Batch>,
) {
    run_gemm(l, &Gemm { m, n, k, a, b, c, accumulate, batch });
}

/// Runs `g` (the route's way, timed first where it is tuned).
fn run_gemm(l: &mut Local, g: &Gemm) {
    if g.m == 0 || g.n == 0 || failed() {
        return;
    }
    let way = match route() {
        GemmRoute::Cublas => Way::Cublas,
        _ if !kernel_fits(g) => Way::Cublas,
        GemmRoute::Split => Way::Split { tile: 128, slices: 1, promoted: false },
        GemmRoute::Split64 => Way::Split { tile: 64, slices: 1, promoted: false },
        // every K step its own slice, up to 4: for the tests of the partial sums
        GemmRoute::SplitK => Way::Split { tile: 128, slices: g.k.div_ceil(16).clamp(1, 4), promoted: false },
        GemmRoute::SplitPromoted => Way::Split { tile: 64, slices: 1, promoted: true },
        // this thread's memo first: the process's choices are behind a lock
        GemmRoute::Tune => {
            let key = shape(g);
            match l.gemm_ways.get(&key) {
                Some(&way) => way,
                None => {
                    let way = tuned(l, g);
                    if !failed() {
                        l.gemm_ways.insert(key, way);
                    }
                    way
                }
            }
        }
    };
    run(l, g, way);
}

fn run(l: &mut Local, g: &Gemm, way: Way) {
    match way {
        Way::Cublas => cublas(l, g),
        Way::Split { tile, slices, promoted } => split(l, g, tile, slices, promoted),
    }
}

/// The 3xTF32 kernel; K = 0 leaves C unchanged or zero, as cuBLAS. Split-K writes its partial
/// sums to the thread's scratch and adds them into C in a second launch.
fn split(l: &mut Local, g: &Gemm, tile: usize, slices: usize, promoted: bool) {
    let count = g.batch.map_or(1, |b| b.count);
    let per = g.m * g.n;
    // one slice where more would pass the grid's 65,535 layers or a launch's 2³¹ values (a
    // cached choice for another GPU could ask it; the sum is the same)
    let slices = if count * slices > 65535 || count * slices * per >= 1 << 31 { 1 } else { slices };
    let (sa, sb, sc) = g.batch.map_or((0, 0, 0), |b| (b.a, b.b, b.c));
    let kernel = match (tile, promoted) {
        (64, false) => K::gemm_split_64,
        (64, true) => K::gemm_split_64_promoted,
        (_, false) => K::gemm_split_128,
        (_, true) => K::gemm_split_128_promoted,
    };
    let grid = (g.n.div_ceil(tile) as u32, g.m.div_ceil(tile) as u32, (count * slices) as u32);
    // each slice a whole number of the kernel's 16-deep steps
    let slice_k = g.k.div_ceil(slices).next_multiple_of(16).max(16);
    let (c, ldc, stride_c, accumulate) = if slices == 1 {
        (g.c.0, g.c.1, sc, g.accumulate)
    } else {
        let partials = l.partials(count * slices * per);
        if partials == 0 {
            return; // the allocation failed, and the run ends with that failure
        }
        (partials, g.n, per, false)
    };
    let args = [
        i(g.m as i32),
        i(g.n as i32),
        i(g.k as i32),
        g.a.0,
        i(g.a.1 as i32),
        i(g.a.2 as i32),
        g.b.0,
        i(g.b.1 as i32),
        i(g.b.2 as i32),
        c,
        i(ldc as i32),
        u(sa),
        u(sb),
        u(stride_c),
        i(accumulate as i32),
        i(slices as i32),
        i(slice_k as i32),
    ];
    l.launch(kernel, grid, (256, 1, 1), &args);
    if slices > 1 {
        sum_slices(l, c, slices, (g.m, g.n), (g.c.0, g.c.1, sc), count, g.accumulate);
    }
}

/// C = the sum of split-K partial sums (+ C), added in a fixed order (`gemm_sum_slices`):
/// `partials` holds `slices` contiguous `m`×`n` matrices for each of the `count` matrices of C,
/// which start `c.2` values apart at `c.0` with rows `c.1` apart. Also the implicit-GEMM filter
/// gradient's (`window.rs`).
pub(crate) fn sum_slices(
    l: &Local,
    partials: u64,
    slices: usize,
    (m, n): (usize, usize),
    c: (u64, usize, usize),
    count: usize,
    accumulate: bool,
) {
    let args = [
        partials,
        i(slices as i32),
        i(m as i32),
        i(n as i32),
        c.0,
        i(c.1 as i32),
        u(c.2),
        u(count),
        i(accumulate as i32),
    ];
    l.launch_n(K::gemm_sum_slices, count * m * n, &args);
}

/// Row-major `C = A·B (+ C)` through column-major cuBLAS: `Cᵀ = Bᵀ·Aᵀ`.
fn cublas(l: &Local, g: &Gemm) {
    use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
    let (m, n, k, a, b, c) = (g.m, g.n, g.k, g.a, g.b, g.c);
    // cuBLAS takes each operand with one unit stride (every op's views have one); another is
    // the thread's failure, which ends its run with an error, not a panic
    if (b.2 != 1 && b.1 != 1) || (a.2 != 1 && a.1 != 1) {
        check::<(), _>(Err("an operand with no unit stride"), "cuBLAS sgemm");
        return;
    }
    let beta: f32 = if g.accumulate { 1.0 } else { 0.0 };
    let alpha: f32 = 1.0;
    // first cuBLAS operand: our B as an n×k column-major matrix (leading dimensions at least
    // 1, which cuBLAS asks even where K is 0)
    let (op_b, ld_b) = if b.2 == 1 { (CUBLAS_OP_N, b.1.max(n)) } else { (CUBLAS_OP_T, b.2.max(k).max(1)) };
    // second: our A as a k×m column-major matrix
    let (op_a, ld_a) = if a.2 == 1 { (CUBLAS_OP_N, a.1.max(k).max(1)) } else { (CUBLAS_OP_T, a.2.max(m)) };
    let ld_c = c.1.max(n);
    let h = *l.blas.handle();
    let (mi, ni, ki) = (n as i32, m as i32, k as i32);
    // k == 0: C = 0 (or unchanged) — cuBLAS scales C by beta when k is 0
    // SAFETY: the operands are live device allocations of the sizes the strides give (the
    // caller's views), on this thread's handle and stream
    let r = unsafe {
        match g.batch {
            None => cudarc::cublas::result::sgemm(
                h,
                op_b,
                op_a,
                mi,
                ni,
                ki,
                &alpha,
                b.0 as *const f32,
                ld_b as i32,
                a.0 as *const f32,
                ld_a as i32,
                &beta,
                c.0 as *mut f32,
                ld_c as i32,
            ),
            Some(bt) => cudarc::cublas::result::sgemm_strided_batched(
                h,
                op_b,
                op_a,
                mi,
                ni,
                ki,
                &alpha,
                b.0 as *const f32,
                ld_b as i32,
                bt.b as i64,
                a.0 as *const f32,
                ld_a as i32,
                bt.a as i64,
                &beta,
                c.0 as *mut f32,
                ld_c as i32,
                bt.c as i64,
                bt.count as i32,
            ),
        }
    };
    check(r, "cuBLAS sgemm");
}

/// The tuning cache's key for a shape.
fn cache_key(s: &Shape) -> String {
    let (m, n, k, a_k, b_k, count) = *s;
    let layout = |k_unit: bool| if k_unit { "K" } else { "MN" };
    format!(
        "{} | GEMM {m}x{n}x{k}, A along {}, B along {}, batch {count} | fp32",
        device().name,
        layout(a_k),
        layout(b_k)
    )
}

/// The way this shape runs: chosen once per process (the other threads wait for it), from the
/// tuning cache where it holds the shape, else by timing cuBLAS and the kernels into scratch
/// (C written, not added to) and comparing the kernels' results with cuBLAS's.
fn tuned(l: &mut Local, g: &Gemm) -> Way {
    let key = shape(g);
    let mut all = choices();
    if let Some(c) = all.get(&key) {
        return c.way;
    }
    let cache_key = cache_key(&key);
    let count = g.batch.map_or(1, |b| b.count);
    if let Some(way) = tune_cache::lookup(&cache_key).and_then(|v| Way::parse(&v)) {
        all.insert(key, Chosen { way, timings: Vec::new(), cached: true });
        return way;
    }
    // scratch for C, contiguous; a shape whose C does not fit runs on cuBLAS, untimed
    let mut out = CudaBuf::empty(l.raw_stream());
    let values = g.m * g.n * count;
    if !out.try_reserve(values, l.raw_stream()) {
        all.insert(key, Chosen { way: Way::Cublas, timings: Vec::new(), cached: false });
        return Way::Cublas;
    }
    let mut into = *g;
    into.c = (out.ptr, g.n);
    into.accumulate = false;
    into.batch = g.batch.map(|b| Batch { c: g.m * g.n, ..b });
    let tolerance = tolerance(false, g.k);
    let mut reference: Option<Vec<f32>> = None;
    let mut timings = Vec::new();
    let mut ways = vec![Way::Cublas];
    for tile in [128, 64] {
        let fill = slices_to_fill(g, tile, device().multiprocessors);
        for slices in if fill > 1 { vec![1, fill] } else { vec![1] } {
            for promoted in [false, true] {
                ways.push(Way::Split { tile, slices, promoted });
            }
        }
    }
    for way in ways {
        // a split-K way whose partial sums do not fit is left out (NaN), not the run's failure
        if let Way::Split { slices, .. } = way {
            if slices > 1 && !l.try_partials(values * slices) {
                timings.push((way, f32::NAN, None));
                continue;
            }
        }
        tuning::poison(l, (out.ptr, values));
        let ms = time(l, &mut |l| {
            run(l, &into, way);
            Ok(())
        })
        .unwrap_or(f32::NAN);
        let mut dev = None;
        if ms.is_finite() {
            let result = read_prefix(l, (out.ptr, values));
            match way {
                Way::Cublas => (reference, dev) = (result, Some(0.0)),
                _ => dev = reference.as_deref().zip(result.as_deref()).map(|(r, y)| deviation(r, y)),
            }
        }
        timings.push((way, ms, dev));
    }
    drop(out);
    if failed() {
        return Way::Cublas; // the run ends with the failure; nothing is kept
    }
    let eligible: Vec<(Way, f32)> =
        timings.iter().map(|&(w, ms, d)| (w, if eligible(ms, d, tolerance, true) { ms } else { f32::NAN })).collect();
    let way = pick_timed(Way::Cublas, &eligible);
    // a cache that cannot be written is not the run's failure: the choice holds for this process
    let _ = tune_cache::store(&cache_key, &way.code());
    all.insert(key, Chosen { way, timings, cached: false });
    way
}

/// The GEMM choices so far, one line per shape, with the timings where they were timed (for
/// `--profile` and the provenance).
pub(crate) fn describe() -> Vec<String> {
    let mut out: Vec<String> = choices()
        .iter()
        .map(|(&(m, n, k, a_k, b_k, count), c)| {
            let layout = |k_unit: bool| if k_unit { "K" } else { "M/N" };
            let mut line = format!(
                "GEMM {m}x{n}x{k} (A along {}, B along {}), batch {count}: {}",
                layout(a_k),
                layout(b_k),
                c.way
            );
            if c.cached {
                line += " (from the tuning cache)";
            }
            if !c.timings.is_empty() {
                // the bound the kernels were held to (a shape's K gives it)
                let tolerance = tolerance(false, k);
                let t: Vec<String> = c
                    .timings
                    .iter()
                    .map(|&(w, ms, d)| match d {
                        _ if ms.is_nan() => format!("{w} failed"),
                        Some(d) if w != Way::Cublas && d > tolerance => {
                            format!("{w} {ms:.3} ms (off by {d:.1e}, over {tolerance:.1e}: left out)")
                        }
                        Some(d) if w != Way::Cublas => format!("{w} {ms:.3} ms (off by {d:.1e})"),
                        _ => format!("{w} {ms:.3} ms"),
                    })
                    .collect();
                line += &format!(" (timed: {})", t.join(", "));
            }
            line
        })
        .collect();
    out.sort();
    out
}

/// How this process runs fp32 GEMMs, for `cnnlab devices` and the provenance.
pub(crate) fn describe_route(route: GemmRoute, tf32: bool, arch: Option<(i32, i32)>) -> String {
    if tf32 {
        return "GEMMs: cuBLAS on TF32 tensor cores (--tf32)".into();
    }
    if arch.is_some_and(|a| a < (8, 0)) {
        return "GEMMs: cuBLAS (no TF32 tensor cores on this GPU for the 3xTF32 kernels)".into();
    }
    match route {
        GemmRoute::Cublas => "GEMMs: cuBLAS (CNNLAB_GEMM=cublas)".into(),
        GemmRoute::Split => "GEMMs: the 3xTF32 kernel with 128x128 tiles, uncompared (CNNLAB_GEMM=split)".into(),
        GemmRoute::Split64 => "GEMMs: the 3xTF32 kernel with 64x64 tiles, uncompared (CNNLAB_GEMM=split64)".into(),
        GemmRoute::SplitK => {
            "GEMMs: the 3xTF32 kernel with K in up to four slices, uncompared (CNNLAB_GEMM=splitk)".into()
        }
        GemmRoute::SplitPromoted => {
            "GEMMs: the 3xTF32 kernel with fp32 sums every 8 of K, uncompared (CNNLAB_GEMM=splitp)".into()
        }
        GemmRoute::Tune => format!(
            "GEMMs: each shape timed once, cuBLAS against the 3xTF32 kernels (fp32 split into two TF32 values on \
             tensor cores), each kernel's result compared with cuBLAS's; a kernel replaces cuBLAS where it takes \
             under {MARGIN} of its time (CNNLAB_GEMM=cublas, split, split64, splitk or splitp fixes the route)"
        ),
    }
}
