//! A sweep's spec, as a user writes it (TOML or JSON): the experiment `reproduce` runs (the
//! same fields as its `reproduce.json`: data, models, conditions, seeds, train) and the axes
//! that vary beyond it (datasets, training-set sizes). An empty spec is the default table.
//!
//! ```toml
//! name = "mnist1d-data-size"
//! models = ["cnn", "mlp"]
//! seeds = 3
//! train_sizes = [500, 1000, 2000, 4000]
//! [train]
//! steps = 3000
//! ```

use crate::data::{Condition, DatasetSpec};
use crate::error::{Error, Result};
use crate::experiments::setup::DataChoice;
use crate::models::ModelKind;
use crate::train::TrainOverrides;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Largest spec file read (a spec is a few lines; a huge file is a mistake).
const MAX_SPEC_BYTES: u64 = 1 << 20;

/// What to sweep: a base experiment and its axes. Unknown fields are refused (a typo would
/// otherwise silently run the default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepSpec {
    /// The sweep's name (its Slurm job name; default: the spec file's name).
    pub name: Option<String>,
    /// The base data choice (`data.dataset` unless `datasets` is given).
    pub data: DataChoice,
    /// Changes to each table's recipe.
    pub train: TrainOverrides,
    /// Models (None: each dataset's recipe's).
    pub models: Option<Vec<ModelKind>>,
    pub conditions: Vec<Condition>,
    /// Seeds per cell (None: the recipe's); seed `k` is `base_seed + k`.
    pub seeds: Option<usize>,
    pub base_seed: u64,
    /// Axis: datasets, one table each (None: `data.dataset`).
    pub datasets: Option<Vec<DatasetSpec>>,
    /// Axis: training-set sizes, one table each (None: `data.train_subset`); each size gets
    /// its recipe (epochs count the examples trained on).
    pub train_sizes: Option<Vec<usize>>,
    /// Each task writes a checkpoint every N steps, from which a killed task continues.
    pub checkpoint_every: Option<usize>,
}

impl Default for SweepSpec {
    /// The default table: MNIST-1D, every model, original and permuted, the recipe's seeds.
    fn default() -> Self {
        Self {
            name: None,
            data: DataChoice::default(),
            train: TrainOverrides::default(),
            models: None,
            conditions: vec![Condition::Original, Condition::Permuted],
            seeds: None,
            base_seed: 0,
            datasets: None,
            train_sizes: None,
            checkpoint_every: None,
        }
    }
}

