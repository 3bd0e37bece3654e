//! Token embedding: `[B, L, 1]` token ids (integers held as f32, exact below 2^24) to
//! `[B, L, D]` rows of a learned table `[V, D]`. Backward scatters: `dtable[v] = Σ_{t: id_t = v}
//! dy_t`, summed in token order (deterministic). The ids are not differentiable: the input
//! gradient, when asked, is zero.

use crate::core::backend::{Backend, BackendBase};
use crate::core::init::InitRng;
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// The backend kernels of the embedding lookup. Ids outside `0..vocab` never reach them
/// ([`crate::data::Dataset::validate`] refuses such data); the kernels read them as zero rows.
pub trait EmbeddingOps: BackendBase {
    /// `y[t] = table[ids[t]]` for `tokens` ids, rows of `dim`.
    fn embedding_forward(ids: &Self::Buf, table: &Self::Buf, y: &mut Self::Buf, tokens: usize, dim: usize);
    /// `dtable = 0`, then `dtable[ids[t]] += dy[t]` (written, not accumulated).
    fn embedding_backward(
        ids: &Self::Buf,
        dy: &Self::Buf,
        dtable: &mut Self::Buf,
        tokens: usize,
        vocab: usize,
        dim: usize,
    );
}

/// A learned table of `vocab` vectors of `dim` values.
pub struct Embedding<B: Backend> {
    pub vocab: usize,
    pub dim: usize,
    pub table: Param<B>,
}

impl<B: Backend> Embedding<B> {
    /// Entries drawn from N(0, 1) (PyTorch's `nn.Embedding` default).
    pub fn new(vocab: usize, dim: usize, rng: &mut InitRng) -> Self {
        let values = crate::core::init::standard_normal(rng, vocab * dim);
        Self { vocab, dim, table: Param::new("table", &[vocab, dim], &values, true) }
    }
}

impl<B: Backend> Layer<B> for Embedding<B> {
    fn describe(&self) -> String {
        format!("embedding({}x{})", self.vocab, self.dim)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [b, l, 1] => Ok(vec![*b, *l, self.dim]),
            _ => Err(Error::Shape(format!("{} expects token ids [B, L, 1], got {input:?}", self.describe()))),
        }
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let (b, l) = (x.rows(), x.len() / x.rows().max(1));
        y.resize(&[b, l, self.dim]);
        B::embedding_forward(x.buf(), self.table.value.buf(), y.buf_mut(), x.len(), self.dim);
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        B::embedding_backward(x.buf(), dy.buf(), self.table.grad.buf_mut(), x.len(), self.vocab, self.dim);
        if let Some(dx) = dx {
            dx.resize(x.shape());
            dx.fill(0.0);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::check_layer;
    use crate::core::Cpu;
    use rand::SeedableRng;

    #[test]
    fn gradient_check_with_repeated_ids() {
        let mut e = Embedding::<Cpu>::new(5, 3, &mut InitRng::seed_from_u64(1));
        // id 2 three times: its gradient is the sum of three rows
        let ids = vec![2.0, 0.0, 4.0, 2.0, 1.0, 2.0];
        check_layer(&mut e, &[2, 3, 1], ids, 1e-2, 3e-3);
    }

    #[test]
    fn looks_up_rows() {
        let mut e = Embedding::<Cpu>::new(4, 2, &mut InitRng::seed_from_u64(2));
        let table = e.table.value.to_vec();
        let x = Tensor::<Cpu>::from_slice(&[1, 3, 1], &[3.0, 0.0, 3.0]);
        let mut y = Tensor::empty();
        e.forward(&x, &mut y, Mode::Eval);
        assert_eq!(y.shape(), [1, 3, 2]);
        assert_eq!(y.to_vec(), [&table[6..8], &table[0..2], &table[6..8]].concat());
    }
}
