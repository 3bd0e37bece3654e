//! Timing ways of computing the same result, and comparing their results: what the tuner of
//! convolutions (`conv_tune.rs`) and of GEMMs (`gemm.rs`) share. Each way runs on the call's
//! own buffers and is timed (the fastest of [`TIMED_RUNS`] runs after an untimed one), its
//! output first filled with NaN ([`poison`]), and its result compared with the reference
//! way's ([`deviation`], within [`tolerance`]); it replaces the fixed choice only where it
//! takes under [`MARGIN`] of its time ([`pick_timed`]).

use super::{check, f, failed, u, Local, K};
use crate::error::{Error, Result};
use cudarc::driver::{result as drv, sys as drv_sys};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The factor in force (see [`deviation_factor`]).
pub(crate) fn factor() -> f64 {
    f64::from_bits(FACTOR.load(Ordering::Relaxed))
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
