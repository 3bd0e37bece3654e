//! Saved runs and weight files.
//!
//! A run directory holds `run.json` ([`SavedRun`](crate::train::checkpoint::SavedRun): the data, the model, the condition, the
//! training config and the result) and two weight files in the safetensors format:
//! `init.safetensors` (the weights before training: lottery tickets rewind to them) and
//! `final.safetensors`. Tensors are named `param.<index>.<name>` (index: visit order, three
//! digits) and `buffer.<index>.<name>` (BatchNorm running statistics), so a file can be read
//! from Python with `safetensors.numpy.load_file`. Masks for `train --mask` use the parameter
//! names with 0/1 values; a parameter without an entry is not masked.

use crate::core::{Backend, Layer, Tensor};
use crate::data::{Condition, DataSource, Dataset};
use crate::error::{Error, Result};
use crate::models::{ImageArch, Model, ModelKind};
use crate::report::{read_text_at_most, MAX_CONFIG_BYTES};
use crate::train::{rng_for, streams, PositionPermutation, TrainConfig};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

pub const RUN_FILE: &str = "run.json";
pub const INIT_WEIGHTS: &str = "init.safetensors";
pub const FINAL_WEIGHTS: &str = "final.safetensors";

/// What a saved run was: enough to rebuild its data, its model and its permutation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedRun {
    pub data: DataSource,
    pub model: ModelKind,
    pub condition: Condition,
    pub seed: u64,
    pub config: TrainConfig,
    pub final_test_accuracy: f64,
}

/// A loaded run: its description, its data under its condition and its trained model.
pub struct LoadedRun<B: Backend> {
    pub saved: SavedRun,
    /// The data as the run saw it (permuted if the run's condition permutes).
    pub data: Dataset,
    pub permutation: PositionPermutation,
    pub model: Model<B>,
}

/// A named tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn param_key(i: usize, name: &str) -> String {
    format!("param.{i:03}.{name}")
}

/// Every parameter of `net` in visit order, with its file name.
pub fn params<B: Backend>(net: &dyn Layer<B>) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    net.visit_params_ref(&mut |p| {
        out.push(NamedTensor {
            name: param_key(out.len(), p.name),
            shape: p.value.shape().to_vec(),
            values: p.value.to_vec(),
        })
    });
    out
}

/// Parameters then buffers: the whole state of `net`.
pub fn state<B: Backend>(net: &dyn Layer<B>) -> Vec<NamedTensor> {
    let mut out = params(net);
    let mut i = 0;
    net.visit_buffers_ref(&mut |name, t| {
        out.push(NamedTensor { name: format!("buffer.{i:03}.{name}"), shape: t.shape().to_vec(), values: t.to_vec() });
        i += 1;
    });
    out
}

/// Writes tensors as a safetensors file (atomically).
pub fn write_tensors(path: &Path, tensors: &[NamedTensor], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| {
            TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::Malformed { path: path.into(), reason: e.to_string() })
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, metadata)
        .map_err(|e| Error::Malformed { path: path.into(), reason: e.to_string() })?;
    crate::report::write_atomic(path, &data)
}

/// Reads every f32 tensor of a safetensors file and its metadata.
pub fn read_tensors_with_metadata(path: &Path) -> Result<(HashMap<String, NamedTensor>, HashMap<String, String>)> {
    let tensors = read_tensors(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::Malformed { path: path.into(), reason: format!("not a safetensors file ({e})") })?;
    Ok((tensors, meta.metadata().clone().unwrap_or_default()))
}

/// Reads every f32 tensor of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, NamedTensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let bad = |reason: String| Error::Malformed { path: path.into(), reason };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name} is {:?}, expected F32", view.dtype())));
        }
        let values: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name.clone(), NamedTensor { name, shape: view.shape().to_vec(), values });
    }
    Ok(out)
}

/// Saves the whole state of `net` (parameters and buffers).
pub fn save_state<B: Backend>(net: &dyn Layer<B>, path: &Path) -> Result<()> {
    write_tensors(path, &state(net), None)
}

/// Loads a state saved by [`save_state`] into `net`; every tensor must be present with the
/// same shape (a file from another architecture is refused, nothing is changed).
pub fn load_state<B: Backend>(net: &mut dyn Layer<B>, path: &Path) -> Result<()> {
    let file = read_tensors(path)?;
    if let Some(t) = file.values().find(|t| t.values.iter().any(|v| !v.is_finite())) {
        return Err(Error::Malformed {
            path: path.into(),
            reason: format!("{} holds non-finite values (NaN or infinity): not a usable model", t.name),
        });
    }
    set_state(net, &file).map_err(|reason| Error::Malformed { path: path.into(), reason })
}

