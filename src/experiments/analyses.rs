//! The analyses as commands: `analyze receptive-field`, `effective-dim` (of a saved run) and
//! `dimension` (of a dataset). Each is config -> run -> report; the report prints as the
//! terminal table and writes its JSON and plots ([`Artifacts`]).

use crate::analysis::dimension::{self, DimensionReport};
use crate::analysis::effective_dim::{self, EffectiveDimReport, Spectrum};
use crate::analysis::plot;
use crate::analysis::receptive_field::{self, LayerField};
use crate::core::{Backend, Tensor};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiments::grid::Compute;
use crate::experiments::setup::DataChoice;
use crate::report::{ensure_dir, write_json, Artifacts};
use crate::train::checkpoint::{self, LoadedRun};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The first `n` test examples of `data` as one batch tensor.
fn test_batch<B: Backend>(data: &Dataset, n: usize) -> Tensor<B> {
    let n = n.min(data.n_test());
    let mut shape = vec![n];
    shape.extend_from_slice(&data.example_shape);
    Tensor::from_slice(&shape, &data.x_test[..n * data.example_len()])
}

fn load<B: Backend>(run: &Path) -> Result<LoadedRun<B>> {
    checkpoint::load_run(run, checkpoint::FINAL_WEIGHTS)
}

/// `f`'s result, or the error the backend recorded while it ran (a GPU's ops report a
/// failure after the fact, as training checks after each step).
fn checked<B: Backend, T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let out = f();
    B::synchronize();
    match B::take_error() {
        Some(e) => Err(e),
        None => out,
    }
}

/// `analyze receptive-field`: what to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceptiveFieldConfig {
    /// A saved cnn or lcn run.
    pub run: PathBuf,
    /// Test examples the gradients are averaged over.
    pub examples: usize,
    /// The device the gradients are computed on (`parallel_runs` does not apply).
    #[serde(default)]
    pub compute: Compute,
}

/// The theoretical and measured receptive field of each block of a saved run.
#[derive(Clone, Debug, Serialize)]
pub struct ReceptiveFieldReport {
    pub dataset: String,
    pub model: String,
    pub condition: String,
    pub examples: usize,
    pub layers: Vec<LayerField>,
    /// The input's rows and columns.
    #[serde(skip)]
    pub input: (usize, usize),
}

pub fn receptive_field(cfg: &ReceptiveFieldConfig) -> Result<ReceptiveFieldReport> {
    if cfg.examples == 0 {
        return Err(Error::Config("examples must be at least 1".into()));
    }
    let device = cfg.compute.open()?;
    crate::with_backend!(device, B => checked::<B, _>(|| receptive_field_on::<B>(cfg)))
}

fn receptive_field_on<B: Backend>(cfg: &ReceptiveFieldConfig) -> Result<ReceptiveFieldReport> {
    let mut run = load::<B>(&cfg.run)?;
    let x = test_batch::<B>(&run.data, cfg.examples);
    let layers = receptive_field::measure(&mut run.model.net, &x, &run.data.example_shape)?;
    let (h, w, _) = receptive_field::spatial(&run.data.example_shape)?;
    Ok(ReceptiveFieldReport {
        dataset: run.data.name.clone(),
        model: run.saved.model.name().into(),
        condition: run.saved.condition.name().into(),
        examples: x.rows(),
        layers,
        input: (h, w),
    })
}

impl std::fmt::Display for ReceptiveFieldReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.input.0;
        writeln!(
            f,
            "{} {} run ({}), gradients of the central unit averaged over {} test examples:",
            self.dataset, self.model, self.condition, self.examples
        )?;
        writeln!(
            f,
            "{:<6} {:<28} {:>10} {:>12} {:>14} {:>11} {:>11}",
            "block", "layer", "output", "theory", "90% of mass in", "rms radius", "mass inside"
        )?;
        let dims = |a: usize, b: usize| if h == 1 { format!("{b}") } else { format!("{a}x{b}") };
        for (i, l) in self.layers.iter().enumerate() {
            writeln!(
                f,
                "{:<6} {:<28} {:>10} {:>12} {:>14} {:>11.2} {:>10.1}%",
                i + 1,
                l.describe,
                dims(l.output.0, l.output.1),
                dims(l.theory.0.size, l.theory.1.size),
                dims(l.effective_size_90.min(h), l.effective_size_90),
                l.rms_radius,
                l.mass_inside_theory * 100.0
            )?;
        }
        Ok(())
    }
}

impl Artifacts for ReceptiveFieldReport {
    fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ensure_dir(dir)?;
        let (json, svg) = (dir.join("receptive_field.json"), dir.join("receptive_field.svg"));
        write_json(&json, self)?;
        let maps: Vec<plot::HeatMap> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| plot::HeatMap {
                title: format!(
                    "block {}: theory {}x{}, 90% in {}",
                    i + 1,
                    l.theory.0.size,
                    l.theory.1.size,
                    l.effective_size_90
                ),
                rows: self.input.0,
                cols: self.input.1,
                values: l.map.clone(),
                outline: Some(l.window),
            })
            .collect();
        let title = format!(
            "{} {} ({}): |d unit / d input|, theoretical field in red",
            self.dataset, self.model, self.condition
        );
        plot::heat_maps(&svg, &title, &maps)?;
        Ok(vec![json, svg])
    }
}

