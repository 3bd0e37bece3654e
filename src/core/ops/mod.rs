//! One op per file: its backend trait (the forward and backward kernels every backend
//! implements), the layer that holds its parameters, and its finite-difference gradient check.
//! The kernels themselves live with their backend, one file per op family, mirrored:
//! `core/cpu/{elementwise,window,norm,loss,optim,attention,gather}.rs` and `core/cuda/` (the same
//! names; cuDNN's convolutions in `core/cuda/cudnn.rs`, the choice of a convolution's way in
//! `core/cuda/conv_tune.rs`).

pub mod attention;
pub mod attention_pool;
pub mod batch_norm;
pub mod conv1d;
pub mod conv2d;
pub mod cross_entropy;
pub mod embedding;
pub mod flatten;
pub mod gather_batch;
pub mod gelu;
pub mod global_avg_pool;
pub mod layer_norm;
pub mod linear;
pub mod locally_connected;
pub mod patchify;
pub mod pool;
pub mod position_embedding;
pub mod relu;
pub mod residual;
pub mod softmax;
pub mod transformer_block;
pub mod transpose;

pub use attention::Attention;
pub use attention_pool::AttentionPool;
pub use batch_norm::BatchNorm;
pub use conv2d::Conv;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub use gelu::Gelu;
pub use global_avg_pool::GlobalAvgPool;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use locally_connected::LocallyConnected;
pub use patchify::Patchify;
pub use pool::{Pool, PoolKind};
pub use position_embedding::PositionEmbedding;
pub use relu::Relu;
pub use residual::Residual;
pub use softmax::Softmax;
pub use transformer_block::transformer_block;
pub use transpose::Transpose;
