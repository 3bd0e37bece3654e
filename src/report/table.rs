//! The results table: one row per (model, condition), accuracy mean ± sd over seeds, and the
//! published number beside it.

use serde::{Deserialize, Serialize};

/// One cell of the experiment (the JSON schema of `reproduce --json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub model: String,
    pub condition: String,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub seeds: usize,
    /// The published test accuracy, when there is one.
    pub reference: Option<f64>,
    /// Each seed's final test accuracy.
    pub accuracies: Vec<f64>,
}

impl Row {
    /// Mean and (sample) standard deviation of `accuracies`.
    pub fn new(model: &str, condition: &str, accuracies: Vec<f64>, reference: Option<f64>) -> Self {
        let n = accuracies.len().max(1) as f64;
        let mean = accuracies.iter().sum::<f64>() / n;
        let var = if accuracies.len() > 1 {
            accuracies.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Row {
            model: model.into(),
            condition: condition.into(),
            accuracy_mean: mean,
            accuracy_std: var.sqrt(),
            seeds: accuracies.len(),
            reference,
            accuracies,
        }
    }
}

/// The whole experiment's summary (`--json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub dataset: String,
    pub rows: Vec<Row>,
    pub wall_seconds: f64,
}

/// A plain-text table: models down, conditions across, `ours ± sd (published)` per cell.
pub fn accuracy_table(rows: &[Row]) -> String {
    let mut models: Vec<&str> = Vec::new();
    let mut conditions: Vec<&str> = Vec::new();
    for r in rows {
        if !models.contains(&r.model.as_str()) {
            models.push(&r.model);
        }
        if !conditions.contains(&r.condition.as_str()) {
            conditions.push(&r.condition);
        }
    }
    let cell = |m: &str, c: &str| -> String {
        match rows.iter().find(|r| r.model == m && r.condition == c) {
            Some(r) => {
                let reference = r.reference.map(|v| format!("{:.0}", v * 100.0)).unwrap_or_else(|| "-".into());
                format!("{:5.1} ± {:3.1}  ({reference:>2})", r.accuracy_mean * 100.0, r.accuracy_std * 100.0)
            }
            None => String::new(),
        }
    };
    let width = 22;
    let mut out = format!("{:<10}", "model");
    for c in &conditions {
        out += &format!("  {c:<width$}");
    }
    out += "\n";
    out += &"-".repeat(10 + conditions.len() * (width + 2));
    out += "\n";
    for m in &models {
        out += &format!("{m:<10}");
        for c in &conditions {
            out += &format!("  {:<width$}", cell(m, c));
        }
        out += "\n";
    }
    out += "test accuracy %, mean ± sd over seeds (published value in parentheses, - where none)\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_statistics_and_table() {
        let r = Row::new("cnn", "original", vec![0.92, 0.94, 0.96], Some(0.94));
        assert!((r.accuracy_mean - 0.94).abs() < 1e-12);
        assert!((r.accuracy_std - 0.02).abs() < 1e-12);
        let t = accuracy_table(&[r, Row::new("cnn", "permuted", vec![0.5], None)]);
        assert!(t.contains(" 94.0 ± 2.0  (94)"), "{t}");
        assert!(t.contains(" 50.0 ± 0.0  ( -)"), "{t}");
    }
}