/// Sets parameters and buffers of `net` from tensors named as [`state`] names them; tensors
/// of `net` missing from `tensors` are an error unless they are buffers and `tensors` holds
/// parameters only (then buffers are left alone). Nothing changes on error.
pub fn set_state<B: Backend>(
    net: &mut dyn Layer<B>,
    tensors: &HashMap<String, NamedTensor>,
) -> std::result::Result<(), String> {
    let expected = state(net);
    let has_buffers = tensors.keys().any(|k| k.starts_with("buffer."));
    for t in &expected {
        match tensors.get(&t.name) {
            None if t.name.starts_with("buffer.") && !has_buffers => {}
            None => return Err(format!("missing tensor {} (is it a checkpoint of this model?)", t.name)),
            Some(f) if f.shape != t.shape => {
                return Err(format!("tensor {} has shape {:?}, the model needs {:?}", t.name, f.shape, t.shape))
            }
            Some(_) => {}
        }
    }
    let mut i = 0;
    net.visit_params(&mut |p| {
        if let Some(f) = tensors.get(&param_key(i, p.name)) {
            p.value = Tensor::from_slice(&f.shape, &f.values);
        }
        i += 1;
    });
    let mut j = 0;
    net.visit_buffers(&mut |name, t| {
        if let Some(f) = tensors.get(&format!("buffer.{j:03}.{name}")) {
            *t = Tensor::from_slice(&f.shape, &f.values);
        }
        j += 1;
    });
    Ok(())
}

/// Tensors by name.
pub fn by_name(tensors: Vec<NamedTensor>) -> HashMap<String, NamedTensor> {
    tensors.into_iter().map(|t| (t.name.clone(), t)).collect()
}

/// Reads a mask file for `net`: one entry per parameter (in visit order), `None` where the
/// file has no mask for it. Values must be 0 or 1 and shapes must match.
pub fn load_masks<B: Backend>(net: &dyn Layer<B>, path: &Path) -> Result<Vec<Option<Vec<f32>>>> {
    let file = read_tensors(path)?;
    let params = params(net);
    let bad = |reason: String| Error::Malformed { path: path.into(), reason };
    for name in file.keys() {
        if !params.iter().any(|p| &p.name == name) {
            return Err(bad(format!("mask {name} names no parameter of this model")));
        }
    }
    params
        .iter()
        .map(|p| match file.get(&p.name) {
            None => Ok(None),
            Some(m) if m.shape != p.shape => {
                Err(bad(format!("mask {} has shape {:?}, the parameter {:?}", p.name, m.shape, p.shape)))
            }
            Some(m) if m.values.iter().any(|&v| v != 0.0 && v != 1.0) => {
                Err(bad(format!("mask {} holds values other than 0 and 1", p.name)))
            }
            Some(m) => Ok(Some(m.values.clone())),
        })
        .collect()
}

/// Writes masks (aligned with the parameters of `net`; `None`: unmasked), with the model and
/// architecture they belong to in the file's metadata (so `train --mask` rebuilds that network).
pub fn save_masks<B: Backend>(
    net: &dyn Layer<B>,
    masks: &[Option<Vec<f32>>],
    made_for: Option<(ModelKind, &ImageArch)>,
    path: &Path,
) -> Result<()> {
    let tensors: Vec<NamedTensor> = params(net)
        .into_iter()
        .zip(masks)
        .filter_map(|(p, m)| m.as_ref().map(|m| NamedTensor { name: p.name, shape: p.shape, values: m.clone() }))
        .collect();
    let metadata = match made_for {
        Some((model, arch)) => {
            let arch = serde_json::to_string(arch).map_err(|e| Error::Json { path: path.into(), source: e })?;
            Some(HashMap::from([("model".to_string(), model.name().to_string()), ("arch".to_string(), arch)]))
        }
        None => None,
    };
    write_tensors(path, &tensors, metadata)
}

/// The model and architecture a mask file was made for (None: a file without that metadata).
pub fn mask_made_for(path: &Path) -> Result<Option<(ModelKind, ImageArch)>> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("no mask file at {}", path.display())),
        _ => Error::io("reading", path, e),
    })?;
    let bad = |reason: String| Error::Malformed { path: path.into(), reason };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let Some(map) = meta.metadata() else { return Ok(None) };
    match (map.get("model"), map.get("arch")) {
        (Some(model), Some(arch)) => {
            let model: ModelKind = model.parse().map_err(|e: Error| bad(e.to_string()))?;
            let arch: ImageArch = serde_json::from_str(arch).map_err(|e| bad(format!("its architecture: {e}")))?;
            Ok(Some((model, arch)))
        }
        _ => Ok(None),
    }
}

/// Writes `run.json` into `dir` (created if missing).
pub fn save_run(dir: &Path, run: &SavedRun) -> Result<()> {
    crate::report::ensure_dir(dir)?;
    crate::report::write_json(&dir.join(RUN_FILE), run)
}

