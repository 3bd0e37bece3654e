//! The compute core: tensors, ops with hand-written forward and backward, optimizers.
//!
//! Models and training see only the [`Backend`] trait and [`Tensor`]. Each backend lives in
//! its own folder with one file per op family: [`Cpu`] in [`cpu`], and with the `cuda`
//! feature `Cuda` in `cuda`. A [`Device`] value picks one at run time.

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
