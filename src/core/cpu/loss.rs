//! CPU kernel of the softmax cross-entropy (trait in `core/ops/cross_entropy.rs`;
//! `core/cuda/loss.rs` is the GPU side).

use crate::core::cpu::Cpu;
use crate::core::ops::cross_entropy::CrossEntropyOps;

impl CrossEntropyOps for Cpu {
    fn softmax_cross_entropy(
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        mut dlogits: Option<&mut Vec<f32>>,
        rows: usize,
        classes: usize,
        stats: &mut Vec<f32>,
        slot: usize,
    ) {
        let mut loss = 0.0f64;
        let mut correct = 0;
        let inv_rows = 1.0 / rows as f32;
        for r in 0..rows {
            let z = &logits[r * classes..(r + 1) * classes];
            let label = labels[r] as usize;
            let (mut best, mut max) = (0, f32::NEG_INFINITY);
            for (j, &v) in z.iter().enumerate() {
                if v > max {
                    max = v;
                    best = j;
                }
            }
            if best == label {
                correct += 1;
            }
            let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
            let log_sum = sum.ln();
            loss += (log_sum - (z[label] - max)) as f64;
            if let Some(d) = dlogits.as_deref_mut() {
                let d = &mut d[r * classes..(r + 1) * classes];
                for j in 0..classes {
                    let p = (z[j] - max).exp() / sum;
                    d[j] = (p - if j == label { 1.0 } else { 0.0 }) * inv_rows;
                }
            }
        }
        let mean = if rows == 0 { 0.0 } else { (loss / rows as f64) as f32 };
        stats[2 * slot] = mean;
        stats[2 * slot + 1] = correct as f32;
    }
}
