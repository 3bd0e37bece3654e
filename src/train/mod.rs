//! The training loop: minibatch SGD-family training with periodic evaluation on the test set.
//!
//! Every buffer (batch, activations, gradients, optimizer state) is created during the first
//! step and first evaluation and reused after, so the steady-state step does not allocate.
//! Randomness (initialisation, batch order) flows from [`TrainConfig::seed`].

use crate::core::cpu::Cpu;
use crate::core::init::InitRng;
use crate::core::ops::cross_entropy::CrossEntropy;
use crate::core::ops::gather_batch::{BatchPlan, ExampleGeom};
use crate::core::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::core::tensor::Shape;
use crate::core::{Backend, Device, Layer, Mode, Tensor};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::{ImageArch, Model, ModelKind};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Streams drawn from the one run seed, so each random choice is independent of the others.
pub mod sampler;

/// Saved runs, weight files and masks.
pub mod checkpoint;

/// Optional changes to a recipe's config.
pub mod overrides;

pub use overrides::{BatchOrder, TrainOverrides};

pub use sampler::{Augment, BatchSampler, PositionPermutation};

pub mod streams {
    pub const INIT: u64 = 1;
    pub const BATCHES: u64 = 2;
    pub const CONDITION: u64 = 3;
}

/// A generator for one purpose (`stream`) of run `seed`.
pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Hyper-parameters of one training run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    /// Evaluate on the test set every this many steps (and at the end).
    pub eval_every: usize,
    pub seed: u64,
    /// Augmentation of training images (none for sequences).
    #[serde(default)]
    pub augment: Option<Augment>,
    /// Architecture of image models (sequence models have fixed architectures).
    #[serde(default = "ImageArch::small")]
    pub arch: ImageArch,
    /// Prepare the next batch on a second thread while the current one trains.
    #[serde(default)]
    pub prefetch: bool,
    /// Reshuffle the training set every epoch (false: the same order every epoch, batch k
    /// holds examples k·b .. (k+1)·b, as the MNIST-1D notebooks' training loop does).
    #[serde(default = "TrainConfig::default_shuffle")]
    pub shuffle: bool,
}

impl TrainConfig {
    fn default_shuffle() -> bool {
        true
    }

    /// The MNIST-1D recipe: Adam 1e-2, batch 100, 6000 steps, the same batch order every epoch
    /// (the notebook's loop, the protocol of the published numbers).
    pub fn mnist1d() -> Self {
        Self {
            steps: 6000,
            batch_size: 100,
            lr: 1e-2,
            optimizer: OptimizerConfig::adam(),
            schedule: Schedule::constant(),
            eval_every: 500,
            seed: 0,
            augment: None,
            arch: ImageArch::small(),
            prefetch: false,
            shuffle: false,
        }
    }

    pub fn validate(&self) -> Result<()> {
        use crate::limits::{MAX_BATCH, MAX_STEPS};
        if self.steps == 0 || self.steps > MAX_STEPS {
            return Err(Error::Config(format!("steps must lie in 1..={MAX_STEPS}, got {}", self.steps)));
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH {
            return Err(Error::Config(format!("batch size must lie in 1..={MAX_BATCH}, got {}", self.batch_size)));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("learning rate must be a positive number, got {}", self.lr)));
        }
        if self.eval_every == 0 {
            return Err(Error::Config("eval_every must be at least 1".into()));
        }
        Ok(())
    }
}

/// One point of the learning curve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurvePoint {
    pub step: usize,
    /// Mean training loss and accuracy over the steps since the previous point.
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_loss: f32,
    pub test_accuracy: f32,
}

/// What a run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub curve: Vec<CurvePoint>,
    pub final_test_accuracy: f64,
    pub wall_seconds: f64,
}

impl RunResult {
    /// The result of a curve whose training began at `start`.
    fn of(curve: Vec<CurvePoint>, start: std::time::Instant) -> Self {
        let final_test_accuracy = curve.last().map(|p| p.test_accuracy as f64).unwrap_or(0.0);
        RunResult { curve, final_test_accuracy, wall_seconds: start.elapsed().as_secs_f64() }
    }
}

