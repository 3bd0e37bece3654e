//! CPU kernels of the sliding-window ops and layout shuffles (the traits live beside their
//! layers in `core/ops/{conv2d,locally_connected,pool,global_avg_pool,patchify,transpose}.rs`;
//! `core/cuda/window.rs` is the GPU side): convolution as im2col + GEMM with the batch split
//! across threads, the locally-connected layer as one GEMM per position, pooling, shuffles.

use crate::core::cpu::{
    for_each_chunk_mut, for_each_gemm, sgemm, sgemm_disjoint, Cpu, DisjointOut, PARALLEL_MIN_ELEMS,
};
use crate::core::ops::conv2d::{Conv2dOps, WindowGeom};
use crate::core::ops::global_avg_pool::GlobalAvgPoolOps;
use crate::core::ops::linear::LinearOps;
use crate::core::ops::locally_connected::LocallyConnectedOps;
use crate::core::ops::patchify::PatchifyOps;
use crate::core::ops::pool::{PoolKind, PoolOps};
use crate::core::ops::transpose::TransposeOps;
use crate::core::Mode;

// ---- conv2d

impl Conv2dOps for Cpu {
    fn im2col(x: &Vec<f32>, g: &WindowGeom, cols: &mut Vec<f32>, img0: usize, imgs: usize) {
        let (k, p) = (g.k(), g.positions());
        let per_image = p * k;
        let images_per_task = if imgs * per_image < (1 << 16) { imgs } else { 1 };
        for_each_chunk_mut(&mut cols[..imgs * per_image], images_per_task * per_image, |t, out| {
            for (i, img_cols) in out.chunks_exact_mut(per_image).enumerate() {
                let b = img0 + t * images_per_task + i;
                let img = &x[b * g.h * g.w * g.c..(b + 1) * g.h * g.w * g.c];
                im2col_image(img, g, img_cols);
            }
        });
    }

    fn col2im(cols: &Vec<f32>, g: &WindowGeom, dx: &mut Vec<f32>, img0: usize, imgs: usize) {
        let img_len = g.h * g.w * g.c;
        let per_image = g.positions() * g.k();
        let images_per_task = if imgs * per_image < (1 << 16) { imgs } else { 1 };
        let region = &mut dx[img0 * img_len..(img0 + imgs) * img_len];
        for_each_chunk_mut(region, images_per_task * img_len, |t, out| {
            for (i, img) in out.chunks_exact_mut(img_len).enumerate() {
                let local = t * images_per_task + i;
                col2im_image(&cols[local * per_image..(local + 1) * per_image], g, img);
            }
        });
    }

    fn conv2d_forward(
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut Vec<f32>,
        y: &mut Vec<f32>,
        _mode: Mode,
    ) -> bool {
        let (p, k) = (g.positions(), g.k());
        let split = BatchSplit::new(g, cout);
        let per_range = split.reserve(scratch, g, cout);
        let block_cols = split.block * p * k;
        let body = |r: usize, yr: &mut [f32], sr: &mut [f32]| {
            let images = split.images(r, g.n);
            for (blk, img0) in images.clone().step_by(split.block).enumerate() {
                let imgs = split.block.min(images.end - img0);
                let rows = imgs * p;
                let out = &mut yr[(img0 - images.start) * p * cout..][..rows * cout];
                if g.is_pointwise() {
                    sgemm(rows, cout, k, (&x[img0 * p * k..], k, 1), (w, 1, k), (out, cout), false);
                } else {
                    let at = split.cols_offset(g, blk);
                    let cols = &mut sr[at..at + block_cols];
                    Cpu::im2col_into(x, g, cols, img0, imgs);
                    sgemm(rows, cout, k, (cols, k, 1), (w, 1, k), (out, cout), false);
                }
                for row in out.chunks_exact_mut(cout) {
                    for (o, bias) in row.iter_mut().zip(&b[..cout]) {
                        *o += bias;
                    }
                }
            }
        };
        let (y, scratch) = (&mut y[..g.n * p * cout], &mut scratch[..split.ranges * per_range]);
        if split.ranges == 1 {
            body(0, y, scratch);
        } else {
            use rayon::prelude::*;
            y.par_chunks_mut(split.images_per_range() * p * cout)
                .zip(scratch.par_chunks_mut(per_range))
                .enumerate()
                .for_each(|(r, (yr, sr))| crate::core::cpu::with_intra_op_threads(1, || body(r, yr, sr)));
        }
        !g.is_pointwise() && split.holds_batch(g)
    }