/// Reads `run.json` of a run directory.
pub fn read_run(dir: &Path) -> Result<SavedRun> {
    let path = dir.join(RUN_FILE);
    let text = read_text_at_most(&path, MAX_CONFIG_BYTES).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if !dir.is_dir() => Error::NotFound(format!(
            "no saved run at {}: make one with `cnnlab train --model MODEL --save {}`",
            dir.display(),
            dir.display()
        )),
        std::io::ErrorKind::NotFound => Error::NotFound(format!(
            "{} has no {RUN_FILE}: pass a directory written by `cnnlab train --save DIR`",
            dir.display()
        )),
        _ => Error::io("reading", &path, e),
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path, source })
}

/// Loads a run: its data (under its condition), its model with the weights of `weights`
/// (`final.safetensors` or `init.safetensors`).
pub fn load_run<B: Backend>(dir: &Path, weights: &str) -> Result<LoadedRun<B>> {
    let saved = read_run(dir)?;
    let base = saved.data.load()?;
    let (data, permutation) = super::condition_for_run(saved.condition, &base, &saved.config, saved.seed);
    let mut init = rng_for(saved.config.seed, streams::INIT);
    let mut model = Model::build_for(saved.model, &data, &saved.config.arch, &mut init)?;
    load_state(&mut model.net, &dir.join(weights))?;
    Ok(LoadedRun { saved, data, permutation, model })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::init::InitRng;
    use crate::core::{Cpu, Mode};
    use crate::models::ImageArch;
    use rand::SeedableRng;

    fn cnn() -> Model<Cpu> {
        let mut arch = ImageArch::small();
        arch.cnn_widths = vec![4, 6];
        arch.pool_after = vec![0];
        Model::build_with(ModelKind::Cnn, &[8, 8, 1], 3, &arch, &mut InitRng::seed_from_u64(1)).unwrap()
    }

    #[test]
    fn state_round_trips_with_batch_norm_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = cnn();
        let x = Tensor::<Cpu>::from_slice(&[2, 8, 8, 1], &crate::core::gradcheck::random_input(128, 3, 0.0));
        let mut y = Tensor::empty();
        a.net.forward(&x, &mut y, Mode::Train); // moves the running statistics
        let path = dir.path().join("w.safetensors");
        save_state(&a.net, &path).unwrap();
        let mut b = cnn();
        b.net.visit_params(&mut |p| p.value.buf_mut().iter_mut().for_each(|v| *v = 0.0));
        load_state(&mut b.net, &path).unwrap();
        assert_eq!(state(&a.net), state(&b.net));
        let (mut ya, mut yb) = (Tensor::empty(), Tensor::empty());
        a.net.forward(&x, &mut ya, Mode::Eval);
        b.net.forward(&x, &mut yb, Mode::Eval);
        assert_eq!(ya.to_vec(), yb.to_vec());
        assert!(state(&a.net).iter().any(|t| t.name.ends_with("running_mean")));
    }

    #[test]
    fn wrong_architecture_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_state(&cnn().net, &path).unwrap();
        let mut mlp = Model::<Cpu>::build(ModelKind::Mlp, &[8, 8, 1], 3, &mut InitRng::seed_from_u64(1)).unwrap();
        let before = state(&mlp.net);
        let err = load_state(&mut mlp.net, &path).unwrap_err().to_string();
        assert!(err.contains("shape") || err.contains("missing"), "{err}");
        assert_eq!(before, state(&mlp.net), "a refused file changes nothing");
        std::fs::write(&path, b"not a tensor file").unwrap();
        assert!(load_state(&mut cnn().net, &path).unwrap_err().to_string().contains("safetensors"));
    }

    #[test]
    fn masks_round_trip_and_bad_masks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let net = cnn().net;
        let n = params(&net).len();
        let first_len = params(&net)[0].values.len();
        let mut masks: Vec<Option<Vec<f32>>> = vec![None; n];
        masks[0] = Some((0..first_len).map(|i| (i % 2) as f32).collect());
        save_masks(&net, &masks, None, &path).unwrap();
        assert_eq!(load_masks(&net, &path).unwrap(), masks);
        let bad = vec![NamedTensor {
            name: params(&net)[0].name.clone(),
            shape: params(&net)[0].shape.clone(),
            values: vec![0.5; first_len],
        }];
        write_tensors(&path, &bad, None).unwrap();
        assert!(load_masks(&net, &path).unwrap_err().to_string().contains("other than 0 and 1"));
        let bad = vec![NamedTensor { name: "param.999.weight".into(), shape: vec![1], values: vec![1.0] }];
        write_tensors(&path, &bad, None).unwrap();
        assert!(load_masks(&net, &path).unwrap_err().to_string().contains("names no parameter"));
    }
}
