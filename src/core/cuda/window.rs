//! Sliding windows and layout shuffles on the GPU (mirrors `core/ops/{conv2d,
//! locally_connected,pool,global_avg_pool,patchify,transpose}.rs`): convolution as im2col
//! and one GEMM over the whole batch, as cnnlab's implicit GEMMs (`kernels/conv_gemm.cu`) or
//! through cuDNN, whichever each shape and pass is timed fastest (`conv_tune.rs`); the
//! locally-connected layer as a GEMM batched over positions, pooling and the shuffles as
//! gather kernels.

use super::conv_tune::{self, Pass, Way};
use super::cudnn::{self, Layout, Split};
use super::{check, device, f, gemm, i, p, u, with_local, Batch, Cuda, CudaBuf, Local, K};
use crate::core::backend::BackendBase;
use crate::core::ops::conv2d::{Conv2dOps, WindowGeom};
use crate::core::ops::global_avg_pool::GlobalAvgPoolOps;
use crate::core::ops::locally_connected::LocallyConnectedOps;
use crate::core::ops::patchify::PatchifyOps;
use crate::core::ops::pool::{PoolKind, PoolOps};
use crate::core::ops::transpose::TransposeOps;
use crate::core::Mode;

/// The kernels' `Geom` struct (twelve ints, in this order).
fn geom_bytes(g: &WindowGeom) -> [u8; 48] {
    let v = [g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow];
    let mut out = [0u8; 48];
    for (o, x) in out.chunks_exact_mut(4).zip(v) {
        o.copy_from_slice(&(x as i32).to_le_bytes());
    }
    out
}

/// Images per launch so that one launch covers fewer than 2^31 values (the kernels index
/// in 32 bits).
fn images_per_launch(per_image: usize) -> usize {
    ((1usize << 31) / per_image.max(1)).max(1)
}

/// Threads for `values` values of an im2col or col2im launch: one per four channels where the
/// channels come in fours (the kernels' vector path; they fall back to one value a thread
/// where a pointer is not aligned, and their grid-stride loops cover the rest), else one a value.
fn window_threads(g: &WindowGeom, values: usize) -> usize {
    if g.c.is_multiple_of(4) {
        values.div_ceil(4)
    } else {
        values
    }
}

fn im2col(l: &Local, x: u64, g: &WindowGeom, cols: u64, img0: usize, imgs: usize) {
    let per_image = g.positions() * g.k();
    let step = images_per_launch(per_image);
    for i0 in (0..imgs).step_by(step) {
        let m = step.min(imgs - i0);
        let out = cols + 4 * (i0 * per_image) as u64;
        let args = [x, out, u(img0 + i0), u(m)];
        l.launch_n_bytes(K::im2col, window_threads(g, m * per_image), &args, &geom_bytes(g));
    }
}

fn col2im(l: &Local, cols: u64, g: &WindowGeom, dx: u64, img0: usize, imgs: usize) {
    let (per_image, img_len) = (g.positions() * g.k(), g.h * g.w * g.c);
    let step = images_per_launch(per_image.max(img_len));
    for i0 in (0..imgs).step_by(step) {
        let m = step.min(imgs - i0);
        let src = cols + 4 * (i0 * per_image) as u64;
        let args = [src, dx, u(img0 + i0), u(m)];
        l.launch_n_bytes(K::col2im, window_threads(g, m * img_len), &args, &geom_bytes(g));
    }
}

/// The implicit GEMM that computes `pass` (forward or input gradient) in
/// `kernels/conv_gemm.cu`: the geometry its A is gathered by (the image it reads and the
/// output positions, C's rows), C's columns, B's strides (along the taps, the channels summed
/// and C's columns) and whether B's taps run backwards. The input gradient of a stride-1
/// convolution is the forward convolution of `dy` padded by `kh − 1 − ph` with the filters
/// turned around: their taps reversed, input and output channels swapped.
fn implicit_gemm(g: &WindowGeom, cout: usize, pass: Pass) -> (WindowGeom, usize, [usize; 3], bool) {
    match pass {
        Pass::Data => {
            let (ph, pw) = ((g.kh - 1).saturating_sub(g.ph), (g.kw - 1).saturating_sub(g.pw));
            let from_dy = WindowGeom { h: g.oh, w: g.ow, c: cout, sh: 1, sw: 1, ph, pw, oh: g.h, ow: g.w, ..*g };
            (from_dy, g.c, [g.c, g.k(), 1], true)
        }
        _ => (*g, cout, [g.c, 1, g.k()], false),
    }
}

