//! The training loop: minibatch SGD-family training with periodic evaluation on the test set.
//!
//! Every buffer (batch, activations, gradients, optimizer state) is created during the first
//! step and first evaluation and reused after, so the steady-state step does not allocate.
//! Randomness (initialisation, batch order) flows from [`TrainConfig::seed`].

use crate::core::cpu::Cpu;
use crate::core::init::InitRng;
use crate::core::ops::cross_entropy::CrossEntropy;
use crate::core::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::core::tensor::Shape;
use crate::core::{Backend, Layer, Mode, Tensor};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::{Model, ModelKind};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Streams drawn from the one run seed, so each random choice is independent of the others.
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
}

impl TrainConfig {
    /// The MNIST-1D recipe: Adam 1e-2, batch 100, 6000 steps.
    pub fn mnist1d() -> Self {
        Self {
            steps: 6000,
            batch_size: 100,
            lr: 1e-2,
            optimizer: OptimizerConfig::adam(),
            schedule: Schedule::constant(),
            eval_every: 500,
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::Config("steps must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!(
                "learning rate must be a positive number, got {}",
                self.lr
            )));
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

/// Reusable state for training one model: the batch, the logits and the loss buffers.
pub struct Trainer<B: Backend> {
    pub model: Model<B>,
    pub optimizer: Optimizer<B>,
    pub config: TrainConfig,
    x: Tensor<B>,
    x_shape: Shape,
    logits: Tensor<B>,
    loss: CrossEntropy<B>,
    host_x: Vec<f32>,
    host_y: Vec<f32>,
    order: Vec<usize>,
    cursor: usize,
    batch_rng: ChaCha8Rng,
}

impl<B: Backend> Trainer<B> {
    pub fn new(model: Model<B>, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let batch_rng = rng_for(config.seed, streams::BATCHES);
        let x_shape = Shape::from(&model.batch_shape(0)[..]);
        Ok(Self {
            x_shape,
            model,
            optimizer: Optimizer::new(config.optimizer.clone()),
            config,
            x: Tensor::empty(),
            logits: Tensor::empty(),
            loss: CrossEntropy::default(),
            host_x: Vec::new(),
            host_y: Vec::new(),
            order: Vec::new(),
            cursor: 0,
            batch_rng,
        })
    }

    /// Builds `kind` for `data` from the config's seed and wraps it in a trainer.
    pub fn for_dataset(kind: ModelKind, data: &Dataset, config: TrainConfig) -> Result<Self> {
        let mut init: InitRng = rng_for(config.seed, streams::INIT);
        let model = Model::build(kind, &data.example_shape, data.classes, &mut init)?;
        Self::new(model, config)
    }

    /// Copies examples `idx` of (`x`, `y`) into the batch tensors.
    fn load_batch(&mut self, x: &[f32], y: &[u32], idx: impl Iterator<Item = usize>, len: usize) {
        self.host_x.clear();
        self.host_y.clear();
        for i in idx {
            self.host_x.extend_from_slice(&x[i * len..(i + 1) * len]);
            self.host_y.push(y[i] as f32);
        }
        let rows = self.host_y.len();
        self.x_shape.set_first(rows);
        self.x.upload(&self.x_shape, &self.host_x);
        self.loss.labels.upload(&[rows], &self.host_y);
    }

    /// The next training batch: a fresh shuffle of the training set each epoch.
    fn next_batch(&mut self, data: &Dataset) {
        let n = data.n_train();
        let b = self.config.batch_size.min(n);
        if self.order.len() != n || self.cursor + b > n {
            if self.order.len() != n {
                self.order = (0..n).collect();
            }
            self.order.shuffle(&mut self.batch_rng);
            self.cursor = 0;
        }
        let (start, len) = (self.cursor, data.example_len());
        self.cursor += b;
        let order = std::mem::take(&mut self.order);
        self.load_batch(
            &data.x,
            &data.y,
            order[start..start + b].iter().copied(),
            len,
        );
        self.order = order;
    }

    /// One optimisation step at `step`; returns the batch's loss and accuracy.
    pub fn step(&mut self, data: &Dataset, step: usize) -> Result<(f32, f32)> {
        self.next_batch(data);
        self.model
            .net
            .forward(&self.x, &mut self.logits, Mode::Train);
        let (loss, correct) = self.loss.evaluate(&self.logits, true);
        if !loss.is_finite() {
            return Err(Error::Diverged { step, loss });
        }
        self.model
            .net
            .backward(&self.x, &self.logits, &self.loss.dlogits, None);
        let lr = self
            .config
            .schedule
            .lr(self.config.lr, step, self.config.steps);
        self.optimizer.step(&mut self.model.net, lr);
        Ok((loss, correct as f32 / self.loss.labels.len() as f32))
    }

    /// Loss and accuracy on the test split, in batches of at most 1000.
    pub fn evaluate(&mut self, data: &Dataset) -> (f32, f32) {
        let n = data.n_test();
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let len = data.example_len();
        for start in (0..n).step_by(1000) {
            let end = (start + 1000).min(n);
            self.load_batch(&data.x_test, &data.y_test, start..end, len);
            self.model
                .net
                .forward(&self.x, &mut self.logits, Mode::Eval);
            let (l, c) = self.loss.evaluate(&self.logits, false);
            loss_sum += l as f64 * (end - start) as f64;
            correct += c;
        }
        ((loss_sum / n as f64) as f32, correct as f32 / n as f32)
    }

    /// Trains for `config.steps`, evaluating every `eval_every` steps; `progress(steps_done)`
    /// is called after each evaluation.
    pub fn fit(&mut self, data: &Dataset, progress: &mut dyn FnMut(usize)) -> Result<RunResult> {
        data.validate()?;
        crate::core::cpu::flush_denormals();
        let start = std::time::Instant::now();
        let mut curve = Vec::new();
        let (mut loss_acc, mut acc_acc, mut since) = (0.0f64, 0.0f64, 0usize);
        let mut reported = 0;
        for step in 0..self.config.steps {
            let (l, a) = self.step(data, step)?;
            loss_acc += l as f64;
            acc_acc += a as f64;
            since += 1;
            let done = step + 1;
            if done % self.config.eval_every == 0 || done == self.config.steps {
                let (test_loss, test_accuracy) = self.evaluate(data);
                curve.push(CurvePoint {
                    step: done,
                    train_loss: (loss_acc / since as f64) as f32,
                    train_accuracy: (acc_acc / since as f64) as f32,
                    test_loss,
                    test_accuracy,
                });
                (loss_acc, acc_acc, since) = (0.0, 0.0, 0);
                progress(done - reported);
                reported = done;
            }
        }
        let final_test_accuracy = curve.last().map(|p| p.test_accuracy as f64).unwrap_or(0.0);
        Ok(RunResult {
            curve,
            final_test_accuracy,
            wall_seconds: start.elapsed().as_secs_f64(),
        })
    }
}

/// Trains `kind` on `data` with `config` on the CPU backend.
pub fn train_cpu(
    kind: ModelKind,
    data: &Dataset,
    config: &TrainConfig,
    progress: &mut dyn FnMut(usize),
) -> Result<RunResult> {
    let mut trainer = Trainer::<Cpu>::for_dataset(kind, data, config.clone())?;
    trainer.fit(data, progress)
}
