//! The experiments the binary runs, usable from the library too.

pub mod bench;
pub mod data_size;
pub mod pooling;
pub mod presets;
pub mod prune;
pub mod reproduce;