/// Whether the implicit-GEMM kernels can run `pass` of this convolution: strict fp32 on
/// compute capability 8.0 or newer (as the 3xTF32 GEMMs), and
/// - forward, and input gradient (which needs stride 1 and padding under the window): the
///   channels each tap sums a multiple of 16 (the input's forward, the output's for the input
///   gradient), every offset under 2³¹ and every coordinate under 2¹⁴ (the kernels' integers);
/// - filter gradient: both channel counts multiples of 4 (four values a load), the positions
///   and the filter's values under 2³¹.
pub(crate) fn implicit_fits(g: &WindowGeom, cout: usize, pass: Pass) -> bool {
    let dev = device();
    if !dev.split_tf32() || g.n == 0 || cout == 0 || g.positions() == 0 {
        return false;
    }
    let limit = i32::MAX as usize;
    let values = |dims: &[usize]| dims.iter().try_fold(1usize, |p, &d| p.checked_mul(d)).unwrap_or(usize::MAX);
    let shape_fits = match pass {
        Pass::Forward | Pass::Inference => true,
        Pass::Data => g.sh == 1 && g.sw == 1 && g.ph < g.kh && g.pw < g.kw,
        Pass::Filter => {
            // (C's rows, the output channels, tile the grid's y: at most 65,535 tiles of 64; the
            // kernel's positions and image coordinates are 32-bit, its offsets 64-bit)
            return g.c.is_multiple_of(4)
                && cout.is_multiple_of(4)
                && cout.div_ceil(64) <= 65535
                && values(&[g.n, g.oh, g.ow]) < limit
                && values(&[cout, g.k()]) < limit
                && [g.h, g.w, g.oh.saturating_mul(g.sh), g.ow.saturating_mul(g.sw)].iter().all(|&v| v < limit);
        }
    };
    let (a, n, _, _) = implicit_gemm(g, cout, pass);
    let coordinate = 1 << 14;
    // (C's columns tile the grid's y)
    shape_fits
        && n.div_ceil(64) <= 65535
        && a.c.is_multiple_of(16)
        && values(&[a.n, a.h, a.w, a.c]) < limit
        && values(&[a.n, a.oh, a.ow, n]) < limit
        && values(&[cout, g.k()]) < limit
        && [a.h, a.w, a.oh.saturating_mul(a.sh), a.ow.saturating_mul(a.sw), a.ph, a.pw, a.kh, a.kw]
            .iter()
            .all(|&v| v < coordinate)
}

/// cnnlab's kernels that can run `pass` of this convolution (see [`implicit_fits`]), for the
/// tuner to time beside im2col and cuDNN: the implicit GEMM with tiles of 128×128, 128×64 (C's
/// columns are 64 for a 64-channel input's gradient) and 64×64, each with the tensor core's own
/// sums and with promoted ones (none where `CNNLAB_CONV_IMPLICIT=0`). The first is the one
/// `CNNLAB_CUDNN=implicit` runs. A constant list: this runs for every convolution pass of every
/// training step, which allocates nothing.
fn own_ways(g: &WindowGeom, cout: usize, pass: Pass) -> &'static [Way] {
    const fn way(tile: (usize, usize), promoted: bool) -> Way {
        Way::Implicit { tile, promoted }
    }
    const OWN: [Way; 6] = [
        way((128, 128), false),
        way((128, 64), false),
        way((64, 64), false),
        way((128, 128), true),
        way((128, 64), true),
        way((64, 64), true),
    ];
    if conv_tune::implicit_allowed() && implicit_fits(g, cout, pass) {
        &OWN
    } else {
        &[]
    }
}

/// The kernels read four channels at once from 16-byte aligned tensors (every allocation is,
/// and the convolutions' tensors are whole allocations): an error, not a misread, where one
/// of `addresses` is not.
fn aligned(addresses: &[u64]) -> Result<(), String> {
    match addresses.iter().all(|a| a.is_multiple_of(16)) {
        true => Ok(()),
        false => Err("the implicit GEMM reads 16-byte aligned tensors only".into()),
    }
}

