//! Global average pooling over every position: `[B, S.., C] -> [B, C]` (channels last), the
//! mean over `S..`. Used at the end of image CNNs and for the Mixer's mean over tokens.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

/// The backend kernels of global average pooling (the mean over positions, per channel).
pub trait GlobalAvgPoolOps: BackendBase {
    fn global_avg_pool_forward(x: &Self::Buf, y: &mut Self::Buf, batch: usize, positions: usize, channels: usize);
    fn global_avg_pool_backward(dy: &Self::Buf, dx: &mut Self::Buf, batch: usize, positions: usize, channels: usize);
}

/// Mean over all positions, keeping batch and channels.
#[derive(Default)]
pub struct GlobalAvgPool;

impl<B: Backend> Layer<B> for GlobalAvgPool {
    fn describe(&self) -> String {
        "global-avg-pool".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.len() < 3 {
            return Err(Error::Shape(format!("global-avg-pool expects [B, positions.., C], got {input:?}")));
        }
        Ok(vec![input[0], input[input.len() - 1]])
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let (b, c) = (x.rows(), x.last_dim());
        y.resize(&[b, c]);
        B::global_avg_pool_forward(x.buf(), y.buf_mut(), b, x.len() / (b * c), c);
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        if let Some(dx) = dx {
            let (b, c) = (x.rows(), x.last_dim());
            dx.resize(x.shape());
            B::global_avg_pool_backward(dy.buf(), dx.buf_mut(), b, x.len() / (b * c), c);
        }
    }
    fn macs(&self, input: &[usize]) -> u64 {
        input.iter().product::<usize>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};

    #[test]
    fn gradient_check() {
        check_layer(&mut GlobalAvgPool, &[2, 3, 4, 5], random_input(120, 8, 0.0), 1e-2, 1e-3);
    }
}
