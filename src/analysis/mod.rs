//! Measurements of the explanations themselves, not only the end accuracy.

pub mod dimension;
pub mod knn;
pub mod plot;