impl SweepSpec {
    /// Reads a spec file: `.toml` or `.json`. Errors name the file and, for TOML, the line.
    pub fn load(path: &Path) -> Result<Self> {
        let malformed = |reason: String| Error::Malformed { path: path.into(), reason };
        let meta = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?;
        if meta.len() > MAX_SPEC_BYTES {
            return Err(malformed(format!("{} bytes is too large for a sweep spec", meta.len())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let mut spec: SweepSpec = match ext.as_str() {
            "toml" => toml::from_str(&text).map_err(|e| malformed(toml_error(&text, &e)))?,
            "json" => serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?,
            _ => return Err(malformed("a sweep spec is a .toml or .json file".into())),
        };
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The sweep's name as a scheduler takes it (letters, digits, `-`, `_`, `.`).
    pub fn job_name(&self) -> String {
        let name = self.name.as_deref().unwrap_or("sweep");
        let clean: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
        if clean.is_empty() {
            "sweep".into()
        } else {
            clean.chars().take(64).collect()
        }
    }

    /// Refuses axes that are empty or repeat a value (a repeated value would run the same
    /// task twice), and a zero checkpoint interval.
    pub fn validate(&self) -> Result<()> {
        fn distinct<T: PartialEq + std::fmt::Debug>(what: &str, list: &[T]) -> Result<()> {
            if list.is_empty() {
                return Err(Error::Config(format!("the sweep's {what} list is empty")));
            }
            for (i, v) in list.iter().enumerate() {
                if list[..i].contains(v) {
                    return Err(Error::Config(format!("the sweep's {what} list names {v:?} twice")));
                }
            }
            Ok(())
        }
        if let Some(m) = &self.models {
            distinct("models", m)?;
        }
        distinct("conditions", &self.conditions)?;
        if let Some(d) = &self.datasets {
            distinct("datasets", d)?;
        }
        if let Some(sizes) = &self.train_sizes {
            distinct("train_sizes", sizes)?;
            if sizes.contains(&0) {
                return Err(Error::Config("a training-set size must be at least 1".into()));
            }
        }
        if self.seeds == Some(0) {
            return Err(Error::Config("a sweep needs at least one seed".into()));
        }
        if self.checkpoint_every == Some(0) {
            return Err(Error::Config("checkpoint_every must be at least 1 step".into()));
        }
        Ok(())
    }

    /// The data choice of each table, in order: datasets outer, training-set sizes inner.
    pub fn tables(&self) -> Vec<DataChoice> {
        let datasets = self.datasets.clone().unwrap_or_else(|| vec![self.data.dataset.clone()]);
        let sizes: Vec<Option<usize>> = match &self.train_sizes {
            Some(s) => s.iter().map(|&n| Some(n)).collect(),
            None => vec![self.data.train_subset],
        };
        let mut out = Vec::new();
        for d in &datasets {
            for &n in &sizes {
                out.push(DataChoice { dataset: d.clone(), train_subset: n, ..self.data.clone() });
            }
        }
        out
    }
}

/// A TOML error as one line: `line L: message`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, ext: &str) -> Result<SweepSpec> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("spec.{ext}"));
        std::fs::write(&path, text).unwrap();
        SweepSpec::load(&path)
    }

    #[test]
    fn an_empty_spec_is_the_default_table_named_after_its_file() {
        let spec = parse("", "toml").unwrap();
        assert_eq!(spec, SweepSpec { name: Some("spec".into()), ..SweepSpec::default() });
        assert_eq!(spec.tables(), vec![DataChoice::default()]);
    }

    #[test]
    fn toml_and_json_read_the_same_spec() {
        let toml = "name = \"t\"\nmodels = [\"cnn\", \"mlp\"]\nseeds = 2\ntrain_sizes = [100, 200]\n[train]\nsteps = 30\n[data.mnist1d]\nnum_samples = 600\n";
        let json = r#"{"name": "t", "models": ["cnn", "mlp"], "seeds": 2, "train_sizes": [100, 200],
            "train": {"steps": 30}, "data": {"mnist1d": {"num_samples": 600}}}"#;
        let (a, b) = (parse(toml, "toml").unwrap(), parse(json, "json").unwrap());
        assert_eq!(a, b);
        assert_eq!(a.models, Some(vec![ModelKind::Cnn, ModelKind::Mlp]));
        let tables = a.tables();
        assert_eq!(tables.len(), 2);
        assert_eq!((tables[0].train_subset, tables[1].train_subset), (Some(100), Some(200)));
        assert_eq!(tables[1].mnist1d.num_samples, Some(600));
    }

    #[test]
    fn typos_empty_axes_and_repeats_are_refused_with_the_line() {
        let e = parse("seeds = 2\nmodel = [\"cnn\"]\n", "toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("unknown field `model`"), "{e}");
        let e = parse("[train]\nstep = 3\n", "toml").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("unknown field `step`"), "{e}");
        let e = parse("models = []\n", "toml").unwrap_err().to_string();
        assert!(e.contains("models list is empty"), "{e}");
        let e = parse("models = [\"cnn\", \"cnn\"]\n", "toml").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse("train_sizes = [0]\n", "toml").unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e = parse("models = [\"resnet\"]\n", "toml").unwrap_err().to_string();
        assert!(e.contains("resnet"), "{e}");
        let e = parse("seeds = 1", "yaml").unwrap_err().to_string();
        assert!(e.contains(".toml or .json"), "{e}");
    }

    #[test]
    fn job_names_keep_only_what_a_scheduler_takes() {
        let spec = SweepSpec { name: Some("cifar 10/full run".into()), ..SweepSpec::default() };
        assert_eq!(spec.job_name(), "cifar-10-full-run");
    }
}