/// Reusable state for training one model: the batch, the logits and the loss buffers.
pub struct Trainer<B: Backend> {
    pub model: Model<B>,
    pub optimizer: Optimizer<B>,
    pub config: TrainConfig,
    /// Makes the training batches (moved to a prefetch thread during [`Trainer::fit`]).
    pub sampler: BatchSampler,
    x: Tensor<B>,
    x_shape: Shape,
    logits: Tensor<B>,
    loss: CrossEntropy<B>,
    host_x: Vec<f32>,
    host_y: Vec<f32>,
    /// Fixed 0/1 masks, one per parameter (`None`: dense), applied after every update.
    masks: Vec<Option<Tensor<B>>>,
    /// The first training loss, against which an exploding loss is recognised.
    first_loss: Option<f32>,
    /// Each step's (mean loss, correct rows) in the backend's memory, one slot a step, read
    /// back [`STATS_SLOTS`] steps at a time or when the curve needs them: a GPU step never
    /// waits for the host.
    stats: Tensor<B>,
    /// Slots filled since the last read.
    pending: usize,
    host_stats: Vec<f32>,
    /// Keep the training split in the backend's memory during [`Trainer::fit`] (the
    /// backend's choice, [`crate::core::backend::BackendBase::KEEPS_DATA_RESIDENT`], unless overridden).
    keep_resident: bool,
    /// The training split and its labels there, while a fit runs.
    resident: Option<(Tensor<B>, Tensor<B>)>,
    plan: BatchPlan,
    /// Test examples evaluated at once ([`EVAL_ROWS`], or fewer where the model's layer
    /// outputs for that many would exceed the backend's
    /// [`crate::core::backend::BackendBase::eval_chunk_bytes`]: see [`Trainer::for_dataset`]).
    pub eval_rows: usize,
    /// The memory promised to this run while it lives ([`crate::core::backend::BackendBase::admit_run`]).
    memory: crate::limits::Reservation,
}

/// Steps whose loss statistics the backend holds before the trainer reads them (and checks
/// them for divergence): one read per this many steps at most.
pub const STATS_SLOTS: usize = 64;

/// The most test examples evaluated at once.
pub const EVAL_ROWS: usize = 1000;

/// Test examples to evaluate at once for a model of `activations` layer-output values an
/// example trained with batches of `batch`: [`EVAL_ROWS`], fewer where their outputs would
/// exceed `budget` bytes, never fewer than a training batch (whose memory training holds anyway).
pub fn eval_rows(activations: f64, batch: usize, budget: f64) -> usize {
    let fit = (budget / (4.0 * activations.max(1.0))).floor();
    let fit = if fit.is_finite() { fit.min(EVAL_ROWS as f64) as usize } else { EVAL_ROWS };
    fit.max(batch.min(EVAL_ROWS)).max(1)
}

/// [`eval_rows`] for `kind` built for `data` and trained by `config` on backend `B`.
pub fn eval_rows_for<B: Backend>(kind: ModelKind, data: &Dataset, config: &TrainConfig) -> usize {
    eval_rows(footprint_for(kind, data, config).activations, config.batch_size, B::eval_chunk_bytes())
}

/// What `kind` built for `data` with `config`'s architecture will occupy.
fn footprint_for(kind: ModelKind, data: &Dataset, config: &TrainConfig) -> crate::models::footprint::Footprint {
    crate::models::footprint::footprint_input(kind, &data.example_shape, data.vocab, data.classes, &config.arch)
}

/// A training loss this many times the first one (and above 100) is divergence: the run has
/// left any useful region (`--lr 1e30` reaches 10^30 with chance accuracy) even if it is finite.
pub const EXPLODING_LOSS_FACTOR: f32 = 1000.0;