    fn conv2d_backward(
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut Vec<f32>,
        scratch_holds_cols: bool,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dx: Option<&mut Vec<f32>>,
    ) {
        let (p, k) = (g.positions(), g.k());
        let split = BatchSplit::new(g, cout);
        let per_range = split.reserve(scratch, g, cout);
        let (cols_len, _) = split.layout(g);
        let img_len = g.h * g.w * g.c;
        let want_dx = dx.is_some();
        let mut no_dx = [0.0f32; 1];
        let (dx_slice, dx_per_range): (&mut [f32], usize) = match dx {
            Some(d) => (&mut d[..g.n * img_len], split.images_per_range() * img_len),
            None => (&mut no_dx[..], 0),
        };
        let wk = cout * k;
        // each block's dW goes to its own slot: the sum below adds them in block order, so the
        // result does not depend on how blocks were shared among threads
        let block_cols = split.block * p * k;
        let body = |r: usize, dxr: &mut [f32], sr: &mut [f32], slots: &mut [f32]| {
            let (all_cols, dcols) = sr.split_at_mut(cols_len);
            let images = split.images(r, g.n);
            for (b, img0) in images.clone().step_by(split.block).enumerate() {
                let imgs = split.block.min(images.end - img0);
                let rows = imgs * p;
                let dyc = &dy[img0 * p * cout..];
                let slot = &mut slots[b * wk..(b + 1) * wk];
                let local = (img0 - images.start) * img_len;
                if g.is_pointwise() {
                    let xc = &x[img0 * p * k..];
                    sgemm(cout, k, rows, (dyc, 1, cout), (xc, k, 1), (slot, k), false);
                    if want_dx {
                        sgemm(rows, k, cout, (dyc, cout, 1), (w, k, 1), (&mut dxr[local..], k), false);
                    }
                    continue;
                }
                let at = split.cols_offset(g, b);
                let cols = &mut all_cols[at..at + block_cols];
                if !scratch_holds_cols {
                    Cpu::im2col_into(x, g, cols, img0, imgs);
                }
                sgemm(cout, k, rows, (dyc, 1, cout), (&cols[..], k, 1), (slot, k), false);
                if want_dx {
                    sgemm(rows, k, cout, (dyc, cout, 1), (w, k, 1), (&mut dcols[..], k), false);
                    let per_image = p * k;
                    for i in 0..imgs {
                        let img = &mut dxr[local + i * img_len..local + (i + 1) * img_len];
                        col2im_image(&dcols[i * per_image..(i + 1) * per_image], g, img);
                    }
                }
            }
        };
        let (work, slots) = scratch[..split.scratch_len(g, cout)].split_at_mut(split.ranges * per_range);
        let slots_per_range = split.blocks_per_range * wk;
        if split.ranges == 1 {
            body(0, dx_slice, work, slots);
        } else if want_dx {
            use rayon::prelude::*;
            dx_slice
                .par_chunks_mut(dx_per_range)
                .zip(work.par_chunks_mut(per_range))
                .zip(slots.par_chunks_mut(slots_per_range))
                .enumerate()
                .for_each(|(r, ((dxr, sr), sl))| crate::core::cpu::with_intra_op_threads(1, || body(r, dxr, sr, sl)));
        } else {
            use rayon::prelude::*;
            work.par_chunks_mut(per_range)
                .zip(slots.par_chunks_mut(slots_per_range))
                .enumerate()
                .for_each(|(r, (sr, sl))| crate::core::cpu::with_intra_op_threads(1, || body(r, &mut [], sr, sl)));
        }
        let dw = &mut dw[..wk];
        dw.copy_from_slice(&slots[..wk]);
        for part in slots[wk..split.blocks * wk].chunks_exact(wk) {
            dw.iter_mut().zip(part).for_each(|(d, v)| *d += v);
        }
        Cpu::sum_rows(dy, db, g.n * p, cout);
    }
}

