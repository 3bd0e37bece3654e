//! Softmax cross-entropy, the classification loss: `L = −mean_i log softmax(z_i)[y_i]`,
//! `dL/dz_i = (softmax(z_i) − onehot(y_i)) / rows`. Computed stably (max subtracted).

use crate::core::backend::{Backend, BackendBase};
use crate::core::Tensor;

/// The backend kernel of the softmax cross-entropy loss.
pub trait CrossEntropyOps: BackendBase {
    /// Over `rows` rows of `classes` logits: writes the mean loss (the rows' losses summed in
    /// f64, divided by `rows`, rounded to f32) to `stats[2·slot]` and the number of rows whose
    /// largest logit is the label to `stats[2·slot + 1]`, and fills `dlogits` with the
    /// gradient of the mean loss (each row's softmax minus its one-hot label, divided by
    /// `rows`). `labels` holds class indices (as f32 so that every backend keeps one buffer
    /// type). The statistics stay in the backend's memory: a training loop reads many steps'
    /// worth at once, so a GPU step never waits for the host.
    #[allow(clippy::too_many_arguments)]
    fn softmax_cross_entropy(
        logits: &Self::Buf,
        labels: &Self::Buf,
        dlogits: Option<&mut Self::Buf>,
        rows: usize,
        classes: usize,
        stats: &mut Self::Buf,
        slot: usize,
    );
}

/// The loss as a stateful object: holds the labels, the logits' gradient buffer and the
/// statistics of the last evaluation.
pub struct CrossEntropy<B: Backend> {
    pub labels: Tensor<B>,
    pub dlogits: Tensor<B>,
    stats: Tensor<B>,
    host: Vec<f32>,
}

impl<B: Backend> Default for CrossEntropy<B> {
    fn default() -> Self {
        Self { labels: Tensor::empty(), dlogits: Tensor::empty(), stats: Tensor::empty(), host: Vec::new() }
    }
}

impl<B: Backend> CrossEntropy<B> {
    /// Mean loss and accuracy count for `logits` `[rows, classes]`; fills `dlogits` when
    /// `grad` is set. Reads the result back at once (see [`CrossEntropy::evaluate_into`]).
    pub fn evaluate(&mut self, logits: &Tensor<B>, grad: bool) -> (f32, usize) {
        if self.stats.len() != 2 {
            self.stats = Tensor::zeros(&[2]);
        }
        Self::run(logits, grad, &self.labels, &mut self.dlogits, &mut self.stats, 0);
        B::download(self.stats.buf(), &mut self.host);
        (self.host[0], self.host[1] as usize)
    }

    /// Like [`CrossEntropy::evaluate`], leaving (mean loss, correct rows) in `stats` at
    /// `2·slot` in the backend's memory (nothing waits for it).
    pub fn evaluate_into(&mut self, logits: &Tensor<B>, grad: bool, stats: &mut Tensor<B>, slot: usize) {
        Self::run(logits, grad, &self.labels, &mut self.dlogits, stats, slot);
    }

    fn run(
        logits: &Tensor<B>,
        grad: bool,
        labels: &Tensor<B>,
        dlogits: &mut Tensor<B>,
        stats: &mut Tensor<B>,
        slot: usize,
    ) {
        let (rows, classes) = (logits.rows(), logits.last_dim());
        // slots come from the code that sized the buffer (trainer, bench), never from user input
        assert!(stats.len() >= 2 * slot + 2, "loss statistics: slot {slot} of {} values", stats.len());
        let d = if grad {
            dlogits.resize(logits.shape());
            Some(dlogits.buf_mut())
        } else {
            None
        };
        B::softmax_cross_entropy(logits.buf(), labels.buf(), d, rows, classes, stats.buf_mut(), slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::random_input;
    use crate::core::Cpu;

    #[test]
    fn gradient_check_and_known_value() {
        let (rows, classes) = (3, 4);
        let z = random_input(rows * classes, 31, 0.0);
        let labels = vec![2.0, 0.0, 3.0];
        let mut ce = CrossEntropy::<Cpu> { labels: Tensor::from_slice(&[rows], &labels), ..Default::default() };
        let mut logits = Tensor::<Cpu>::from_slice(&[rows, classes], &z);
        let (loss, _) = ce.evaluate(&logits, true);
        let analytic = ce.dlogits.to_vec();
        let eps = 1e-2;
        for i in 0..rows * classes {
            logits.buf_mut()[i] = z[i] + eps;
            let (lp, _) = ce.evaluate(&logits, false);
            logits.buf_mut()[i] = z[i] - eps;
            let (lm, _) = ce.evaluate(&logits, false);
            logits.buf_mut()[i] = z[i];
            let numeric = (lp - lm) / (2.0 * eps);
            assert!((numeric - analytic[i]).abs() < 1e-3, "dz[{i}]: {} vs {numeric}", analytic[i]);
        }
        // uniform logits: loss = ln(classes)
        let flat = Tensor::<Cpu>::from_slice(&[rows, classes], &[0.5; 12]);
        let (l, _) = ce.evaluate(&flat, false);
        assert!((l - (classes as f32).ln()).abs() < 1e-6);
        assert!(loss.is_finite());
    }
}
