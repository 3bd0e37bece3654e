//! Learned absolute position embedding: `y[b, i] = x[b, i] + P[i]` for a table `P` of
//! `[L, D]`. Backward: `dx = dy`, `dP = Σ_b dy[b]`. The bias kernels of [`super::linear`] over
//! rows of `L·D` values do both, on every backend.
//!
//! The table is what lets a transformer tell positions apart; a fixed permutation of the input
//! positions is undone exactly by permuting the table's rows the same way
//! ([`PositionEmbedding::permute_rows`]).

use crate::core::backend::Backend;
use crate::core::init::InitRng;
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// A learned vector per position.
pub struct PositionEmbedding<B: Backend> {
    pub len: usize,
    pub dim: usize,
    pub table: Param<B>,
}

impl<B: Backend> PositionEmbedding<B> {
    /// Entries drawn from N(0, 1), as the token table (a position stands out from the tokens
    /// from the first step; the distribution is the same for every order of positions).
    pub fn new(len: usize, dim: usize, rng: &mut InitRng) -> Self {
        let values = crate::core::init::standard_normal(rng, len * dim);
        Self { len, dim, table: Param::new("positions", &[len, dim], &values, false) }
    }

    /// Row `i` becomes old row `perm[i]`: the table for inputs permuted by `perm`
    /// (`x'[i] = x[perm[i]]`, as [`crate::data::permutation::permute_one`] does).
    pub fn permute_rows(&mut self, perm: &[usize]) -> Result<()> {
        let mut seen = vec![false; self.len];
        let valid =
            perm.len() == self.len && perm.iter().all(|&i| i < self.len && !std::mem::replace(&mut seen[i], true));
        if !valid {
            return Err(Error::Shape(format!("not a permutation of the table's {} positions", self.len)));
        }
        let mut rows = self.table.value.to_vec();
        let mut scratch = vec![0.0; rows.len()];
        crate::data::permutation::permute_one(&mut rows, perm, self.dim, &mut scratch);
        self.table.value.upload(&[self.len, self.dim], &rows);
        Ok(())
    }
}

impl<B: Backend> Layer<B> for PositionEmbedding<B> {
    fn describe(&self) -> String {
        format!("position-embedding({}x{})", self.len, self.dim)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [_, l, d] if *l == self.len && *d == self.dim => Ok(input.to_vec()),
            _ => {
                Err(Error::Shape(format!("{} expects [B, {}, {}], got {input:?}", self.describe(), self.len, self.dim)))
            }
        }
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        y.copy_from(x);
        B::add_bias_rows(y.buf_mut(), self.table.value.buf(), x.rows(), self.len * self.dim);
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        B::sum_rows(dy.buf(), self.table.grad.buf_mut(), x.rows(), self.len * self.dim);
        if let Some(dx) = dx {
            dx.copy_from(dy);
        }
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        f(&mut self.table);
    }
    fn visit_params_ref(&self, f: &mut dyn FnMut(&Param<B>)) {
        f(&self.table);
    }
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Pointwise
    }
    fn permute_positions(&mut self, perm: &[usize]) -> Result<usize> {
        self.permute_rows(perm)?;
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;
    use rand::SeedableRng;

    #[test]
    fn gradient_check() {
        let mut p = PositionEmbedding::<Cpu>::new(4, 3, &mut InitRng::seed_from_u64(3));
        check_layer(&mut p, &[2, 4, 3], random_input(24, 4, 0.0), 1e-2, 3e-3);
    }

    #[test]
    fn permuted_rows_follow_permuted_inputs() {
        let mut p = PositionEmbedding::<Cpu>::new(3, 2, &mut InitRng::seed_from_u64(5));
        let before = p.table.value.to_vec();
        p.permute_rows(&[2, 0, 1]).unwrap();
        assert_eq!(p.table.value.to_vec(), [&before[4..6], &before[0..2], &before[2..4]].concat());
        assert!(p.permute_rows(&[0, 1]).is_err());
        assert!(p.permute_rows(&[0, 1, 1]).is_err());
    }
}