impl<B: Backend> Trainer<B> {
    pub fn new(model: Model<B>, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let mut sampler = BatchSampler::new(config.batch_size, rng_for(config.seed, streams::BATCHES));
        sampler.augment = config.augment;
        sampler.shuffle = config.shuffle;
        let x_shape = Shape::from(&model.batch_shape(0)[..]);
        Ok(Self {
            x_shape,
            model,
            optimizer: Optimizer::new(config.optimizer.clone()),
            config,
            sampler,
            x: Tensor::empty(),
            logits: Tensor::empty(),
            loss: CrossEntropy::default(),
            host_x: Vec::new(),
            host_y: Vec::new(),
            masks: Vec::new(),
            first_loss: None,
            stats: Tensor::zeros(&[2 * STATS_SLOTS]),
            pending: 0,
            host_stats: Vec::new(),
            keep_resident: B::KEEPS_DATA_RESIDENT,
            resident: None,
            plan: BatchPlan::default(),
            eval_rows: EVAL_ROWS,
            memory: crate::limits::Reservation::none(),
        })
    }

    /// Trains with fixed masks from now on (one entry per parameter in visit order; `None`
    /// leaves a parameter dense); masked weights are set to zero at once and stay zero.
    pub fn set_masks(&mut self, masks: &[Option<Vec<f32>>]) -> Result<()> {
        let mut shapes = Vec::new();
        self.model.net.visit_params_ref(&mut |p| shapes.push(p.value.shape().to_vec()));
        if masks.len() != shapes.len() {
            return Err(Error::Shape(format!("{} masks for {} parameters", masks.len(), shapes.len())));
        }
        let mut tensors = Vec::with_capacity(masks.len());
        for (m, shape) in masks.iter().zip(&shapes) {
            tensors.push(match m {
                Some(m) if m.len() == shape.iter().product::<usize>() => Some(Tensor::from_slice(shape, m)),
                Some(m) => {
                    return Err(Error::Shape(format!("mask of {} values for a parameter of shape {shape:?}", m.len())))
                }
                None => None,
            });
        }
        self.masks = tensors;
        self.apply_masks();
        Ok(())
    }

    fn apply_masks(&mut self) {
        if self.masks.is_empty() {
            return;
        }
        let (masks, mut i) = (&self.masks, 0);
        self.model.net.visit_params(&mut |p| {
            if let Some(Some(m)) = masks.get(i) {
                B::apply_mask(p.value.buf_mut(), m.buf());
            }
            i += 1;
        });
    }

    /// Builds `kind` for `data` from the config's seed and wraps it in a trainer (refused, with
    /// the estimate, where the run would not fit in memory) that evaluates in chunks sized by
    /// the model's estimated layer outputs ([`eval_rows`]).
    pub fn for_dataset(kind: ModelKind, data: &Dataset, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        config.arch.validate()?;
        let fp = footprint_for(kind, data, &config);
        let eval = eval_rows(fp.activations, config.batch_size, B::eval_chunk_bytes());
        let (batch, eval_batch) = (config.batch_size.min(data.n_train().max(1)), eval.min(data.n_test().max(1)));
        // in the memory of the backend that trains it (a GPU's own memory on CUDA)
        let what = format!("training the {} model", kind.name());
        // a backend that keeps the training split in its memory holds it there too
        let resident = if B::KEEPS_DATA_RESIDENT { 4.0 * (data.x.len() + data.y.len()) as f64 } else { 0.0 };
        let memory = B::admit_run(&what, fp.run_bytes(batch, eval_batch) + resident)?;
        let mut init: InitRng = rng_for(config.seed, streams::INIT);
        let model = Model::build_for(kind, data, &config.arch, &mut init)?;
        let mut trainer = Self::new(model, config)?;
        trainer.eval_rows = eval;
        trainer.memory = memory;
        Ok(trainer)
    }

    /// Copies examples `idx` of (`x`, `y`) into the batch tensors.
    fn load_batch(&mut self, x: &[f32], y: &[u32], idx: impl Iterator<Item = usize>, len: usize) {
        self.host_x.clear();
        self.host_y.clear();
        for i in idx {
            self.host_x.extend_from_slice(&x[i * len..(i + 1) * len]);
            self.host_y.push(y[i] as f32);
        }
        self.upload_host_batch();
    }

    /// Moves the host batch (`host_x`, `host_y`) into the model's input tensors.
    fn upload_host_batch(&mut self) {
        let rows = self.host_y.len();
        self.x_shape.set_first(rows);
        self.x.upload(&self.x_shape, &self.host_x);
        self.loss.labels.upload(&[rows], &self.host_y);
    }