/// How the CPU convolution splits a batch: into blocks of `block` images (a number fixed by
/// the layer's shape alone, never by the thread count, so every GEMM has the same shape however
/// many threads run), and the blocks into `ranges` contiguous runs, one per thread.
/// Splitting the batch (rather than each GEMM) needs one fork-join per layer: measured on the
/// W3b workload, GEMM-internal threading ran slower on 2 threads than 1 thread did.
#[derive(Clone, Copy, Debug)]
struct BatchSplit {
    ranges: usize,
    blocks: usize,
    blocks_per_range: usize,
    block: usize,
}

/// A block holds about this many multiply-adds (at least one image): a layer below it is one
/// block on one thread (an MNIST-1D training layer: splitting it costs more than it gains); a
/// larger one is cut into blocks of this size, whatever the thread count, so that many cores
/// find work and the numbers do not depend on how many there are.
const BLOCK_MACS: usize = 1 << 22;

impl BatchSplit {
    fn new(g: &WindowGeom, cout: usize) -> Self {
        let per_image = (g.positions() * g.k()).max(1);
        let n = g.n.max(1);
        let image_macs = (per_image * cout).max(1);
        // bounded im2col scratch per block, and about BLOCK_MACS of work in each
        let block = (CHUNK_VALUES / per_image).min(BLOCK_MACS.div_ceil(image_macs)).clamp(1, n);
        let blocks = n.div_ceil(block);
        let threads = crate::core::cpu::intra_op_threads();
        let ranges = threads.clamp(1, blocks);
        let blocks_per_range = blocks.div_ceil(ranges);
        let ranges = blocks.div_ceil(blocks_per_range);
        Self { ranges, blocks, blocks_per_range, block }
    }

    fn images_per_range(&self) -> usize {
        self.blocks_per_range * self.block
    }

    /// Work space per range: (im2col rows: of every block of the range when the whole batch's
    /// rows fit in `KEEP_COLS_VALUES`, else of one block; then one block's row gradients). The
    /// same layout in forward and backward lets the backward pass reuse the forward pass's rows.
    fn layout(&self, g: &WindowGeom) -> (usize, usize) {
        let block_cols = if g.is_pointwise() { 0 } else { self.block * g.positions() * g.k() };
        let cols = if self.keeps_cols(g) { block_cols * self.blocks_per_range } else { block_cols };
        (cols, cols + block_cols)
    }

    fn keeps_cols(&self, g: &WindowGeom) -> bool {
        self.ranges * self.blocks_per_range * self.block * g.positions() * g.k() <= KEEP_COLS_VALUES
    }

    /// Offset of block `b` (of its range) in the range's im2col rows.
    fn cols_offset(&self, g: &WindowGeom, b: usize) -> usize {
        if self.keeps_cols(g) {
            b * self.block * g.positions() * g.k()
        } else {
            0
        }
    }

    /// Grows `scratch` to [`BatchSplit::scratch_len`] (once, in warm-up); returns the work space
    /// per range.
    fn reserve(&self, scratch: &mut Vec<f32>, g: &WindowGeom, cout: usize) -> usize {
        let len = self.scratch_len(g, cout);
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        self.layout(g).1
    }

    /// The whole scratch: every range's work space, then one dW slot per block.
    fn scratch_len(&self, g: &WindowGeom, cout: usize) -> usize {
        self.ranges * self.layout(g).1 + self.ranges * self.blocks_per_range * cout * g.k()
    }

    /// Whether the scratch holds the whole batch's rows after a forward pass.
    fn holds_batch(&self, g: &WindowGeom) -> bool {
        self.keeps_cols(g)
    }

    /// Images of range `r`.
    fn images(&self, r: usize, n: usize) -> std::ops::Range<usize> {
        let start = (r * self.images_per_range()).min(n);
        start..((r + 1) * self.images_per_range()).min(n)
    }
}

