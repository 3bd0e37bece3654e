//! The results table: one row per (model, condition), accuracy mean ± sd over seeds, and the
//! published number beside it.

use crate::report::SeedStats;
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
        let stats = SeedStats::of(accuracies);
        Row {
            model: model.into(),
            condition: condition.into(),
            accuracy_mean: stats.accuracy_mean,
            accuracy_std: stats.accuracy_std,
            seeds: stats.seeds(),
            reference,
            accuracies: stats.accuracies,
        }
    }

    pub fn stats(&self) -> SeedStats {
        SeedStats {
            accuracy_mean: self.accuracy_mean,
            accuracy_std: self.accuracy_std,
            accuracies: self.accuracies.clone(),
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

/// A plain-text table: models down, conditions across, `ours ± sd (published)` per cell. The
/// spread is shown only over several seeds, the published column only where a row has one.
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
    let any_reference = rows.iter().any(|r| r.reference.is_some());
    let seeds = rows.iter().map(|r| r.seeds).max().unwrap_or(0);
    let cell = |m: &str, c: &str| -> String {
        match rows.iter().find(|r| r.model == m && r.condition == c) {
            Some(r) if any_reference => {
                let reference = r.reference.map(|v| format!("{:.0}", v * 100.0)).unwrap_or_else(|| "-".into());
                format!("{}  ({reference:>2})", r.stats().percent())
            }
            Some(r) => r.stats().percent(),
            None => String::new(),
        }
    };
    let width = 22;
    // the model column fits the longest name (at least the 10 the classic models use)
    let name = models.iter().map(|m| m.len()).max().unwrap_or(0).max(10);
    let mut out = format!("{:<name$}", "model");
    for c in &conditions {
        out += &format!("  {c:<width$}");
    }
    out += "\n";
    out += &"-".repeat(name + conditions.len() * (width + 2));
    out += "\n";
    for m in &models {
        out += &format!("{m:<name$}");
        for c in &conditions {
            out += &format!("  {:<width$}", cell(m, c));
        }
        out += "\n";
    }
    out += &match seeds {
        0 | 1 => "test accuracy %, one seed".to_string(),
        n => format!("test accuracy %, mean ± sd over {n} seeds"),
    };
    if any_reference {
        out += " (published value in parentheses, - where none)";
    }
    out += "\n";
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
        assert!(t.contains(" 50.0  ( -)"), "one seed: no spread shown\n{t}");
        assert!(t.contains("over 3 seeds (published"), "{t}");
        let t = accuracy_table(&[Row::new("mlp", "original", vec![0.5], None)]);
        assert!(!t.contains('(') && !t.contains('±') && t.contains("one seed"), "nothing published: no column\n{t}");
    }
}
