//! An n-dimensional f32 tensor: a shape and a backend buffer.

use crate::core::backend::BackendBase;

/// A row-major tensor whose values live in backend `B`'s memory.
pub struct Tensor<B: BackendBase> {
    shape: Vec<usize>,
    buf: B::Buf,
}

impl<B: BackendBase> Tensor<B> {
    /// A zero-filled tensor.
    pub fn zeros(shape: &[usize]) -> Self {
        Self { shape: shape.to_vec(), buf: B::zeros(shape.iter().product()) }
    }

    /// An empty tensor, shaped later by [`Tensor::resize`].
    pub fn empty() -> Self {
        Self::zeros(&[0])
    }

    /// A tensor holding `data` (its length must be the product of `shape`).
    pub fn from_slice(shape: &[usize], data: &[f32]) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        let mut buf = B::zeros(0);
        B::upload(&mut buf, data);
        Self { shape: shape.to_vec(), buf }
    }

    /// Reshapes in place, keeping memory when it is large enough (no allocation once warm).
    /// Values are unspecified afterwards unless the length is unchanged.
    pub fn resize(&mut self, shape: &[usize]) {
        if self.shape != shape {
            self.shape.clear();
            self.shape.extend_from_slice(shape);
        }
        let len = shape.iter().product();
        if B::len(&self.buf) != len {
            B::resize(&mut self.buf, len);
        }
    }

    /// Copies host data in, reshaping to `shape`.
    pub fn upload(&mut self, shape: &[usize], data: &[f32]) {
        self.resize(shape);
        B::upload(&mut self.buf, data);
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        B::len(&self.buf)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// First dimension (the batch, by convention).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Product of all dimensions but the first.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Last dimension.
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(0)
    }

    pub fn buf(&self) -> &B::Buf {
        &self.buf
    }

    pub fn buf_mut(&mut self) -> &mut B::Buf {
        &mut self.buf
    }

    /// The values, copied to the host.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut out = Vec::new();
        B::download(&self.buf, &mut out);
        out
    }

    /// Sets every value.
    pub fn fill(&mut self, value: f32) {
        B::fill(&mut self.buf, value);
    }

    /// Makes this tensor a copy of `other` (shape and values).
    pub fn copy_from(&mut self, other: &Tensor<B>) {
        self.resize(other.shape());
        B::copy(&other.buf, &mut self.buf);
    }
}

impl<B: BackendBase> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        let mut t = Self::zeros(&self.shape);
        B::copy(&self.buf, &mut t.buf);
        t
    }
}

impl<B: BackendBase> std::fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
    }
}

/// A small shape kept on the stack (at most 6 dimensions), so layers can compute output
/// shapes inside the training step without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    dims: [usize; 6],
    len: usize,
}

impl Shape {
    pub fn set_first(&mut self, v: usize) {
        if self.len > 0 {
            self.dims[0] = v;
        }
    }

    pub fn set_last(&mut self, v: usize) {
        if self.len > 0 {
            self.dims[self.len - 1] = v;
        }
    }
}

impl From<&[usize]> for Shape {
    fn from(s: &[usize]) -> Self {
        let mut dims = [0; 6];
        let len = s.len().min(6);
        dims[..len].copy_from_slice(&s[..len]);
        Shape { dims, len }
    }
}

impl std::ops::Deref for Shape {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.dims[..self.len]
    }
}