impl Cpu {
    /// im2col rows of `imgs` images starting at `img0` into `out` (`imgs·P·K` values).
    fn im2col_into(x: &[f32], g: &WindowGeom, out: &mut [f32], img0: usize, imgs: usize) {
        let per_image = g.positions() * g.k();
        let img_len = g.h * g.w * g.c;
        for (i, o) in out[..imgs * per_image].chunks_exact_mut(per_image).enumerate() {
            let b = img0 + i;
            im2col_image(&x[b * img_len..(b + 1) * img_len], g, o);
        }
    }
}

/// One image's im2col rows (zeros where the window hangs over the padding).
fn im2col_image(img: &[f32], g: &WindowGeom, out: &mut [f32]) {
    let c = g.c;
    let mut o = 0;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ki in 0..g.kh {
                let iy = (oy * g.sh + ki) as isize - g.ph as isize;
                if iy < 0 || iy >= g.h as isize {
                    out[o..o + g.kw * c].fill(0.0);
                    o += g.kw * c;
                    continue;
                }
                let row = iy as usize * g.w;
                for kj in 0..g.kw {
                    let ix = (ox * g.sw + kj) as isize - g.pw as isize;
                    if ix < 0 || ix >= g.w as isize {
                        out[o..o + c].fill(0.0);
                    } else {
                        let src = (row + ix as usize) * c;
                        out[o..o + c].copy_from_slice(&img[src..src + c]);
                    }
                    o += c;
                }
            }
        }
    }
}

/// One image's gradient: the sum of every im2col row entry that read each input value.
fn col2im_image(cols: &[f32], g: &WindowGeom, img: &mut [f32]) {
    let c = g.c;
    img.fill(0.0);
    let mut o = 0;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ki in 0..g.kh {
                let iy = (oy * g.sh + ki) as isize - g.ph as isize;
                if iy < 0 || iy >= g.h as isize {
                    o += g.kw * c;
                    continue;
                }
                let row = iy as usize * g.w;
                for kj in 0..g.kw {
                    let ix = (ox * g.sw + kj) as isize - g.pw as isize;
                    if ix >= 0 && ix < g.w as isize {
                        let dst = (row + ix as usize) * c;
                        img[dst..dst + c].iter_mut().zip(&cols[o..o + c]).for_each(|(d, s)| *d += s);
                    }
                    o += c;
                }
            }
        }
    }
}

/// im2col scratch is processed in chunks of whole images of at most this many values.
const CHUNK_VALUES: usize = 1 << 22;
/// The forward pass keeps the whole batch's im2col rows for the backward pass up to this many
/// values (64 MB); larger layers recompute them.
const KEEP_COLS_VALUES: usize = 1 << 24;

// ---- locally_connected

impl LocallyConnectedOps for Cpu {
    fn lc_forward(
        cols: &Vec<f32>,
        w: &Vec<f32>,
        bias: &Vec<f32>,
        y: &mut Vec<f32>,
        n: usize,
        p: usize,
        k: usize,
        cout: usize,
    ) {
        for b in 0..n {
            y[b * p * cout..(b + 1) * p * cout].copy_from_slice(&bias[..p * cout]);
        }
        // one GEMM a position, the positions side by side
        let y = DisjointOut::new(&mut y[..n * p * cout]);
        for_each_gemm(p, n * k * cout, |pos| {
            // SAFETY: position `pos` writes y[b, pos, ·] only, which no other position writes.
            unsafe {
                sgemm_disjoint(
                    n,
                    cout,
                    k,
                    (&cols[pos * k..], p * k, 1),
                    (&w[pos * cout * k..], 1, k),
                    (&y, pos * cout, p * cout),
                    true,
                )
            }
        });
    }