/// The kernel for `tile` (128×128, 128×64 or 64×64) among one family's, with the tensor core's
/// own sums (`own`) or promoted ones.
fn kernel_of(own: [K; 3], promoted_sums: [K; 3], (tile, promoted): ((usize, usize), bool)) -> K {
    let at = match tile {
        (64, _) => 2,
        (_, 64) => 1,
        _ => 0,
    };
    if promoted {
        promoted_sums[at]
    } else {
        own[at]
    }
}

/// `pass` (forward or input gradient) as an implicit GEMM with tiles of `tile` (rows, columns
/// of C), its sums `promoted` or not: `src` is the pass's image (`x`, or `dy`), `w` the
/// filters, `out` its output (`y`, or `dx`).
#[allow(clippy::too_many_arguments)]
fn implicit(
    l: &Local,
    (tile, promoted): ((usize, usize), bool),
    src: u64,
    w: u64,
    out: u64,
    g: &WindowGeom,
    cout: usize,
    pass: Pass,
) -> Result<(), String> {
    aligned(&[src])?;
    let (a, n, [b_tap, b_k, b_n], flip) = implicit_gemm(g, cout, pass);
    let rows = a.n * a.oh * a.ow;
    let kernel = kernel_of(
        [K::conv_split_128, K::conv_split_128x64, K::conv_split_64],
        [K::conv_split_128_promoted, K::conv_split_128x64_promoted, K::conv_split_64_promoted],
        (tile, promoted),
    );
    let grid = (rows.div_ceil(tile.0) as u32, n.div_ceil(tile.1) as u32, 1);
    let args = [src, w, i(b_tap as i32), i(b_k as i32), i(b_n as i32), i(flip as i32), out, i(n as i32)];
    l.launch_bytes(kernel, grid, (256, 1, 1), &args, &geom_bytes(&a));
    Ok(())
}

/// The filter gradient `dw` as an implicit GEMM with tiles of `tile` (rows, columns of `dw`),
/// its sums `promoted` or not (`conv_filter_*`): the batch's positions cut into slices where
/// `dw`'s tiles are too few to fill the GPU, their partial sums added in order by
/// `gemm_sum_slices`. An error where the partial sums' room could not be had (recorded, unless
/// the tuner is timing ways).
#[allow(clippy::too_many_arguments)]
fn implicit_filter(
    l: &mut Local,
    (tile, promoted): ((usize, usize), bool),
    x: u64,
    dy: u64,
    dw: u64,
    g: &WindowGeom,
    cout: usize,
) -> Result<(), String> {
    aligned(&[x, dy])?;
    let (k, rows) = (g.k(), g.n * g.positions());
    let per = cout * k;
    let mut slices = gemm::slices_for(cout, k, rows, tile);
    if slices * per >= 1 << 31 {
        slices = 1; // gemm_sum_slices indexes the partial sums in 32 bits
    }
    // each slice a whole number of the kernel's 16-position steps
    let slice_k = rows.div_ceil(slices).next_multiple_of(16);
    let slices = rows.div_ceil(slice_k).max(1);
    // while the tuner times ways, partial sums that do not fit leave this way out, unrecorded
    if slices > 1 && conv_tune::timing_ways() && !l.try_partials(slices * per) {
        return Err("no memory for the partial sums".into());
    }
    let c = match slices {
        1 => dw,
        _ => match l.partials(slices * per) {
            0 => return Err("no memory for the partial sums".into()),
            partials => partials,
        },
    };
    let kernel = kernel_of(
        [K::conv_filter_128, K::conv_filter_128x64, K::conv_filter_64],
        [K::conv_filter_128_promoted, K::conv_filter_128x64_promoted, K::conv_filter_64_promoted],
        (tile, promoted),
    );
    let grid = (k.div_ceil(tile.1) as u32, cout.div_ceil(tile.0) as u32, slices as u32);
    let args = [x, dy, c, i(cout as i32), i(slice_k as i32)];
    l.launch_bytes(kernel, grid, (256, 1, 1), &args, &geom_bytes(g));
    if slices > 1 {
        gemm::sum_slices(l, c, slices, (cout, k), (dw, k, 0), 1, false);
    }
    Ok(())
}

