//! Statistics over seeds: what every cell of every table reports.

use serde::{Deserialize, Serialize};

/// Test accuracies of one cell over seeds: mean and sample standard deviation (the JSON
/// fields `accuracy_mean`, `accuracy_std`, `accuracies`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedStats {
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    /// Each seed's final test accuracy.
    pub accuracies: Vec<f64>,
}

impl SeedStats {
    pub fn of(accuracies: Vec<f64>) -> Self {
        let n = accuracies.len().max(1) as f64;
        let mean = accuracies.iter().sum::<f64>() / n;
        let var = if accuracies.len() > 1 {
            accuracies.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        SeedStats { accuracy_mean: mean, accuracy_std: var.sqrt(), accuracies }
    }

    /// The values of the jobs whose key is `key` (`keys[i]` is job i's key).
    pub fn select<K: PartialEq>(keys: impl IntoIterator<Item = K>, values: &[f64], key: &K) -> Self {
        Self::of(keys.into_iter().zip(values).filter(|(k, _)| k == key).map(|(_, v)| *v).collect())
    }

    pub fn seeds(&self) -> usize {
        self.accuracies.len()
    }

    /// `mean ± sd` in percent, or the mean alone for a single seed (no spread to show).
    pub fn percent(&self) -> String {
        if self.seeds() > 1 {
            format!("{:5.1} ± {:3.1}", self.accuracy_mean * 100.0, self.accuracy_std * 100.0)
        } else {
            format!("{:5.1}", self.accuracy_mean * 100.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_over_seeds() {
        let s = SeedStats::of(vec![0.92, 0.94, 0.96]);
        assert!((s.accuracy_mean - 0.94).abs() < 1e-12 && (s.accuracy_std - 0.02).abs() < 1e-12);
        assert_eq!(s.percent(), " 94.0 ± 2.0");
        assert_eq!(SeedStats::of(vec![0.5]).percent(), " 50.0");
        let picked = SeedStats::select(["a", "b", "a"], &[0.1, 0.2, 0.3], &"a");
        assert_eq!(picked.accuracies, vec![0.1, 0.3]);
    }
}