    /// Whether [`Trainer::fit`] keeps the training split in the backend's memory and gathers
    /// each batch there (by default the backend's choice; the batches are the same either way).
    pub fn keep_data_resident(&mut self, keep: bool) {
        self.keep_resident = keep;
    }

    /// One optimisation step at `step`; returns the batch's loss and accuracy.
    pub fn step(&mut self, data: &Dataset, step: usize) -> Result<(f32, f32)> {
        self.next_batch(data);
        self.train_on_loaded(step);
        let stats = self.read_stats(step)?;
        Ok((stats[0], stats[1] / self.loss.labels.len() as f32))
    }

    /// Makes the next training batch in the input tensors: gathered by the backend from its
    /// copy of the training split during a fit that keeps one, else filled on the host and
    /// uploaded.
    fn next_batch(&mut self, data: &Dataset) {
        match &self.resident {
            Some((x_train, y_train)) => {
                self.sampler.plan(data, &mut self.plan);
                let rows = self.plan.rows();
                self.x_shape.set_first(rows);
                self.x.resize(&self.x_shape);
                self.loss.labels.resize(&[rows]);
                let g = ExampleGeom::of(&data.example_shape);
                B::gather_batch(
                    x_train.buf(),
                    y_train.buf(),
                    g,
                    &self.plan,
                    self.x.buf_mut(),
                    self.loss.labels.buf_mut(),
                );
            }
            None => {
                self.sampler.fill(data, &mut self.host_x, &mut self.host_y);
                self.upload_host_batch();
            }
        }
    }

    /// What every fit checks and sets first: the data, the thread's float mode, and any
    /// backend failure while the model and its buffers were made.
    fn begin_fit(&mut self, data: &Dataset) -> Result<()> {
        data.validate()?;
        crate::core::cpu::flush_denormals();
        B::take_error().map_or(Ok(()), Err)
    }

    /// Puts the training split in the backend's memory for a fit, if the trainer keeps it
    /// there (released by [`Trainer::release_resident`]).
    fn make_resident(&mut self, data: &Dataset) {
        if self.keep_resident {
            let n = data.n_train();
            let labels: Vec<f32> = data.y.iter().map(|&v| v as f32).collect();
            let x = Tensor::from_slice(&[n, data.example_len()], &data.x);
            self.resident = Some((x, Tensor::from_slice(&[n], &labels)));
        }
    }

    fn release_resident(&mut self) {
        self.resident = None;
    }

    /// Trains on the batch already in the input tensors; its loss statistics go to the next
    /// slot (read by [`Trainer::read_stats`]).
    fn train_on_loaded(&mut self, step: usize) {
        B::step_starts();
        self.model.net.forward(&self.x, &mut self.logits, Mode::Train);
        self.loss.evaluate_into(&self.logits, true, &mut self.stats, self.pending);
        self.pending += 1;
        self.model.net.backward(&self.x, &self.logits, &self.loss.dlogits, None);
        let lr = self.config.schedule.lr(self.config.lr, step, self.config.steps);
        self.optimizer.step(&mut self.model.net, lr);
        self.apply_masks();
    }

    /// Reads the statistics of the steps trained since the last read (the last of them is
    /// step `last`): `(mean loss, correct rows)` pairs, oldest first. A non-finite or
    /// exploding loss is [`Error::Diverged`] at the first step that had it.
    fn read_stats(&mut self, last: usize) -> Result<&[f32]> {
        let filled = std::mem::take(&mut self.pending);
        B::download(self.stats.buf(), &mut self.host_stats);
        if let Some(e) = B::take_error() {
            return Err(e);
        }
        let stats = &self.host_stats[..2 * filled];
        for (j, pair) in stats.chunks_exact(2).enumerate() {
            let loss = pair[0];
            let first = *self.first_loss.get_or_insert(loss);
            if !loss.is_finite() || loss > (EXPLODING_LOSS_FACTOR * first).max(100.0) {
                return Err(Error::Diverged { step: last + 1 + j - filled, loss });
            }
        }
        Ok(stats)
    }

