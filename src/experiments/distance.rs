//! `analyze distance`: accuracy on the recall task against the gap between the queried
//! key-value pair and the query, one curve per model. Each model trains once on the task's
//! mixed gaps, then is tested on fresh sequences at every gap. The CNN's receptive field is
//! marked: beyond it no unit sees both the query and the pair it asks for.

use crate::analysis::plot;
use crate::core::Backend;
use crate::data::recall::RecallConfig;
use crate::data::DatasetSpec;
use crate::error::{Error, Result};
use crate::experiments::grid::{run_grid, Compute, Progress};
use crate::experiments::setup::DataChoice;
use crate::models::{text, ModelKind};
use crate::report::{ensure_dir, write_json, Artifacts};
use crate::train::{TrainConfig, TrainOverrides, Trainer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistanceConfig {
    pub recall: RecallConfig,
    pub models: Vec<ModelKind>,
    /// Gaps tested (None: every gap the sequences allow, 1..=len−2).
    pub gaps: Option<Vec<usize>>,
    /// Test sequences per gap.
    pub per_gap: usize,
    pub seed: u64,
    pub train: TrainOverrides,
    pub compute: Compute,
}

impl Default for DistanceConfig {
    fn default() -> Self {
        Self {
            recall: RecallConfig::default(),
            models: ModelKind::TEXT.to_vec(),
            gaps: None,
            per_gap: 200,
            seed: 0,
            train: TrainOverrides::default(),
            compute: Compute::default(),
        }
    }
}

/// One model's accuracy at each gap.
#[derive(Clone, Debug, Serialize)]
pub struct DistanceCurve {
    pub model: String,
    /// Accuracy on the task's own test split (gaps mixed).
    pub mixed_test_accuracy: f64,
    /// (gap, accuracy).
    pub points: Vec<(usize, f64)>,
    pub wall_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DistanceReport {
    pub recall: RecallConfig,
    pub steps: usize,
    pub per_gap: usize,
    /// The token CNN's receptive field (positions), and the largest gap inside it.
    pub cnn_receptive_field: usize,
    pub largest_gap_in_field: usize,
    /// Chance (1/values), and the score of guessing among the values bound to keys (1/pairs).
    pub chance: f64,
    pub one_of_pairs: f64,
    pub curves: Vec<DistanceCurve>,
    pub wall_seconds: f64,
}

/// The recall task of a data choice: the study runs on it alone, so of the data options only
/// the task's own apply (the dataset left at its default, or `recall`).
pub fn recall_of(choice: &DataChoice) -> Result<RecallConfig> {
    let unset = DataChoice { dataset: choice.dataset.clone(), recall: choice.recall.clone(), ..DataChoice::default() };
    let recall_or_default = matches!(choice.dataset, DatasetSpec::Recall | DatasetSpec::Mnist1d);
    if *choice != unset || !recall_or_default {
        return Err(Error::Config(
            "analyze distance runs on the recall task: of the data options only its own apply".into(),
        ));
    }
    Ok(choice.recall.clone())
}

/// Trains each model on the recall task and tests it at every gap.
pub fn run(cfg: &DistanceConfig, progress: &dyn Progress) -> Result<DistanceReport> {
    cfg.compute.open()?;
    let choice = DataChoice { dataset: DatasetSpec::Recall, recall: cfg.recall.clone(), ..DataChoice::default() };
    let prepared = choice.prepare()?;
    let data = &prepared.data;
    let train = prepared.train_config(&cfg.train, cfg.seed)?;
    let max_gap = cfg.recall.len - 2;
    let gaps = cfg.gaps.clone().unwrap_or_else(|| (1..=max_gap).collect());
    if let Some(g) = gaps.iter().find(|&&g| g == 0 || g > max_gap) {
        return Err(Error::Config(format!("gap {g} is not in 1..={max_gap}")));
    }
    if cfg.models.is_empty() || gaps.is_empty() || cfg.per_gap == 0 || cfg.per_gap > 100_000 {
        return Err(Error::Config("distance needs a model, a gap and 1..=100000 sequences per gap".into()));
    }
    crate::limits::check_distinct("models", &cfg.models)?;
    crate::limits::check_distinct("gaps", &gaps)?;
    let tests = gaps.iter().map(|&g| cfg.recall.at_gap(g, cfg.per_gap)).collect::<Result<Vec<_>>>()?;
    progress.start((cfg.models.len() * train.steps) as u64);
    let start = std::time::Instant::now();
    let curves = run_grid(
        cfg.compute,
        &cfg.models,
        progress,
        |&kind| crate::with_backend!(cfg.compute.device, B => curve::<B>(kind, data, &train, &gaps, &tests, progress)),
    )?;
    let rf = text::cnn_receptive_field();
    Ok(DistanceReport {
        recall: cfg.recall.clone(),
        steps: train.steps,
        per_gap: cfg.per_gap,
        cnn_receptive_field: rf,
        largest_gap_in_field: rf.saturating_sub(2),
        chance: 1.0 / cfg.recall.values as f64,
        one_of_pairs: 1.0 / cfg.recall.pairs as f64,
        curves,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

fn curve<B: Backend>(
    kind: ModelKind,
    data: &crate::data::Dataset,
    train: &TrainConfig,
    gaps: &[usize],
    tests: &[(Vec<f32>, Vec<u32>)],
    progress: &dyn Progress,
) -> Result<DistanceCurve> {
    let start = std::time::Instant::now();
    let mut trainer = Trainer::<B>::for_dataset(kind, data, train.clone())?;
    let result = trainer.fit(data, &mut |s| progress.steps(s))?;
    // the test sequences of one gap at a time (the training split is not copied)
    let mut probe = crate::data::Dataset {
        name: data.name.clone(),
        example_shape: data.example_shape.clone(),
        classes: data.classes,
        vocab: data.vocab,
        x: Vec::new(),
        y: Vec::new(),
        x_test: Vec::new(),
        y_test: Vec::new(),
    };
    let mut points = Vec::with_capacity(gaps.len());
    for (&gap, (x, y)) in gaps.iter().zip(tests) {
        probe.x_test.clone_from(x);
        probe.y_test.clone_from(y);
        points.push((gap, trainer.evaluate(&probe)?.1 as f64));
    }
    progress.note(&format!("finished {}: {:.1}% on mixed gaps", kind.name(), 100.0 * result.final_test_accuracy));
    Ok(DistanceCurve {
        model: kind.name().into(),
        mixed_test_accuracy: result.final_test_accuracy,
        points,
        wall_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The gaps shown in the terminal's table (all are in the JSON and the plot).
fn shown_gaps(report: &DistanceReport) -> Vec<usize> {
    let inside = report.largest_gap_in_field;
    let wanted = [1, 2, 4, 8, inside, inside + 1, inside + 3, 24, 32, 48, report.recall.len - 2];
    let have: Vec<usize> = report.curves.first().map(|c| c.points.iter().map(|p| p.0).collect()).unwrap_or_default();
    let mut out: Vec<usize> = wanted.into_iter().filter(|g| have.contains(g)).collect();
    out.sort();
    out.dedup();
    out
}

impl std::fmt::Display for DistanceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gaps = shown_gaps(self);
        write!(f, "{:<13} {:>6}", "gap", "mixed")?;
        for g in &gaps {
            write!(f, " {g:>5}")?;
        }
        writeln!(f)?;
        for c in &self.curves {
            write!(f, "{:<13} {:>5.1}%", c.model, 100.0 * c.mixed_test_accuracy)?;
            for g in &gaps {
                let acc = c.points.iter().find(|p| p.0 == *g).map(|p| p.1).unwrap_or(f64::NAN);
                write!(f, " {:>5.1}", 100.0 * acc)?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "test accuracy % at each gap ({} sequences a gap) after {} steps; the CNN's receptive field spans {} positions \
             (gaps up to {} inside it); chance {:.1}%, a guess among the {} values bound to keys {:.1}%; {:.1} s",
            self.per_gap,
            self.steps,
            self.cnn_receptive_field,
            self.largest_gap_in_field,
            100.0 * self.chance,
            self.recall.pairs,
            100.0 * self.one_of_pairs,
            self.wall_seconds
        )
    }
}

impl Artifacts for DistanceReport {
    fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ensure_dir(dir)?;
        let (json, svg) = (dir.join("distance.json"), dir.join("distance.svg"));
        write_json(&json, self)?;
        let mut series: Vec<plot::Series> = self
            .curves
            .iter()
            .map(|c| plot::Series {
                name: c.model.clone(),
                points: c.points.iter().map(|&(g, a)| (g as f64, a)).collect(),
            })
            .collect();
        // the edge of the CNN's receptive field, as a vertical line
        let edge = self.largest_gap_in_field as f64 + 0.5;
        series.push(plot::Series {
            name: format!("CNN receptive field ({} positions)", self.cnn_receptive_field),
            points: vec![(edge, 0.0), (edge, 1.0)],
        });
        let title =
            format!("recall: test accuracy against the gap ({} pairs, {} tokens)", self.recall.pairs, self.recall.len);
        plot::line_chart(
            &svg,
            &title,
            ("gap between the queried pair and the query", "test accuracy"),
            &series,
            false,
            (0.0, 1.0),
        )?;
        Ok(vec![json, svg])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::grid::Silent;
    use crate::train::TrainOverrides;

    #[test]
    fn only_the_tasks_own_options_apply() {
        assert!(recall_of(&DataChoice::default()).is_ok());
        let mine = DataChoice {
            dataset: DatasetSpec::Recall,
            recall: RecallConfig { pairs: 3, ..RecallConfig::default() },
            ..DataChoice::default()
        };
        assert_eq!(recall_of(&mine).unwrap().pairs, 3);
        assert!(recall_of(&DataChoice::of(DatasetSpec::Cifar10)).is_err());
        let subset = DataChoice { train_subset: Some(10), ..DataChoice::default() };
        assert!(recall_of(&subset).is_err());
    }

    /// A curve per model with a point per gap asked for; gaps outside the sequence refused.
    #[test]
    fn one_point_per_model_and_gap() {
        let cfg = DistanceConfig {
            recall: RecallConfig { n_train: 200, n_test: 50, len: 16, ..RecallConfig::default() },
            models: vec![ModelKind::Cnn, ModelKind::Bag],
            gaps: Some(vec![1, 5, 14]),
            per_gap: 10,
            train: TrainOverrides { steps: Some(5), ..TrainOverrides::default() },
            ..DistanceConfig::default()
        };
        let r = run(&cfg, &Silent).unwrap();
        assert_eq!((r.cnn_receptive_field, r.largest_gap_in_field), (15, 13));
        assert_eq!(r.curves.iter().map(|c| c.model.as_str()).collect::<Vec<_>>(), ["cnn", "bag"]);
        for c in &r.curves {
            assert_eq!(c.points.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 5, 14]);
            assert!(c.points.iter().all(|p| (0.0..=1.0).contains(&p.1)));
        }
        let far = DistanceConfig { gaps: Some(vec![15]), ..cfg };
        assert!(run(&far, &Silent).unwrap_err().to_string().contains("gap 15"));
    }
}