    fn lc_backward(
        cols: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dcols: Option<&mut Vec<f32>>,
        n: usize,
        p: usize,
        k: usize,
        cout: usize,
    ) {
        let dw = DisjointOut::new(&mut dw[..p * cout * k]);
        for_each_gemm(p, n * k * cout, |pos| {
            // SAFETY: position `pos` writes its own block dW[pos] only.
            unsafe {
                sgemm_disjoint(
                    cout,
                    k,
                    n,
                    (&dy[pos * cout..], 1, p * cout),
                    (&cols[pos * k..], p * k, 1),
                    (&dw, pos * cout * k, k),
                    false,
                )
            }
        });
        db[..p * cout].fill(0.0);
        for b in 0..n {
            db[..p * cout].iter_mut().zip(&dy[b * p * cout..(b + 1) * p * cout]).for_each(|(d, g)| *d += g);
        }
        if let Some(dcols) = dcols {
            let dcols = DisjointOut::new(&mut dcols[..n * p * k]);
            for_each_gemm(p, n * k * cout, |pos| {
                // SAFETY: position `pos` writes dcols[b, pos, ·] only.
                unsafe {
                    sgemm_disjoint(
                        n,
                        k,
                        cout,
                        (&dy[pos * cout..], p * cout, 1),
                        (&w[pos * cout * k..], k, 1),
                        (&dcols, pos * k, p * k),
                        false,
                    )
                }
            });
        }
    }
}

// ---- pool

/// Calls `f(input_offset)` for each in-image position of output (oy, ox)'s window.
#[inline]
fn for_window(g: &WindowGeom, oy: usize, ox: usize, mut f: impl FnMut(usize)) {
    for ki in 0..g.kh {
        let iy = oy * g.sh + ki;
        for kj in 0..g.kw {
            let ix = ox * g.sw + kj;
            f((iy * g.w + ix) * g.c);
        }
    }
}

/// Channels [`max_pool_backward_image`] routes together.
const ROUTE_BLOCK: usize = 64;

/// Max-pooling's gradient for one image: each output's gradient goes to the first position
/// of its window, in window order, that holds the maximum. A block of channels at a time,
/// with a mask of those not yet routed, so that the loop over channels is a select the
/// compiler vectorises. Where the windows tile the image (stride = window, the CNNs'
/// pooling), each input position is written once, with no zeroing pass before and no
/// read-modify-write (the two made this backward pass 5x the forward's on the full CNN's
/// 32x32x128 maps); overlapping windows accumulate into the zeroed image.
#[inline(always)]
fn max_pool_backward_image(g: &WindowGeom, img: &[f32], yo: &[f32], go: &[f32], dimg: &mut [f32]) {
    let c = g.c;
    let tiles = g.sh == g.kh && g.sw == g.kw && g.oh * g.kh == g.h && g.ow * g.kw == g.w;
    if !tiles {
        dimg.fill(0.0);
    }
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let base = (oy * g.ow + ox) * c;
            for c0 in (0..c).step_by(ROUTE_BLOCK) {
                let w = (c - c0).min(ROUTE_BLOCK);
                let (yb, gb) = (&yo[base + c0..base + c0 + w], &go[base + c0..base + c0 + w]);
                // all ones while channel l is not routed yet (32-bit lanes, as the floats')
                let mut pending = [u32::MAX; ROUTE_BLOCK];
                for_window(g, oy, ox, |src| {
                    let s = src + c0;
                    let (xb, db, pending) = (&img[s..s + w], &mut dimg[s..s + w], &mut pending[..w]);
                    for l in 0..w {
                        let hit = pending[l] & if xb[l] == yb[l] { u32::MAX } else { 0 };
                        // `0.0 + g`: the zeroed image's sum, to the bit (−0.0 becomes +0.0)
                        let before = if tiles { 0.0 } else { db[l] };
                        db[l] = if hit != 0 { before + gb[l] } else { before };
                        pending[l] &= !hit;
                    }
                });
            }
        }
    }
}

/// The gradient of a pooling whose every window value gets a share (average, L2): the image
/// zeroed, then `share(output base, input position, channel)` added for each window value.
#[inline(always)]
fn spread_backward_image(g: &WindowGeom, dimg: &mut [f32], share: impl Fn(usize, usize, usize) -> f32) {
    let c = g.c;
    dimg.fill(0.0);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let base = (oy * g.ow + ox) * c;
            for_window(g, oy, ox, |src| {
                for ch in 0..c {
                    dimg[src + ch] += share(base, src, ch);
                }
            });
        }
    }
}

