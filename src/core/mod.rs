//! The compute core: tensors, ops with hand-written forward and backward, optimizers.
//!
//! Models and training see only the [`Backend`] trait and [`Tensor`]; the CPU implementation
//! ([`Cpu`]) lives in [`cpu`]. A GPU backend implements the same traits (one per op file) over
//! its own buffer type without touching models or training.

pub mod backend;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod init;
pub mod layer;
pub mod ops;
pub mod optim;
pub mod tensor;

#[cfg(test)]
pub(crate) mod gradcheck;

pub use backend::{Backend, BackendBase};
pub use cpu::Cpu;
#[cfg(feature = "cuda")]
pub use cuda::Cuda;
pub use device::Device;
pub use layer::{Layer, Mode, Param};
pub use tensor::Tensor;
