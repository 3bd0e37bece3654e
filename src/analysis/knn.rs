//! k-nearest-neighbour classification and distance statistics, by brute force: squared
//! distances `|a|² + |b|² − 2a·b` with the dot products from one GEMM per block of test rows.

use crate::core::cpu::sgemm;

/// What kNN measured on a test set.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KnnResult {
    pub accuracy: f64,
    /// Mean over test points of (nearest distance / farthest distance) to the training set:
    /// near 1 means every training point is about equally far (the curse of dimensionality).
    pub nearest_to_farthest: f64,
}

/// Majority vote of the `k` nearest training points (ties: the smallest label), Euclidean.
pub fn knn(train: &[f32], train_y: &[u32], test: &[f32], test_y: &[u32], dim: usize, k: usize) -> KnnResult {
    let (n, m) = (train_y.len(), test_y.len());
    let k = k.clamp(1, n.max(1));
    let norms = |x: &[f32]| -> Vec<f32> { x.chunks_exact(dim).map(|r| r.iter().map(|v| v * v).sum()).collect() };
    let (tn, qn) = (norms(train), norms(test));
    let classes = train_y.iter().chain(test_y).copied().max().unwrap_or(0) as usize + 1;
    let block = 256;
    let mut dots = vec![0.0f32; block * n];
    let (mut correct, mut ratio_sum) = (0usize, 0.0f64);
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    let mut votes = vec![0usize; classes];
    for q0 in (0..m).step_by(block) {
        let rows = block.min(m - q0);
        sgemm(rows, n, dim, (&test[q0 * dim..], dim, 1), (train, 1, dim), (&mut dots[..rows * n], n), false);
        for r in 0..rows {
            let q = q0 + r;
            best.clear();
            let (mut near, mut far) = (f32::INFINITY, 0.0f32);
            for (j, &dot) in dots[r * n..(r + 1) * n].iter().enumerate() {
                let d2 = (qn[q] + tn[j] - 2.0 * dot).max(0.0);
                near = near.min(d2);
                far = far.max(d2);
                if best.len() < k || d2 < best[best.len() - 1].0 {
                    let at = best.partition_point(|b| b.0 <= d2);
                    best.insert(at, (d2, train_y[j]));
                    best.truncate(k);
                }
            }
            votes.iter_mut().for_each(|v| *v = 0);
            best.iter().for_each(|b| votes[b.1 as usize] += 1);
            let predicted = (0..classes).max_by_key(|&c| (votes[c], std::cmp::Reverse(c))).unwrap_or(0);
            if predicted as u32 == test_y[q] {
                correct += 1;
            }
            if far > 0.0 {
                ratio_sum += (near.sqrt() / far.sqrt()) as f64;
            }
        }
    }
    KnnResult { accuracy: correct as f64 / m.max(1) as f64, nearest_to_farthest: ratio_sum / m.max(1) as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_neighbour_on_separated_clusters() {
        // 1-D: class 0 near 0, class 1 near 10
        let train = [0.0, 0.5, 10.0, 10.5];
        let train_y = [0, 0, 1, 1];
        let test = [0.2, 9.0, 4.0];
        let test_y = [0, 1, 0];
        let r = knn(&train, &train_y, &test, &test_y, 1, 1);
        assert!((r.accuracy - 1.0).abs() < 1e-12);
        // first test point: nearest 0.2 (to 0.0), farthest 10.3
        let want = (0.2 / 10.3 + 1.0 / 9.0 + 3.5 / 6.5) / 3.0;
        assert!((r.nearest_to_farthest - want).abs() < 1e-5, "{}", r.nearest_to_farthest);
        // k = 3 at 4.0: two class-0 points beat one class-1 point
        assert_eq!(knn(&train, &train_y, &[4.0], &[0], 1, 3).accuracy, 1.0);
    }
}
