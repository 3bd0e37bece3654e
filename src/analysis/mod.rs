//! Measurements of the explanations themselves, not only the end accuracy.

pub mod dimension;
pub mod effective_dim;
pub mod knn;
pub mod plot;
pub mod receptive_field;