/// The way `pass` of this convolution runs — known (a fixed route, or timed before), else
/// timed now with `run`, which writes `out` (address, values), where each way's result is
/// compared with im2col's (see `conv_tune.rs`) — and, where it is im2col's forward or filter
/// gradient, the columns' scratch it writes. The scratch is grown for the timing; where
/// another way wins, the memory that only the timing needed is given back (an evaluation
/// batch of 1000 CIFAR images takes 2.4 GB of columns in a 64→128 layer).
fn way_for(
    g: &WindowGeom,
    cout: usize,
    pass: Pass,
    scratch: &mut CudaBuf,
    out: (u64, usize),
    run: &mut dyn FnMut(&mut Local, Way, u64) -> Result<(), String>,
) -> (Way, u64) {
    // im2col's input gradient needs no columns: it writes the columns' gradient to work2
    let columns_used = pass != Pass::Data;
    let own = own_ways(g, cout, pass);
    let way = match with_local(|l| conv_tune::known_way(l, g, cout, pass, own)) {
        Some(way) => way,
        None => {
            let before = scratch.len;
            let cols = if columns_used { columns(g, scratch) } else { 0 };
            let way = with_local(|l| conv_tune::tune(l, g, cout, pass, own, out, &mut |l, way| run(l, way, cols)));
            if way != Way::Im2col && scratch.len > before {
                // the grown part held columns only for the timing (nothing reads them later)
                with_local(|l| *scratch = CudaBuf::empty(l.raw_stream()));
                if before > 0 {
                    Cuda::resize(scratch, before);
                }
            }
            way
        }
    };
    let cols = if way == Way::Im2col && columns_used { columns(g, scratch) } else { 0 };
    (way, cols)
}

/// This thread's cuDNN (where the route chose one of its algorithms, it is loaded).
fn dnn(l: &mut Local) -> Result<&mut cudnn::Dnn, String> {
    l.dnn.as_mut().ok_or_else(|| "cuDNN is not loaded".into())
}

/// The im2col columns' scratch, grown to the shape's (rows × K) values; its address.
fn columns(g: &WindowGeom, scratch: &mut CudaBuf) -> u64 {
    let need = g.n * g.positions() * g.k();
    if scratch.len < need {
        Cuda::resize(scratch, need);
    }
    scratch.ptr
}

/// `y = conv(x, w)` (no bias) one way; im2col writes the columns to `cols`.
#[allow(clippy::too_many_arguments)]
fn forward_way(
    l: &mut Local,
    way: Way,
    x: u64,
    w: u64,
    g: &WindowGeom,
    cout: usize,
    cols: u64,
    y: u64,
) -> Result<(), String> {
    match way {
        Way::Im2col => {
            let (rows, k) = (g.n * g.positions(), g.k());
            im2col(l, x, g, cols, 0, g.n);
            gemm(l, rows, cout, k, (cols, k, 1), (w, 1, k), (y, cout), false, None);
            Ok(())
        }
        Way::Implicit { tile, promoted } => implicit(l, (tile, promoted), x, w, y, g, cout, Pass::Forward),
        Way::Cudnn(a) if a.layout == Layout::Nchw => {
            let [xt, yt, wt] = nchw_room(l, g, cout)?;
            transpose(l, x, xt, g.n, g.h * g.w, g.c);
            transpose(l, w, wt, cout, g.kh * g.kw, g.c);
            dnn(l)?.forward(&a, xt, wt, g, cout, yt, false)?;
            transpose(l, yt, y, g.n, cout, g.positions());
            Ok(())
        }
        Way::Cudnn(a) if a.split == Split::Passes => {
            let (xs, ws) = ((x, g.n * g.h * g.w * g.c), (w, cout * g.k()));
            in_three_passes(l, g, cout, xs, ws, |d, x, w, add| d.forward(&a, x, w, g, cout, y, add))
        }
        Way::Cudnn(a) if a.split == Split::Stacked => {
            // each pixel's channels [hi | lo | hi] against each filter's [hi | hi | lo]
            let x3 = ((x, g.n * g.h * g.w, g.c), 1);
            let w3 = ((w, cout * g.kh * g.kw, g.c), 2);
            let [xs, ws] = stack_split(l, g, cout, x3, w3)?;
            dnn(l)?.forward(&a, xs, ws, g, cout, y, false)
        }
        Way::Cudnn(a) => dnn(l)?.forward(&a, x, w, g, cout, y, false),
    }
}