/// `analyze effective-dim`: what to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EffectiveDimConfig {
    pub run: PathBuf,
    /// Test examples passed through the network.
    pub examples: usize,
    /// Vectors (windows or rows) sampled per spectrum.
    pub samples: usize,
    pub seed: u64,
    /// The device the network runs on (`parallel_runs` does not apply); the spectra are
    /// computed on the CPU.
    #[serde(default)]
    pub compute: Compute,
}

pub fn effective_dim(cfg: &EffectiveDimConfig) -> Result<EffectiveDimReport> {
    if cfg.examples < 2 || cfg.samples < 2 {
        return Err(Error::Config("examples and samples must be at least 2".into()));
    }
    let device = cfg.compute.open()?;
    crate::with_backend!(device, B => checked::<B, _>(|| effective_dim_on::<B>(cfg)))
}

fn effective_dim_on<B: Backend>(cfg: &EffectiveDimConfig) -> Result<EffectiveDimReport> {
    let mut run = load::<B>(&cfg.run)?;
    let n = cfg.examples.min(run.data.n_test());
    let x = test_batch::<B>(&run.data, n);
    let (raw, whole) = effective_dim::input_spectra(
        &run.data.x_test[..n * run.data.example_len()],
        &run.data.example_shape,
        cfg.samples,
        cfg.seed,
    )?;
    let (layers, nonlinearities) = effective_dim::layer_spectra(&mut run.model, &x, cfg.samples, cfg.seed)?;
    Ok(EffectiveDimReport {
        dataset: run.data.name.clone(),
        model: run.saved.model.name().into(),
        condition: run.saved.condition.name().into(),
        raw_patches: raw,
        whole_inputs: whole,
        layers,
        nonlinearities,
    })
}

impl std::fmt::Display for EffectiveDimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = |f: &mut std::fmt::Formatter<'_>, name: &str, s: &Spectrum| {
            writeln!(
                f,
                "{name:<34} {:>6} {:>8} {:>8} {:>8} {:>10.1}",
                s.dimension, s.samples, s.components_90, s.components_99, s.participation_ratio
            )
        };
        writeln!(f, "{} {} run ({}):", self.dataset, self.model, self.condition)?;
        writeln!(
            f,
            "{:<34} {:>6} {:>8} {:>8} {:>8} {:>10}",
            "vectors", "dim", "samples", "PCs 90%", "PCs 99%", "part.ratio"
        )?;
        line(f, "(a) raw patches of the input", &self.raw_patches)?;
        line(f, "(b) whole inputs", &self.whole_inputs)?;
        for l in &self.layers {
            line(f, &format!("(c) {} {}", l.reads, l.describe), &l.spectrum)?;
        }
        writeln!(f, "\nzero outputs of each nonlinearity (|y| <= 1e-6; below 0.1 x RMS):")?;
        for s in &self.nonlinearities {
            writeln!(
                f,
                "    layer {:>2} {:<10} {:5.1}%  {:5.1}%",
                s.index,
                s.describe,
                s.zero_fraction * 100.0,
                s.small_fraction * 100.0
            )?;
        }
        Ok(())
    }
}

impl Artifacts for EffectiveDimReport {
    fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ensure_dir(dir)?;
        let (json, svg) = (dir.join("effective_dim.json"), dir.join("effective_dim.svg"));
        write_json(&json, self)?;
        let xs = |f: &dyn Fn(&Spectrum) -> f64| -> Vec<(f64, f64)> {
            self.layers.iter().enumerate().map(|(i, l)| ((i + 1) as f64, f(&l.spectrum))).collect()
        };
        let ymax = self
            .layers
            .iter()
            .map(|l| l.spectrum.components_99 as f64)
            .fold(self.whole_inputs.components_99 as f64, f64::max);
        let constant = |v: f64| vec![(1.0, v), (self.layers.len().max(2) as f64, v)];
        let series = |name: &str, points| plot::Series { name: name.into(), points };
        plot::line_chart(
            &svg,
            &format!("{} {}: dimensions of what each layer's units read", self.dataset, self.model),
            ("weighted layer", "principal components"),
            &[
                series("unit inputs: 90% of variance", xs(&|s| s.components_90 as f64)),
                series("unit inputs: 99% of variance", xs(&|s| s.components_99 as f64)),
                series("unit inputs: participation ratio", xs(&|s| s.participation_ratio)),
                series("whole input: 90%", constant(self.whole_inputs.components_90 as f64)),
                series("raw patch: 90%", constant(self.raw_patches.components_90 as f64)),
            ],
            false,
            (0.0, ymax * 1.05 + 1.0),
        )?;
        Ok(vec![json, svg])
    }
}

