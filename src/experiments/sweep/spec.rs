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
        let text = crate::report::read_text_at_most(path, MAX_SPEC_BYTES).map_err(|e| match e.kind() {
            std::io::ErrorKind::FileTooLarge => malformed(format!("too large for a sweep spec ({e})")),
            _ => Error::io("reading", path, e),
        })?;
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
    /// task twice), a zero checkpoint interval, and a sweep of more than
    /// [`MAX_RUNS`](crate::limits::MAX_RUNS) tasks, counted before any data is loaded or any
    /// table built (a short spec can name millions of tables: datasets times training-set sizes).
    pub fn validate(&self) -> Result<()> {
        fn distinct<T: Eq + std::hash::Hash + std::fmt::Display>(what: &str, list: &[T]) -> Result<()> {
            if list.is_empty() {
                return Err(Error::Config(format!("the sweep's {what} list is empty")));
            }
            crate::limits::check_distinct(&format!("sweep's {what}"), list)
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
        // the fewest tasks the spec makes: where it leaves models or seeds to each dataset's
        // recipe, at least one of each
        crate::limits::check_run_count(
            "the sweep",
            &[
                ("datasets", self.datasets.as_ref().map_or(1, Vec::len)),
                ("training-set sizes", self.train_sizes.as_ref().map_or(1, Vec::len)),
                ("models", self.models.as_ref().map_or(1, Vec::len)),
                ("conditions", self.conditions.len()),
                ("seeds", self.seeds.unwrap_or(1)),
            ],
        )
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

    /// A spec of a few hundred kilobytes can multiply out to a billion tables (datasets times
    /// training-set sizes): it is refused from the counts alone, before a table is built (built,
    /// they took 24 GB and the process was killed). A long axis within the limit is accepted,
    /// and a repeat at its end still found.
    #[test]
    fn sweeps_beyond_the_task_limit_are_refused_before_any_table_is_built() {
        let list = |n: usize, item: &dyn Fn(usize) -> String| (0..n).map(item).collect::<Vec<_>>().join(",");
        let text = format!(
            "datasets = [{}]\ntrain_sizes = [{}]\n",
            list(30_000, &|i| format!("\"folder:d{i}\"")),
            list(30_000, &|i| (i + 1).to_string())
        );
        let spec: SweepSpec = toml::from_str(&text).unwrap();
        let e = spec.validate().unwrap_err().to_string();
        assert!(
            e.contains("the sweep makes more than 100000 runs")
                && e.contains("30000 datasets x 30000 training-set sizes x 2 conditions"),
            "{e}"
        );
        let e = parse(&format!("{text}conditions = [\"original\"]\nmodels = [\"mlp\"]\n"), "toml").unwrap_err();
        assert!(e.to_string().contains("split it up"), "{e}");

        // the most tasks the limit allows, along one axis: valid
        let sizes: Vec<usize> = (1..=crate::limits::MAX_RUNS).collect();
        let one = |sizes: Vec<usize>| SweepSpec {
            conditions: vec![Condition::Original],
            models: Some(vec![ModelKind::Mlp]),
            train_sizes: Some(sizes),
            ..SweepSpec::default()
        };
        one(sizes.clone()).validate().unwrap();
        let mut repeated = sizes;
        *repeated.last_mut().unwrap() = 7;
        let e = one(repeated).validate().unwrap_err().to_string();
        assert!(e.contains("train_sizes list names 7 twice"), "{e}");
        // counts whose product overflows are refused, not wrapped
        let mut seeds = one(vec![1, 2]);
        seeds.seeds = Some(usize::MAX);
        let e = seeds.validate().unwrap_err().to_string();
        assert!(e.contains(&format!("2 training-set sizes x {} seeds", usize::MAX)), "{e}");
    }

    /// A spec is read up to its limit, whatever the file: `/dev/zero` has no size to look up.
    #[test]
    fn an_endless_file_is_refused_as_a_spec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endless.toml");
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = SweepSpec::load(&path).unwrap_err().to_string();
        assert!(e.contains("too large for a sweep spec"), "{e}");
    }

    #[test]
    fn job_names_keep_only_what_a_scheduler_takes() {
        let spec = SweepSpec { name: Some("cifar 10/full run".into()), ..SweepSpec::default() };
        assert_eq!(spec.job_name(), "cifar-10-full-run");
    }
}