/// A pass on `a` and `b` (address, values) in three TF32 passes (`cudnn::Split::Passes`):
/// each operand split into two TF32 values, hi + lo, in the thread's split room, then
/// `pass(dnn, a part, b part, add)` on lo·hi (overwriting), hi·lo and hi·hi (adding). An
/// error (the candidate is left out) where the room's allocation failed (recorded, unless the
/// tuner is timing ways: see `conv_tune::timing_ways`) or a pass failed.
fn in_three_passes(
    l: &mut Local,
    g: &WindowGeom,
    cout: usize,
    a: (u64, usize),
    b: (u64, usize),
    mut pass: impl FnMut(&mut cudnn::Dnn, u64, u64, bool) -> Result<(), String>,
) -> Result<(), String> {
    let base = dnn(l)?.split_room(g, cout)?;
    // each part 16-byte aligned, for the kernels' four-value loads and cuDNN's
    let (sa, sb) = (4 * a.1.next_multiple_of(4) as u64, 4 * b.1.next_multiple_of(4) as u64);
    let [ah, al, bh, bl] = [base, base + sa, base + 2 * sa, base + 2 * sa + sb];
    l.launch_n4(K::split_tf32, a.1, &[a.0, ah, al, u(a.1)]);
    l.launch_n4(K::split_tf32, b.1, &[b.0, bh, bl, u(b.1)]);
    let d = dnn(l)?;
    pass(d, al, bh, false)?;
    pass(d, ah, bl, true)?;
    pass(d, ah, bh, true)
}

/// An operand to stack (see `cudnn::Split::Stacked`): its address, rows and values a row, and
/// which of the three stacked copies of each row holds the lo values (the others hold hi).
type Stacking = ((u64, usize, usize), i32);

/// `a` and `b` split and stacked (the `split_tf32_stacked` kernel) in the thread's split
/// room: the stacked copies' addresses. An error as in [`in_three_passes`].
fn stack_split(l: &mut Local, g: &WindowGeom, cout: usize, a: Stacking, b: Stacking) -> Result<[u64; 2], String> {
    let base = dnn(l)?.split_room(g, cout)?;
    let len = |((_, rows, cols), _): Stacking| 3 * rows * cols;
    let at = [base, base + 4 * len(a).next_multiple_of(4) as u64];
    for (((src, rows, cols), lo), dst) in [a, b].into_iter().zip(at) {
        l.launch_n4(K::split_tf32_stacked, rows * cols, &[src, dst, u(rows), u(cols), i(lo)]);
    }
    Ok(at)
}

/// The NCHW copies' room (see [`Layout`]): the input's (or its gradient's), the output's (or
/// its gradient's) and the filter's addresses. An error (the candidate is left out) where a
/// copy's rows exceed the transpose kernel's grid, or the allocation failed (recorded, unless
/// the tuner is timing ways).
fn nchw_room(l: &mut Local, g: &WindowGeom, cout: usize) -> Result<[u64; 3], String> {
    let rows = [g.h * g.w, g.positions(), g.c, cout, g.kh * g.kw];
    if rows.iter().any(|&r| r.div_ceil(32) > 65535) {
        return Err("too large for the NCHW copies".into());
    }
    let base = dnn(l)?.relayout(g, cout)?;
    let (x, y) = ((g.n * g.h * g.w * g.c) as u64, (g.n * g.positions() * cout) as u64);
    Ok([base, base + 4 * x, base + 4 * (x + y)])
}

