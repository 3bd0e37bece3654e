//! Datasets and the transforms applied to them.

pub mod cifar;
pub mod dataset;
pub mod download;
pub mod folder;
pub mod idx;
pub mod mnist1d;
pub mod npy;
pub mod permutation;
pub mod recall;
pub mod registry;
pub mod rotten_tomatoes;

pub use dataset::mnist1d_default;
pub use dataset::Dataset;
pub use permutation::{Condition, PositionPermutation};
pub use registry::{DataSource, DatasetSpec};