    /// Adds the unread steps' statistics to `log` (the last of them is step `last`).
    fn flush_stats(&mut self, last: usize, log: &mut CurveLog) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let rows = self.loss.labels.len() as f32;
        for pair in self.read_stats(last)?.chunks_exact(2) {
            log.loss += pair[0] as f64;
            log.accuracy += (pair[1] / rows) as f64;
            log.since += 1;
        }
        Ok(())
    }

    /// Loss and accuracy on the test split, [`Trainer::eval_rows`] examples at a time (an error
    /// where the backend failed: see [`crate::core::backend::BackendBase::take_error`]).
    pub fn evaluate(&mut self, data: &Dataset) -> Result<(f32, f32)> {
        let n = data.n_test();
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let len = data.example_len();
        let rows = self.eval_rows.max(1);
        for start in (0..n).step_by(rows) {
            let end = (start + rows).min(n);
            self.load_batch(&data.x_test, &data.y_test, start..end, len);
            self.model.net.forward(&self.x, &mut self.logits, Mode::Eval);
            let (l, c) = self.loss.evaluate(&self.logits, false);
            loss_sum += l as f64 * (end - start) as f64;
            correct += c;
        }
        if let Some(e) = B::take_error() {
            return Err(e);
        }
        Ok(((loss_sum / n as f64) as f32, correct as f32 / n as f32))
    }

    /// Like [`Trainer::fit`], writing a checkpoint to `path` every `every` steps (atomically:
    /// the model, the optimizer's moments and step, the sampler's order and generator, the
    /// learning curve so far); when `path` holds a checkpoint the run continues from it and ends
    /// bit for bit where an uninterrupted run would. Batches are made on this thread (the same
    /// batches as with prefetching).
    pub fn fit_checkpointed(
        &mut self,
        data: &Dataset,
        path: &std::path::Path,
        every: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<RunResult> {
        self.begin_fit(data)?;
        if every == 0 {
            return Err(Error::Config("checkpoint interval must be at least 1 step".into()));
        }
        let start = std::time::Instant::now();
        let (log, first) = if path.exists() { self.load_checkpoint(path)? } else { (CurveLog::default(), 0) };
        if first > 0 {
            progress(first);
        }
        self.make_resident(data);
        let log = self.steps_from(data, first, log, Some((path, every)), progress);
        self.release_resident();
        Ok(RunResult::of(log?.curve, start))
    }

    fn save_checkpoint(&self, path: &std::path::Path, step: usize, log: &CurveLog) -> Result<()> {
        let (t, moments) = self.optimizer.export();
        let mut tensors = checkpoint::state(&self.model.net);
        for (i, (m, v)) in moments.into_iter().enumerate() {
            for (name, values) in [("m", m), ("v", v)] {
                tensors.push(checkpoint::NamedTensor {
                    name: format!("opt.{i:03}.{name}"),
                    shape: vec![values.len()],
                    values,
                });
            }
        }
        let meta = CheckpointMeta {
            step,
            optimizer_step: t,
            sampler: self.sampler.state(),
            log: log.clone(),
            first_loss: self.first_loss,
        };
        let json = serde_json::to_string(&meta).map_err(|e| Error::Json { path: path.into(), source: e })?;
        checkpoint::write_tensors(path, &tensors, Some([("cnnlab_checkpoint".to_string(), json)].into()))
    }

    fn load_checkpoint(&mut self, path: &std::path::Path) -> Result<(CurveLog, usize)> {
        let (tensors, meta) = checkpoint::read_tensors_with_metadata(path)?;
        let bad = |reason: String| Error::Malformed { path: path.into(), reason };
        let meta: CheckpointMeta = meta
            .get("cnnlab_checkpoint")
            .ok_or_else(|| bad("not a cnnlab checkpoint".into()))
            .and_then(|j| serde_json::from_str(j).map_err(|e| bad(e.to_string())))?;
        if meta.step >= self.config.steps {
            return Err(bad(format!("checkpoint at step {} of a {}-step run", meta.step, self.config.steps)));
        }
        let model: std::collections::HashMap<String, checkpoint::NamedTensor> =
            tensors.iter().filter(|(k, _)| !k.starts_with("opt.")).map(|(k, v)| (k.clone(), v.clone())).collect();
        checkpoint::set_state(&mut self.model.net, &model).map_err(bad)?;
        let mut moments = Vec::new();
        while let (Some(m), Some(v)) =
            (tensors.get(&format!("opt.{:03}.m", moments.len())), tensors.get(&format!("opt.{:03}.v", moments.len())))
        {
            moments.push((m.values.clone(), v.values.clone()));
        }
        self.optimizer.import(meta.optimizer_step, &moments);
        self.sampler.restore(&meta.sampler);
        self.first_loss = meta.first_loss;
        Ok((meta.log, meta.step))
    }

    /// Trains for `config.steps`, evaluating every `eval_every` steps; `progress(steps)` hears
    /// of the steps done since its last call, about 200 times a run.
    pub fn fit(&mut self, data: &Dataset, progress: &mut dyn FnMut(usize)) -> Result<RunResult> {
        self.begin_fit(data)?;
        let start = std::time::Instant::now();
        self.make_resident(data);
        // batches gathered by the backend need no prefetching
        let curve = if self.config.prefetch && self.resident.is_none() {
            self.fit_prefetching(data, progress)
        } else {
            self.steps_from(data, 0, CurveLog::default(), None, progress).map(|log| log.curve)
        };
        self.release_resident();
        Ok(RunResult::of(curve?, start))
    }

    /// Steps `first..config.steps` on this thread, continuing `log`; with `checkpoint`
    /// (path, interval), writes a checkpoint every interval steps (not after the last).
    fn steps_from(
        &mut self,
        data: &Dataset,
        first: usize,
        mut log: CurveLog,
        checkpoint: Option<(&std::path::Path, usize)>,
        progress: &mut dyn FnMut(usize),
    ) -> Result<CurveLog> {
        for step in first..self.config.steps {
            self.next_batch(data);
            self.train_on_loaded(step);
            self.record(data, step, &mut log, progress)?;
            let done = step + 1;
            if let Some((path, every)) = checkpoint {
                if done.is_multiple_of(every) && done < self.config.steps {
                    self.flush_stats(step, &mut log)?;
                    self.save_checkpoint(path, done, &log)?;
                }
            }
        }
        Ok(log)
    }

    /// After step `step`: reads the steps' statistics into `log` when the slots are full or
    /// an evaluation is due, and evaluates when due.
    fn record(
        &mut self,
        data: &Dataset,
        step: usize,
        log: &mut CurveLog,
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let done = step + 1;
        let evaluate = done.is_multiple_of(self.config.eval_every) || done == self.config.steps;
        if evaluate || self.pending == STATS_SLOTS {
            self.flush_stats(step, log)?;
        }
        if evaluate {
            let (test_loss, test_accuracy) = self.evaluate(data)?;
            log.curve.push(CurvePoint {
                step: done,
                train_loss: (log.loss / log.since as f64) as f32,
                train_accuracy: (log.accuracy / log.since as f64) as f32,
                test_loss,
                test_accuracy,
            });
            (log.loss, log.accuracy, log.since) = (0.0, 0.0, 0);
        }
        // progress moves with the steps (about 200 updates a run), not only at evaluations
        let every = (self.config.steps / 200).max(1);
        if done.is_multiple_of(every) || done == self.config.steps {
            progress(done - log.reported);
            log.reported = done;
        }
        Ok(())
    }

    /// The training loop with batches made on a second thread: the sampler moves there and
    /// hands over filled buffers through a bounded channel; used buffers come back, so after
    /// the first few steps nothing is allocated. Same batches as without prefetching.
    fn fit_prefetching(&mut self, data: &Dataset, progress: &mut dyn FnMut(usize)) -> Result<Vec<CurvePoint>> {
        use std::sync::mpsc::sync_channel;
        const IN_FLIGHT: usize = 2;
        let steps = self.config.steps;
        let mut sampler = std::mem::replace(&mut self.sampler, BatchSampler::new(0, rng_for(0, 0)));
        let (full_tx, full_rx) = sync_channel::<(Vec<f32>, Vec<f32>)>(IN_FLIGHT);
        let (empty_tx, empty_rx) = sync_channel::<(Vec<f32>, Vec<f32>)>(IN_FLIGHT + 1);
        for _ in 0..=IN_FLIGHT {
            let _ = empty_tx.send((Vec::new(), Vec::new()));
        }
        let result = std::thread::scope(|scope| {
            let producer = scope.spawn(move || {
                crate::core::cpu::flush_denormals();
                for _ in 0..steps {
                    let Ok((mut x, mut y)) = empty_rx.recv() else { break };
                    sampler.fill(data, &mut x, &mut y);
                    if full_tx.send((x, y)).is_err() {
                        break;
                    }
                }
                sampler
            });
            let mut log = CurveLog::default();
            let mut outcome = Ok(());
            for step in 0..steps {
                let Ok((x, y)) = full_rx.recv() else { break };
                let (old_x, old_y) = (std::mem::replace(&mut self.host_x, x), std::mem::replace(&mut self.host_y, y));
                self.upload_host_batch();
                let _ = empty_tx.send((old_x, old_y));
                self.train_on_loaded(step);
                if let Err(e) = self.record(data, step, &mut log, progress) {
                    outcome = Err(e);
                    break;
                }
            }
            drop(full_rx);
            drop(empty_tx);
            let sampler = producer.join();
            (outcome.map(|_| log.curve), sampler)
        });
        let (curve, sampler) = result;
        if let Ok(s) = sampler {
            self.sampler = s;
        }
        curve
    }
}