/// `dw = dyᵀ·cols` one way; im2col computes the columns first unless `cols` holds them.
#[allow(clippy::too_many_arguments)]
fn filter_way(
    l: &mut Local,
    way: Way,
    x: u64,
    dy: u64,
    g: &WindowGeom,
    cout: usize,
    cols: u64,
    cols_ready: bool,
    dw: u64,
) -> Result<(), String> {
    match way {
        Way::Im2col => {
            let (rows, k) = (g.n * g.positions(), g.k());
            if !cols_ready {
                im2col(l, x, g, cols, 0, g.n);
            }
            gemm(l, cout, k, rows, (dy, 1, cout), (cols, k, 1), (dw, k), false, None);
            Ok(())
        }
        Way::Cudnn(a) if a.layout == Layout::Nchw => {
            let [xt, dyt, dwt] = nchw_room(l, g, cout)?;
            transpose(l, x, xt, g.n, g.h * g.w, g.c);
            transpose(l, dy, dyt, g.n, g.positions(), cout);
            dnn(l)?.backward_filter(&a, xt, dyt, g, cout, dwt, false)?;
            transpose(l, dwt, dw, cout, g.c, g.kh * g.kw);
            Ok(())
        }
        Way::Cudnn(a) if a.split == Split::Passes => {
            let (xs, dys) = ((x, g.n * g.h * g.w * g.c), (dy, g.n * g.positions() * cout));
            in_three_passes(l, g, cout, xs, dys, |d, x, dy, add| d.backward_filter(&a, x, dy, g, cout, dw, add))
        }
        Way::Cudnn(a) if a.split == Split::Stacked => {
            // three batches: the images [lo; hi; hi] against the gradients [hi; lo; hi]
            let x3 = ((x, 1, g.n * g.h * g.w * g.c), 0);
            let dy3 = ((dy, 1, g.n * g.positions() * cout), 1);
            let [xs, dys] = stack_split(l, g, cout, x3, dy3)?;
            dnn(l)?.backward_filter(&a, xs, dys, g, cout, dw, false)
        }
        Way::Cudnn(a) => dnn(l)?.backward_filter(&a, x, dy, g, cout, dw, false),
        Way::Implicit { tile, promoted } => implicit_filter(l, (tile, promoted), x, dy, dw, g, cout),
    }
}

/// `dx = ∂L/∂x` one way (im2col: the columns' gradient `dy·W`, then folded back).
fn data_way(l: &mut Local, way: Way, w: u64, dy: u64, g: &WindowGeom, cout: usize, dx: u64) -> Result<(), String> {
    match way {
        Way::Im2col => {
            let (rows, k) = (g.n * g.positions(), g.k());
            let dcols = l.work2(rows * k * 4);
            gemm(l, rows, k, cout, (dy, cout, 1), (w, k, 1), (dcols, k), false, None);
            col2im(l, dcols, g, dx, 0, g.n);
            Ok(())
        }
        Way::Implicit { tile, promoted } => implicit(l, (tile, promoted), dy, w, dx, g, cout, Pass::Data),
        Way::Cudnn(a) if a.layout == Layout::Nchw => {
            let [dxt, dyt, wt] = nchw_room(l, g, cout)?;
            transpose(l, dy, dyt, g.n, g.positions(), cout);
            transpose(l, w, wt, cout, g.kh * g.kw, g.c);
            dnn(l)?.backward_data(&a, wt, dyt, g, cout, dxt, false)?;
            transpose(l, dxt, dx, g.n, g.c, g.h * g.w);
            Ok(())
        }
        Way::Cudnn(a) if a.split == Split::Passes => {
            let (ws, dys) = ((w, cout * g.k()), (dy, g.n * g.positions() * cout));
            in_three_passes(l, g, cout, ws, dys, |d, w, dy, add| d.backward_data(&a, w, dy, g, cout, dx, add))
        }
        Way::Cudnn(a) if a.split == Split::Stacked => {
            // three times the output channels: the filters [hi; lo; hi] against each
            // position's gradient [lo | hi | hi]
            let w3 = ((w, 1, cout * g.k()), 1);
            let dy3 = ((dy, g.n * g.positions(), cout), 0);
            let [ws, dys] = stack_split(l, g, cout, w3, dy3)?;
            dnn(l)?.backward_data(&a, ws, dys, g, cout, dx, false)
        }
        Way::Cudnn(a) => dnn(l)?.backward_data(&a, w, dy, g, cout, dx, false),
    }
}

impl Conv2dOps for Cuda {
    fn im2col(x: &CudaBuf, g: &WindowGeom, cols: &mut CudaBuf, img0: usize, imgs: usize) {
        with_local(|l| im2col(l, x.ptr, g, cols.ptr, img0, imgs));
    }

    fn col2im(cols: &CudaBuf, g: &WindowGeom, dx: &mut CudaBuf, img0: usize, imgs: usize) {
        with_local(|l| col2im(l, cols.ptr, g, dx.ptr, img0, imgs));
    }