impl PoolOps for Cpu {
    fn pool_forward(kind: PoolKind, x: &Vec<f32>, g: &WindowGeom, y: &mut Vec<f32>) {
        let (c, in_len, out_len) = (g.c, g.h * g.w * g.c, g.positions() * g.c);
        let per_task = if g.n * out_len < 1 << 15 { g.n } else { 1 };
        let inv = 1.0 / (g.kh * g.kw) as f32;
        for_each_chunk_mut(&mut y[..g.n * out_len], per_task * out_len, |t, out| {
            for (i, yo) in out.chunks_exact_mut(out_len).enumerate() {
                let b = t * per_task + i;
                let img = &x[b * in_len..(b + 1) * in_len];
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = &mut yo[(oy * g.ow + ox) * c..(oy * g.ow + ox + 1) * c];
                        match kind {
                            PoolKind::Max => o.fill(f32::NEG_INFINITY),
                            _ => o.fill(0.0),
                        }
                        for_window(g, oy, ox, |src| {
                            let v = &img[src..src + c];
                            match kind {
                                PoolKind::Max => o.iter_mut().zip(v).for_each(|(o, v)| *o = o.max(*v)),
                                PoolKind::Avg => o.iter_mut().zip(v).for_each(|(o, v)| *o += v),
                                PoolKind::L2 => o.iter_mut().zip(v).for_each(|(o, v)| *o += v * v),
                            }
                        });
                        match kind {
                            PoolKind::Max => {}
                            PoolKind::Avg => o.iter_mut().for_each(|o| *o *= inv),
                            PoolKind::L2 => o.iter_mut().for_each(|o| *o = o.sqrt()),
                        }
                    }
                }
            }
        });
    }

    fn pool_backward(kind: PoolKind, x: &Vec<f32>, y: &Vec<f32>, dy: &Vec<f32>, g: &WindowGeom, dx: &mut Vec<f32>) {
        let (in_len, out_len) = (g.h * g.w * g.c, g.positions() * g.c);
        let per_task = if g.n * in_len < PARALLEL_MIN_ELEMS { g.n } else { 1 };
        let inv = 1.0 / (g.kh * g.kw) as f32;
        for_each_chunk_mut(&mut dx[..g.n * in_len], per_task * in_len, |t, out| {
            for (i, dimg) in out.chunks_exact_mut(in_len).enumerate() {
                let b = t * per_task + i;
                let img = &x[b * in_len..(b + 1) * in_len];
                let (yo, go) = (&y[b * out_len..(b + 1) * out_len], &dy[b * out_len..(b + 1) * out_len]);
                match kind {
                    PoolKind::Max => crate::dispatch_simd!(max_pool_backward_image(g, img, yo, go, dimg)),
                    PoolKind::Avg => spread_backward_image(g, dimg, |base, _, ch| go[base + ch] * inv),
                    PoolKind::L2 => spread_backward_image(g, dimg, |base, src, ch| {
                        let n = yo[base + ch];
                        if n > 0.0 {
                            go[base + ch] * img[src + ch] / n
                        } else {
                            0.0
                        }
                    }),
                }
            }
        });
    }
}

// ---- global_avg_pool