/// `analyze dimension`: what to measure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DimensionConfig {
    pub data: DataChoice,
    /// Points per axis for the d^N arithmetic (the video uses 9).
    pub density: f64,
    /// Training examples kNN may use (a subset keeps brute force fast).
    pub knn_train: usize,
    /// Test examples kNN classifies.
    pub knn_test: usize,
    pub seed: u64,
}

impl Default for DimensionConfig {
    fn default() -> Self {
        Self { data: DataChoice::default(), density: 9.0, knn_train: 5000, knn_test: 1000, seed: 0 }
    }
}

/// The dimension study and the sizes it ran on.
#[derive(Clone, Debug, Serialize)]
pub struct DimensionStudy {
    #[serde(flatten)]
    pub report: DimensionReport,
    #[serde(skip)]
    pub n_train: usize,
    #[serde(skip)]
    pub n_test: usize,
}

pub fn dimension(cfg: &DimensionConfig) -> Result<DimensionStudy> {
    if !(cfg.density.is_finite() && cfg.density > 1.0) {
        return Err(Error::Config("the density must be a number above 1".into()));
    }
    if cfg.knn_train == 0 || cfg.knn_test == 0 {
        return Err(Error::Config("kNN needs at least one training and one test example".into()));
    }
    let mut data = cfg.data.prepare()?.data;
    data.truncate_train(cfg.knn_train);
    data.truncate_test(cfg.knn_test);
    let report = dimension::analyze(&data, cfg.density, cfg.seed)?;
    Ok(DimensionStudy { report, n_train: data.n_train(), n_test: data.n_test() })
}

impl std::fmt::Display for DimensionStudy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.report;
        writeln!(f, "(a) points to fill an input at {} per axis:", r.density)?;
        for c in &r.fill_costs {
            writeln!(f, "    {:<24} N = {:>5}   10^{:.1}", c.input, c.dimension, c.log10_points)?;
        }
        writeln!(f, "(b-i) 1-NN on {} ({} train / {} test), by resolution:", r.dataset, self.n_train, self.n_test)?;
        for p in &r.resolutions {
            writeln!(
                f,
                "    {:>7} (N = {:>5})  accuracy {:5.1}%  nearest/farthest {:.3}",
                p.size,
                p.dimension,
                p.knn.accuracy * 100.0,
                p.knn.nearest_to_farthest
            )?;
        }
        writeln!(f, "(b-ii) intrinsic dimension 2 embedded in ambient dimension D (2000 examples):")?;
        for p in &r.fixed_intrinsic {
            writeln!(f, "    D = {:>4}  accuracy {:5.1}%", p.ambient, p.knn.accuracy * 100.0)?;
        }
        writeln!(f, "(b-iii) training examples 1-NN needs for 90% on the prototype task:")?;
        for s in &r.samples_needed {
            let n = s.examples.map(|n| n.to_string()).unwrap_or_else(|| "> 10000".into());
            writeln!(f, "    dimension {:>2}: {n}", s.dimension)?;
        }
        Ok(())
    }
}

impl Artifacts for DimensionStudy {
    fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ensure_dir(dir)?;
        let r = &self.report;
        let (json, svg, samples) = (dir.join("dimension.json"), dir.join("dimension.svg"), dir.join("samples.svg"));
        write_json(&json, self)?;
        let series = |name: &str, pts: Vec<(f64, f64)>| plot::Series { name: name.into(), points: pts };
        let res: Vec<(f64, f64)> = r.resolutions.iter().map(|p| (p.dimension as f64, p.knn.accuracy)).collect();
        let ratio: Vec<(f64, f64)> =
            r.resolutions.iter().map(|p| (p.dimension as f64, p.knn.nearest_to_farthest)).collect();
        let amb: Vec<(f64, f64)> = r.fixed_intrinsic.iter().map(|p| (p.ambient as f64, p.knn.accuracy)).collect();
        plot::line_chart(
            &svg,
            &format!("1-NN on {} and a 2-D task in growing ambient dimension", r.dataset),
            ("input dimension", "accuracy / nearest:farthest distance"),
            &[
                series("kNN accuracy, pooled inputs", res),
                series("nearest/farthest distance, pooled inputs", ratio),
                series("kNN accuracy, intrinsic dim 2", amb),
            ],
            true,
            (0.0, 1.0),
        )?;
        let needed: Vec<plot::Series> = r
            .samples_needed
            .iter()
            .map(|s| {
                series(
                    &format!("dimension {}", s.dimension),
                    s.curve.iter().map(|p| (p.train_examples as f64, p.knn.accuracy)).collect(),
                )
            })
            .collect();
        plot::line_chart(
            &samples,
            "1-NN accuracy against training examples, by intrinsic dimension",
            ("training examples", "test accuracy"),
            &needed,
            true,
            (0.0, 1.0),
        )?;
        Ok(vec![json, svg, samples])
    }
}
