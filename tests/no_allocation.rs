//! The steady-state training step allocates nothing: every buffer is made during warm-up
//! (the first steps and the first evaluation) and reused. A counting allocator checks it.
//! The one exception is the `gemm` crate's per-call packing buffer (see `cpu::in_gemm`),
//! which is counted separately and reported.

use cnnlab::core::cpu::with_intra_op_threads;
use cnnlab::core::Cpu;
use cnnlab::data::mnist1d_default;
use cnnlab::models::ModelKind;
use cnnlab::train::{TrainConfig, Trainer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static GEMM_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        if cnnlab::core::cpu::in_gemm() {
            GEMM_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        } else {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn training_steps_do_not_allocate_after_warm_up() {
    let data = mnist1d_default().unwrap();
    for kind in ModelKind::ALL {
        let cfg = TrainConfig { steps: 100, ..TrainConfig::mnist1d() };
        let mut t = Trainer::<Cpu>::for_dataset(kind, &data, cfg).unwrap();
        with_intra_op_threads(1, || {
            for step in 0..3 {
                t.step(&data, step).unwrap();
            }
            t.evaluate(&data).unwrap();
            t.step(&data, 3).unwrap();
            ALLOCATIONS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            for step in 4..54 {
                t.step(&data, step).unwrap();
            }
            t.evaluate(&data).unwrap();
            COUNTING.store(false, Ordering::SeqCst);
        });
        let n = ALLOCATIONS.load(Ordering::SeqCst);
        let g = GEMM_ALLOCATIONS.swap(0, Ordering::SeqCst);
        println!("{kind:?}: {g} allocations inside the gemm crate in 50 steps");
        assert_eq!(n, 0, "{kind:?}: {n} allocations in 50 steady-state steps and one evaluation");
    }
}