/// What a checkpoint holds besides tensors.
#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    /// Steps done.
    step: usize,
    optimizer_step: u32,
    sampler: sampler::SamplerState,
    log: CurveLog,
    first_loss: Option<f32>,
}

/// Running sums between evaluations.
#[derive(Default, Clone, Serialize, Deserialize)]
struct CurveLog {
    curve: Vec<CurvePoint>,
    loss: f64,
    accuracy: f64,
    since: usize,
    reported: usize,
}

/// Trains `kind` on `data` with `config` on backend `B`, permuting each training batch's
/// positions after augmentation with `permutation` (for conditions applied on the fly).
pub fn train_with<B: Backend>(
    kind: ModelKind,
    data: &Dataset,
    config: &TrainConfig,
    permutation: PositionPermutation,
    progress: &mut dyn FnMut(usize),
) -> Result<RunResult> {
    let mut trainer = Trainer::<B>::for_dataset(kind, data, config.clone())?;
    trainer.sampler.permutation = permutation;
    trainer.fit(data, progress)
}

/// [`train_with`] on `device` (opened first: see [`Device::open`]).
pub fn train_on(
    device: Device,
    kind: ModelKind,
    data: &Dataset,
    config: &TrainConfig,
    permutation: PositionPermutation,
    progress: &mut dyn FnMut(usize),
) -> Result<RunResult> {
    crate::with_backend!(device, B => train_with::<B>(kind, data, config, permutation, progress))
}