impl GlobalAvgPoolOps for Cpu {
    fn global_avg_pool_forward(x: &Vec<f32>, y: &mut Vec<f32>, batch: usize, positions: usize, channels: usize) {
        let inv = 1.0 / positions as f32;
        for b in 0..batch {
            let out = &mut y[b * channels..(b + 1) * channels];
            out.fill(0.0);
            for p in 0..positions {
                let row = &x[(b * positions + p) * channels..(b * positions + p + 1) * channels];
                out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
            }
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }

    fn global_avg_pool_backward(dy: &Vec<f32>, dx: &mut Vec<f32>, batch: usize, positions: usize, channels: usize) {
        let inv = 1.0 / positions as f32;
        for b in 0..batch {
            let g = &dy[b * channels..(b + 1) * channels];
            for p in 0..positions {
                let row = &mut dx[(b * positions + p) * channels..(b * positions + p + 1) * channels];
                row.iter_mut().zip(g).for_each(|(o, v)| *o = v * inv);
            }
        }
    }
}

// ---- patchify

/// `f(src_index, dst_index)` for every value of one image.
fn for_each_value(h: usize, w: usize, c: usize, p: usize, mut f: impl FnMut(usize, usize)) {
    let (th, tw) = (h / p, w / p);
    for ty in 0..th {
        for tx in 0..tw {
            let token = ty * tw + tx;
            for dy in 0..p {
                for dx in 0..p {
                    let src = ((ty * p + dy) * w + tx * p + dx) * c;
                    let dst = (token * p * p + dy * p + dx) * c;
                    for ch in 0..c {
                        f(src + ch, dst + ch);
                    }
                }
            }
        }
    }
}

impl PatchifyOps for Cpu {
    fn patchify(x: &Vec<f32>, y: &mut Vec<f32>, n: usize, h: usize, w: usize, c: usize, p: usize, inverse: bool) {
        let len = h * w * c;
        for_each_chunk_mut(&mut y[..n * len], len, |b, out| {
            let src = &x[b * len..(b + 1) * len];
            if inverse {
                for_each_value(h, w, c, p, |img, tok| out[img] = src[tok]);
            } else {
                for_each_value(h, w, c, p, |img, tok| out[tok] = src[img]);
            }
        });
    }
}

// ---- transpose

impl TransposeOps for Cpu {
    fn transpose_batched(x: &Vec<f32>, y: &mut Vec<f32>, batch: usize, rows: usize, cols: usize) {
        let per = rows * cols;
        let chunk = if batch * per < PARALLEL_MIN_ELEMS { batch * per } else { per * batch.div_ceil(8).max(1) };
        let avx = avx_available();
        for_each_chunk_mut(&mut y[..batch * per], chunk, |t, out| {
            let b0 = t * chunk / per.max(1);
            for (bi, o) in out.chunks_exact_mut(per).enumerate() {
                let xin = &x[(b0 + bi) * per..(b0 + bi + 1) * per];
                transpose_matrix(xin, o, rows, cols, avx);
            }
        });
    }
}

fn avx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `o[j·rows + i] = x[i·cols + j]` for one `rows × cols` matrix: 8×8 tiles in registers where
/// `avx` (a move of values, so the same result either way; the Mixer's transposes took 5% of
/// its CPU step as a scalar loop), the edges one value at a time.
fn transpose_matrix(x: &[f32], o: &mut [f32], rows: usize, cols: usize, avx: bool) {
    // the tiles' unsafe loads and stores rely on it; callers pass each matrix's own slices
    // (`transpose_batched` cuts them to rows·cols), so no input reaches it failing
    assert!(x.len() >= rows * cols && o.len() >= rows * cols);
    if !avx {
        // blocked to keep both sides in cache (other CPUs: ARM laptops among them)
        const BLK: usize = 16;
        for i0 in (0..rows).step_by(BLK) {
            for j0 in (0..cols).step_by(BLK) {
                for i in i0..(i0 + BLK).min(rows) {
                    for j in j0..(j0 + BLK).min(cols) {
                        o[j * rows + i] = x[i * cols + j];
                    }
                }
            }
        }
        return;
    }
    let (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    for i0 in (0..full_rows).step_by(8) {
        for j0 in (0..full_cols).step_by(8) {
            // SAFETY: AVX is present (`avx`), and the tile's rows i0..i0+8 and columns
            // j0..j0+8 lie inside both matrices (checked above: full tiles only)
            unsafe { transpose_8x8(x.as_ptr().add(i0 * cols + j0), cols, o.as_mut_ptr().add(j0 * rows + i0), rows) };
        }
    }
    // what the tiles did not cover: the last rows % 8 rows, and the last cols % 8 columns
    for i in 0..rows {
        let j_start = if i < full_rows { full_cols } else { 0 };
        for j in j_start..cols {
            o[j * rows + i] = x[i * cols + j];
        }
    }
}

/// The 8×8 tile at `src` (row stride `src_stride`) written transposed at `dst` (row stride
/// `dst_stride`), in eight registers: unpack pairs, shuffle quads, swap 128-bit halves.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    // SAFETY (every load and store): the caller guarantees the 8×8 tiles at src and dst
    let r = |k: usize| unsafe { _mm256_loadu_ps(src.add(k * src_stride)) };
    let (r0, r1, r2, r3, r4, r5, r6, r7) = (r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7));
    let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
    let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
    let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
    let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
    let (s0, s1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
    let (s2, s3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
    let (s4, s5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
    let (s6, s7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
    let out = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    for (k, v) in out.into_iter().enumerate() {
        unsafe { _mm256_storeu_ps(dst.add(k * dst_stride), v) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cpu::with_intra_op_threads;
    use crate::core::gradcheck::random_input;

    /// The tiled transpose moves every value where the one-value-at-a-time loop does, at
    /// shapes with and without 8×8 tiles and ragged edges, on any thread count.
    #[test]
    fn transpose_puts_every_value_where_the_plain_loop_does() {
        for (batch, rows, cols) in
            // the last: enough matrices that the threads share them out
            [
                (3, 1, 1),
                (2, 8, 8),
                (2, 7, 9),
                (3, 17, 8),
                (4, 16, 24),
                (2, 64, 128),
                (PARALLEL_MIN_ELEMS / 8192 + 38, 64, 128),
            ]
        {
            let x: Vec<f32> = (0..batch * rows * cols).map(|v| v as f32).collect();
            let mut want = vec![0.0f32; x.len()];
            for b in 0..batch {
                for i in 0..rows {
                    for j in 0..cols {
                        want[b * rows * cols + j * rows + i] = x[b * rows * cols + i * cols + j];
                    }
                }
            }
            for avx in [false, avx_available()] {
                let mut one = vec![f32::NAN; rows * cols];
                transpose_matrix(&x[..rows * cols], &mut one, rows, cols, avx);
                assert_eq!(one, want[..rows * cols], "{rows}x{cols}, avx {avx}");
            }
            for threads in [1, 2, 3] {
                let mut y = vec![f32::NAN; x.len()];
                with_intra_op_threads(threads, || Cpu::transpose_batched(&x, &mut y, batch, rows, cols));
                assert_eq!(y, want, "{batch}x{rows}x{cols} on {threads} threads");
            }
        }
    }

    /// Max-pooling's gradient as one branchy loop: each output's gradient added to the first
    /// position of its window, in window order, that holds the maximum.
    fn naive_max_backward(x: &[f32], y: &[f32], dy: &[f32], g: &WindowGeom) -> Vec<f32> {
        let (c, in_len, out_len) = (g.c, g.h * g.w * g.c, g.positions() * g.c);
        let mut dx = vec![0.0f32; g.n * in_len];
        for b in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let base = b * out_len + (oy * g.ow + ox) * c;
                    for ch in 0..c {
                        let mut routed = false;
                        for_window(g, oy, ox, |src| {
                            if !routed && x[b * in_len + src + ch] == y[base + ch] {
                                dx[b * in_len + src + ch] += dy[base + ch];
                                routed = true;
                            }
                        });
                    }
                }
            }
        }
        dx
    }

    #[test]
    fn max_pool_gradient_goes_to_the_first_maximum_of_each_window() {
        // windows that tile the image, that leave a row and column out, and that overlap;
        // 70 channels: a full block and a partial one; enough images that the threads share
        // them out
        for (h, k, s) in [(4, 2, 2), (5, 2, 2), (5, 3, 1)] {
            let o = (h - k) / s + 1;
            let n = PARALLEL_MIN_ELEMS.div_ceil(h * h * 70) + 1;
            let g = WindowGeom { n, h, w: h, c: 70, kh: k, kw: k, sh: s, sw: s, ph: 0, pw: 0, oh: o, ow: o };
            // few distinct values, so that windows hold their maximum more than once
            let x: Vec<f32> = random_input(g.n * h * h * g.c, 1, 0.0).iter().map(|v| (v * 3.0).round()).collect();
            let mut y = vec![0.0f32; g.n * g.positions() * g.c];
            Cpu::pool_forward(PoolKind::Max, &x, &g, &mut y);
            let dy = random_input(y.len(), 2, 0.0);
            let want = naive_max_backward(&x, &y, &dy, &g);
            for threads in [1, 2] {
                with_intra_op_threads(threads, || {
                    let mut dx = vec![f32::NAN; x.len()];
                    Cpu::pool_backward(PoolKind::Max, &x, &y, &dy, &g, &mut dx);
                    assert_eq!(dx, want, "{h}x{h}, window {k}, stride {s}, {threads} threads");
                });
            }
        }
    }
}
