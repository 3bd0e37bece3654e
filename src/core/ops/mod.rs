//! One op per file: its backend trait (the forward and backward kernels every backend
//! implements), the layer that holds its parameters, and its finite-difference gradient check.
//! The kernels themselves live with their backend, one file per op family, mirrored:
//! `core/cpu/{elementwise,window,norm,loss,optim}.rs` and `core/cuda/` (the same names).

pub mod batch_norm;
pub mod conv1d;
pub mod conv2d;
pub mod cross_entropy;
pub mod flatten;
pub mod gelu;
pub mod global_avg_pool;
pub mod layer_norm;
pub mod linear;
pub mod locally_connected;
pub mod patchify;
pub mod pool;
pub mod relu;
pub mod residual;
pub mod transpose;

pub use batch_norm::BatchNorm;
pub use conv2d::Conv;
pub use flatten::Flatten;
pub use gelu::Gelu;
pub use global_avg_pool::GlobalAvgPool;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use locally_connected::LocallyConnected;
pub use patchify::Patchify;
pub use pool::{Pool, PoolKind};
pub use relu::Relu;
pub use residual::Residual;
pub use transpose::Transpose;