    fn conv2d_forward(
        x: &CudaBuf,
        w: &CudaBuf,
        b: &CudaBuf,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut CudaBuf,
        y: &mut CudaBuf,
        mode: Mode,
    ) -> bool {
        let (rows, k) = (g.n * g.positions(), g.k());
        let (x, w, b, y) = (x.ptr, w.ptr, b.ptr, y.ptr);
        if g.is_pointwise() {
            // a 1x1 convolution is one GEMM as it is
            with_local(|l| {
                gemm(l, rows, cout, k, (x, k, 1), (w, 1, k), (y, cout), false, None);
                l.launch_n4(K::add_bias_rows, rows * cout, &[y, b, u(rows), u(cout)]);
            });
            return false;
        }
        let pass = if mode == Mode::Train { Pass::Forward } else { Pass::Inference };
        let mut run = |l: &mut Local, way, cols| forward_way(l, way, x, w, g, cout, cols, y);
        let (way, cols) = way_for(g, cout, pass, scratch, (y, rows * cout), &mut run);
        with_local(|l| {
            check(run(l, way, cols), "cuDNN convolution forward");
            l.launch_n4(K::add_bias_rows, rows * cout, &[y, b, u(rows), u(cout)]);
        });
        // im2col leaves the columns, which the filter gradient reads
        way == Way::Im2col
    }

    fn conv2d_backward(
        x: &CudaBuf,
        w: &CudaBuf,
        dy: &CudaBuf,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut CudaBuf,
        scratch_holds_cols: bool,
        dw: &mut CudaBuf,
        db: &mut CudaBuf,
        dx: Option<&mut CudaBuf>,
    ) {
        let (rows, k) = (g.n * g.positions(), g.k());
        let (x, w, dy, dw, db) = (x.ptr, w.ptr, dy.ptr, dw.ptr, db.ptr);
        let dx = dx.map(|d| d.ptr);
        if g.is_pointwise() {
            // dW = dyᵀ·x, db = Σ dy, dx = dy·W
            with_local(|l| {
                gemm(l, cout, k, rows, (dy, 1, cout), (x, k, 1), (dw, k), false, None);
                super::elementwise::sum_rows(l, dy, db, rows, cout);
                if let Some(dx) = dx {
                    gemm(l, rows, k, cout, (dy, cout, 1), (w, k, 1), (dx, k), false, None);
                }
            });
            return;
        }
        let mut filter = |l: &mut Local, way, cols| filter_way(l, way, x, dy, g, cout, cols, scratch_holds_cols, dw);
        let (way, cols) = way_for(g, cout, Pass::Filter, scratch, (dw, cout * k), &mut filter);
        with_local(|l| {
            check(filter(l, way, cols), "cuDNN convolution backward (filter)");
            super::elementwise::sum_rows(l, dy, db, rows, cout);
        });
        let Some(dx) = dx else { return };
        let mut data = |l: &mut Local, way, _cols| data_way(l, way, w, dy, g, cout, dx);
        let (way, _) = way_for(g, cout, Pass::Data, scratch, (dx, g.n * g.h * g.w * g.c), &mut data);
        with_local(|l| check(data(l, way, 0), "cuDNN convolution backward (data)"));
    }
}

impl LocallyConnectedOps for Cuda {
    fn lc_forward(
        cols: &CudaBuf,
        w: &CudaBuf,
        bias: &CudaBuf,
        y: &mut CudaBuf,
        n: usize,
        pos: usize,
        k: usize,
        cout: usize,
    ) {
        with_local(|l| {
            // Y_p = C_p·W_pᵀ for every position p in one batched GEMM, then the bias
            let batch = Batch { count: pos, a: k, b: cout * k, c: cout };
            gemm(l, n, cout, k, (cols.ptr, pos * k, 1), (w.ptr, 1, k), (y.ptr, pos * cout), false, Some(batch));
            l.launch_n4(K::add_bias_rows, n * pos * cout, &[y.ptr, bias.ptr, u(n), u(pos * cout)]);
        });
    }

