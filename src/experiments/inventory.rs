//! `models` (each model's size and cost on a dataset) and `data export` (MNIST-1D as NumPy
//! files for Python).

use crate::core::{Cpu, Layer};
use crate::data::mnist1d::{Mnist1dConfig, Mnist1dOverrides};
use crate::data::npy;
use crate::error::Result;
use crate::experiments::setup::DataChoice;
use crate::models::{Model, ModelKind};
use crate::report::ensure_dir;
use crate::train::{rng_for, streams};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One model built for a dataset.
#[derive(Clone, Debug, Serialize)]
pub struct ModelEntry {
    pub model: ModelKind,
    pub params: usize,
    pub flops_per_example: u64,
    pub summary: &'static str,
    pub layers: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelsReport {
    pub dataset: String,
    pub example_shape: Vec<usize>,
    pub classes: usize,
    pub models: Vec<ModelEntry>,
}

/// Builds every model for the data of `choice` (with the recipe's architecture).
pub fn models(choice: &DataChoice) -> Result<ModelsReport> {
    let prepared = choice.prepare()?;
    let data = &prepared.data;
    let image = data.example_shape.len() == 3;
    let models = ModelKind::ALL
        .iter()
        .filter(|k| !(image && k.sequences_only()))
        .map(|&kind| {
            let mut rng = rng_for(0, streams::INIT);
            let model = Model::<Cpu>::build_for(kind, data, &prepared.recipe.train.arch, &mut rng)?;
            Ok(ModelEntry {
                model: kind,
                params: model.param_count(),
                flops_per_example: model.flops_per_example(),
                summary: kind.summary(),
                layers: model.net.describe(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ModelsReport {
        dataset: data.name.clone(),
        example_shape: data.example_shape.clone(),
        classes: data.classes,
        models,
    })
}

impl std::fmt::Display for ModelsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} examples of shape {:?}, {} classes\n", self.dataset, self.example_shape, self.classes)?;
        writeln!(f, "{:<9} {:>9} {:>12}  what it is", "model", "params", "FLOPs/ex")?;
        for m in &self.models {
            writeln!(f, "{:<9} {:>9} {:>12}  {}", m.model.name(), m.params, m.flops_per_example, m.summary)?;
            writeln!(f, "{:<9} {}", "", m.layers)?;
        }
        Ok(())
    }
}

/// Writes MNIST-1D (the default generator with `changes`) as `x.npy`, `y.npy`, `x_test.npy`,
/// `y_test.npy` into `out` (created if missing); returns the files and the split sizes.
pub fn export_mnist1d(changes: &Mnist1dOverrides, out: &Path) -> Result<(Vec<PathBuf>, usize, usize, usize)> {
    let d = changes.apply(&Mnist1dConfig::default()).generate()?;
    ensure_dir(out)?;
    let len = d.length;
    let x: Vec<f32> = d.x.iter().map(|&v| v as f32).collect();
    let xt: Vec<f32> = d.x_test.iter().map(|&v| v as f32).collect();
    let y: Vec<i64> = d.y.iter().map(|&v| v as i64).collect();
    let yt: Vec<i64> = d.y_test.iter().map(|&v| v as i64).collect();
    let names = ["x.npy", "y.npy", "x_test.npy", "y_test.npy"];
    // all four written first (a full disk stops here, before any old file is replaced), then
    // renamed into place together
    let tmp = out.join(format!(".export-tmp-{}", std::process::id()));
    let written = (|| {
        ensure_dir(&tmp)?;
        npy::write_f32(&tmp.join(names[0]), &[y.len(), len], &x)?;
        npy::write_i64(&tmp.join(names[1]), &[y.len()], &y)?;
        npy::write_f32(&tmp.join(names[2]), &[yt.len(), len], &xt)?;
        npy::write_i64(&tmp.join(names[3]), &[yt.len()], &yt)?;
        for n in names {
            std::fs::rename(tmp.join(n), out.join(n)).map_err(|e| crate::Error::io("renaming into", out.join(n), e))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    written?;
    Ok((names.iter().map(|n| out.join(n)).collect(), y.len(), yt.len(), len))
}