/// [`train_with`] on the CPU backend.
pub fn train_cpu_with(
    kind: ModelKind,
    data: &Dataset,
    config: &TrainConfig,
    permutation: PositionPermutation,
    progress: &mut dyn FnMut(usize),
) -> Result<RunResult> {
    train_with::<Cpu>(kind, data, config, permutation, progress)
}

/// Trains `kind` on `data` with `config` on the CPU backend.
pub fn train_cpu(
    kind: ModelKind,
    data: &Dataset,
    config: &TrainConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<RunResult> {
    train_cpu_with(kind, data, config, PositionPermutation::None, progress)
}

/// The data run `seed` of `config` trains on under `condition`: the dataset with its test split
/// (and, without augmentation, its training split) permuted, and the permutation left to apply
/// to each training batch after augmentation. Every random choice comes from `seed`.
pub fn condition_for_run(
    condition: crate::data::Condition,
    data: &Dataset,
    config: &TrainConfig,
    seed: u64,
) -> (Dataset, PositionPermutation) {
    use rand::Rng;
    let perm_seed = rng_for(seed, streams::CONDITION).random::<u64>();
    let mut variant = condition.apply(data, perm_seed);
    if config.augment.is_none() || condition == crate::data::Condition::Original {
        return (variant, PositionPermutation::None);
    }
    // augment in the original layout, then permute each batch
    variant.x.copy_from_slice(&data.x);
    let positions = data.example_len() / data.example_shape.last().copied().unwrap_or(1).max(1);
    (variant, condition.batch_permutation(positions, perm_seed))
}