    fn lc_backward(
        cols: &CudaBuf,
        w: &CudaBuf,
        dy: &CudaBuf,
        dw: &mut CudaBuf,
        db: &mut CudaBuf,
        dcols: Option<&mut CudaBuf>,
        n: usize,
        pos: usize,
        k: usize,
        cout: usize,
    ) {
        let dcols = dcols.map(|d| d.ptr);
        with_local(|l| {
            // dW_p = dY_pᵀ·C_p
            let batch = Batch { count: pos, a: cout, b: k, c: cout * k };
            gemm(l, cout, k, n, (dy.ptr, 1, pos * cout), (cols.ptr, pos * k, 1), (dw.ptr, k), false, Some(batch));
            super::elementwise::sum_rows(l, dy.ptr, db.ptr, n, pos * cout);
            if let Some(dc) = dcols {
                // dC_p = dY_p·W_p
                let batch = Batch { count: pos, a: cout, b: cout * k, c: k };
                gemm(l, n, k, cout, (dy.ptr, pos * cout, 1), (w.ptr, k, 1), (dc, pos * k), false, Some(batch));
            }
        });
    }
}

fn pool_kind(kind: PoolKind) -> i32 {
    match kind {
        PoolKind::Max => 0,
        PoolKind::Avg => 1,
        PoolKind::L2 => 2,
    }
}

impl PoolOps for Cuda {
    fn pool_forward(kind: PoolKind, x: &CudaBuf, g: &WindowGeom, y: &mut CudaBuf) {
        let (n, args) = (g.n * g.positions() * g.c, [i(pool_kind(kind)), x.ptr, y.ptr]);
        with_local(|l| l.launch_n_bytes(K::pool_forward, n, &args, &geom_bytes(g)));
    }

    fn pool_backward(kind: PoolKind, x: &CudaBuf, y: &CudaBuf, dy: &CudaBuf, g: &WindowGeom, dx: &mut CudaBuf) {
        let args = [i(pool_kind(kind)), x.ptr, y.ptr, dy.ptr, dx.ptr];
        let values = g.n * g.h * g.w * g.c;
        with_local(|l| {
            if g.sh >= g.kh && g.sw >= g.kw {
                // each value in one window at most: scatter from the windows
                let covered = g.oh * g.sh == g.h && g.ow * g.sw == g.w && g.sh == g.kh && g.sw == g.kw;
                if !covered {
                    l.launch_n(K::fill_f32, values, &[dx.ptr, f(0.0), u(values)]);
                }
                l.launch_n_bytes(K::pool_backward_disjoint, g.n * g.positions() * g.c, &args, &geom_bytes(g));
            } else {
                l.launch_n_bytes(K::pool_backward, values, &args, &geom_bytes(g));
            }
        });
    }
}

impl GlobalAvgPoolOps for Cuda {
    fn global_avg_pool_forward(x: &CudaBuf, y: &mut CudaBuf, batch: usize, positions: usize, channels: usize) {
        let args = [p(x), p(y), u(batch), u(positions), u(channels)];
        with_local(|l| l.launch_n(K::global_avg_pool_forward, batch * channels, &args));
    }

    fn global_avg_pool_backward(dy: &CudaBuf, dx: &mut CudaBuf, batch: usize, positions: usize, channels: usize) {
        let args = [p(dy), p(dx), u(batch), u(positions), u(channels)];
        with_local(|l| l.launch_n(K::global_avg_pool_backward, batch * positions * channels, &args));
    }
}

impl PatchifyOps for Cuda {
    fn patchify(x: &CudaBuf, y: &mut CudaBuf, n: usize, h: usize, w: usize, c: usize, ps: usize, inverse: bool) {
        let args = [p(x), p(y), u(n), i(h as i32), i(w as i32), i(c as i32), i(ps as i32), i(inverse as i32)];
        with_local(|l| l.launch_n(K::patchify, n * h * w * c, &args));
    }
}

/// `y[b] = x[b]ᵀ` for each of `batch` row-major `rows × cols` matrices.
fn transpose(l: &Local, x: u64, y: u64, batch: usize, rows: usize, cols: usize) {
    if batch * rows * cols == 0 {
        return;
    }
    let (gx, gy) = (cols.div_ceil(32) as u32, rows.div_ceil(32) as u32);
    for b0 in (0..batch).step_by(65535) {
        let gz = (batch - b0).min(65535) as u32;
        let args = [x, y, i(rows as i32), i(cols as i32), u(b0)];
        l.launch(K::transpose_batched, (gx, gy, gz), (32, 8, 1), &args);
    }
}

impl TransposeOps for Cuda {
    fn transpose_batched(x: &CudaBuf, y: &mut CudaBuf, batch: usize, rows: usize, cols: usize) {
        with_local(|l| transpose(l, x.ptr, y.ptr, batch, rows, cols));
    }
}
