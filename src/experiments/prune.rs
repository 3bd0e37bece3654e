//! Magnitude pruning and lottery tickets: most weights are not needed, and the ones that
//! survive in an MLP's first layer are local.
//!
//! - One-shot: zero the smallest-magnitude weights of a trained run (globally across layers,
//!   or the same share in every layer), evaluate as is and after fine-tuning with the mask
//!   fixed; a random mask of the same sparsity is the control.
//! - Lottery tickets (Frankle & Carbin 2019, as in the MNIST-1D notebook): train, prune each
//!   layer to the next sparsity of a schedule by the magnitude of the trained weights, rewind
//!   the survivors to their initial values, retrain; repeat. The random ticket draws a fresh
//!   random mask of the same sparsities and trains it from the same initial weights.
//! - Locality: the probability that 2, 3, 4 adjacent inputs of a first-layer unit all
//!   survive, for the ticket against the random mask.
//!
//! Weights are pruned (parameters with weight decay), and biases too when asked.

use crate::analysis::plot;
use crate::core::layer::Reads;
use crate::core::{Backend, Cpu, Layer};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiments::grid::{run_grid, Compute, Progress};
use crate::models::{ImageArch, Model, ModelKind};
use crate::report::{ensure_dir, write_json, Artifacts};
use crate::train::checkpoint::{by_name, params, set_state, NamedTensor};
use crate::train::{rng_for, PositionPermutation, TrainConfig, Trainer};
use rand::seq::index::sample;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Stream of the random masks (apart from the run's own streams).
const MASK_STREAM: u64 = 11;

/// Global (one threshold over all weights) or layer-wise (the same share in every layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Global,
    LayerWise,
}

/// A mask per parameter (`None`: not pruned).
pub type Masks = Vec<Option<Vec<f32>>>;

/// One leaf layer of a network: how it reads positions, and its parameters as (index in
/// visit order, decays (a weight), shape).
struct Leaf {
    reads: Reads,
    params: Vec<(usize, bool, Vec<usize>)>,
}

/// The leaf layers of `net` in order (one walk for everything below that needs them).
fn leaves<B: crate::core::Backend>(net: &dyn Layer<B>) -> Vec<Leaf> {
    let mut out = Vec::new();
    let mut index = 0;
    let none = crate::core::Tensor::empty();
    net.visit_activations(&none, &none, &mut |leaf, _, _| {
        let mut params = Vec::new();
        leaf.visit_params_ref(&mut |p| {
            params.push((index, p.decay, p.value.shape().to_vec()));
            index += 1;
        });
        out.push(Leaf { reads: leaf.reads(), params });
    });
    out
}

/// The parameters pruned together, one group per layer: each layer's weights, and with
/// `with_biases` its biases too (ranked together with the weights, as the MNIST-1D notebook
/// does). Indices follow the parameter visit order.
pub fn layer_groups<B: crate::core::Backend>(net: &dyn Layer<B>, with_biases: bool) -> Vec<Vec<usize>> {
    leaves(net)
        .into_iter()
        .map(|l| l.params.into_iter().filter(|p| p.1 || with_biases).map(|p| p.0).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect()
}

fn all_ones(params: &[NamedTensor], groups: &[Vec<usize>]) -> Masks {
    let mut masks: Masks = vec![None; params.len()];
    for &t in groups.iter().flatten() {
        masks[t] = Some(vec![1.0; params[t].values.len()]);
    }
    masks
}

/// Masks dropping the `sparsity` share of the grouped parameters with the smallest magnitude:
/// over all groups at once (global) or within each group (layer-wise); exactly ⌊sparsity·n⌋
/// values, ties broken by position.
pub fn magnitude_masks(params: &[NamedTensor], groups: &[Vec<usize>], sparsity: f64, scope: Scope) -> Masks {
    let mut masks = all_ones(params, groups);
    let drop = |entries: &mut Vec<(f32, usize, usize)>, masks: &mut Masks| {
        let k = ((sparsity * entries.len() as f64).floor() as usize).min(entries.len());
        entries.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for &(_, t, i) in &entries[..k] {
            if let Some(m) = masks[t].as_mut() {
                m[i] = 0.0;
            }
        }
    };
    let entries = |group: &Vec<usize>| -> Vec<(f32, usize, usize)> {
        group.iter().flat_map(|&t| params[t].values.iter().enumerate().map(move |(i, v)| (v.abs(), t, i))).collect()
    };
    match scope {
        Scope::Global => {
            let mut all: Vec<(f32, usize, usize)> = groups.iter().flat_map(entries).collect();
            drop(&mut all, &mut masks);
        }
        Scope::LayerWise => {
            for g in groups {
                drop(&mut entries(g), &mut masks);
            }
        }
    }
    masks
}

/// Random masks dropping exactly ⌊sparsity·n⌋ of the values of every group.
pub fn random_masks(
    params: &[NamedTensor],
    groups: &[Vec<usize>],
    sparsity: f64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Masks {
    let mut masks = all_ones(params, groups);
    for g in groups {
        let slots: Vec<(usize, usize)> =
            g.iter().flat_map(|&t| (0..params[t].values.len()).map(move |i| (t, i))).collect();
        let k = ((sparsity * slots.len() as f64).floor() as usize).min(slots.len());
        for j in sample(rng, slots.len(), k) {
            let (t, i) = slots[j];
            if let Some(m) = masks[t].as_mut() {
                m[i] = 0.0;
            }
        }
    }
    masks
}

/// The MNIST-1D notebook's lottery run (MLP 40-500-500-10, 100 rounds of 1501 steps,
/// trial 0, final test accuracy): (ticket, random ticket) at the sparsities it printed. The
/// random value at 95% is the summary (55%); dense runs there reach 64-66%.
pub fn mnist1d_published(sparsity: f64) -> Option<(f64, f64)> {
    const TABLE: [(f64, f64, f64); 5] =
        [(0.80, 0.766, 0.698), (0.85, 0.728, 0.668), (0.90, 0.734, 0.625), (0.92, 0.730, 0.605), (0.95, 0.705, 0.55)];
    TABLE.iter().find(|r| (r.0 - sparsity).abs() < 0.006).map(|r| (r.1, r.2))
}

/// Share of prunable weights that a mask removes.
pub fn sparsity_of(masks: &Masks) -> f64 {
    let (zeros, total) = masks
        .iter()
        .flatten()
        .fold((0usize, 0usize), |(z, t), m| (z + m.iter().filter(|&&v| v == 0.0).count(), t + m.len()));
    if total == 0 {
        0.0
    } else {
        zeros as f64 / total as f64
    }
}

/// Probability that `k` adjacent inputs (along the input's last spatial axis, same channel)
/// of a unit are all kept, for k = 2, 3, 4; `weight` is `[out, in]` with `in` laid out as
/// `positions × channels` and rows of `row_len` positions.
pub fn adjacency(mask: &[f32], out: usize, row_len: usize, channels: usize) -> [f64; 3] {
    let inputs = mask.len() / out.max(1);
    let rows = inputs / (row_len * channels).max(1);
    let mut result = [0.0; 3];
    for (slot, k) in (2..=4usize).enumerate() {
        let (mut kept, mut windows) = (0usize, 0usize);
        if row_len >= k {
            for u in 0..out {
                let unit = &mask[u * inputs..(u + 1) * inputs];
                for r in 0..rows {
                    for start in 0..=row_len - k {
                        for c in 0..channels {
                            windows += 1;
                            let all = (0..k).all(|j| unit[((r * row_len) + start + j) * channels + c] != 0.0);
                            kept += all as usize;
                        }
                    }
                }
            }
        }
        result[slot] = if windows > 0 { kept as f64 / windows as f64 } else { 0.0 };
    }
    result
}

/// Where a trained run's model and data come from.
pub struct PruneSubject<'a> {
    pub kind: ModelKind,
    pub arch: &'a ImageArch,
    pub data: &'a Dataset,
    pub permutation: PositionPermutation,
    pub config: TrainConfig,
    pub init: Vec<NamedTensor>,
    /// Trained parameters and buffers.
    pub trained: Vec<NamedTensor>,
    /// Prune every parameter, biases included (the MNIST-1D notebook prunes each layer's
    /// weights and biases); otherwise weights only.
    pub prune_biases: bool,
}

impl PruneSubject<'_> {
    fn groups<B: Backend>(&self, net: &dyn Layer<B>) -> Vec<Vec<usize>> {
        layer_groups(net, self.prune_biases)
    }

    fn model<B: Backend>(&self, weights: &[NamedTensor]) -> Result<Model<B>> {
        let mut rng = rng_for(self.config.seed, crate::train::streams::INIT);
        let mut model = Model::build_for(self.kind, self.data, self.arch, &mut rng)?;
        set_state(&mut model.net, &by_name(weights.to_vec())).map_err(Error::Config)?;
        Ok(model)
    }

    fn trainer<B: Backend>(
        &self,
        weights: &[NamedTensor],
        steps: usize,
        masks: &Masks,
        seed: u64,
    ) -> Result<Trainer<B>> {
        let config =
            TrainConfig { steps, seed, eval_every: self.config.eval_every.min(steps.max(1)), ..self.config.clone() };
        let eval_rows = crate::train::eval_rows_for::<B>(self.kind, self.data, &config);
        let mut t = Trainer::new(self.model(weights)?, config)?;
        t.eval_rows = eval_rows;
        t.sampler.permutation = self.permutation.clone();
        t.set_masks(masks)?;
        Ok(t)
    }
}

/// How a mask picks the weights it removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskKind {
    /// The smallest magnitudes.
    Magnitude,
    /// At random (the control).
    Random,
}

/// One point of a one-shot pruning curve.
#[derive(Clone, Debug, Serialize)]
pub struct OneShotPoint {
    pub scope: Scope,
    pub mask: MaskKind,
    pub sparsity: f64,
    pub accuracy: f64,
    /// After `fine_tune_steps` steps with the mask fixed (None when not fine-tuned).
    pub fine_tuned: Option<f64>,
}

/// One round of an iterative (lottery) chain.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub sparsity: f64,
    pub final_accuracy: f64,
    /// Best test accuracy over the round's evaluations (the notebook's max_acc).
    pub best_accuracy: f64,
    /// Locality of the first layer's mask (k = 2, 3, 4 adjacent inputs all kept), when the
    /// first weighted layer is a dense layer over positions.
    pub adjacent_kept: Option<[f64; 3]>,
}

/// The iterative chains of one seed.
#[derive(Clone, Debug, Serialize)]
pub struct LotteryChains {
    pub seed: u64,
    pub ticket: Vec<Round>,
    pub random: Vec<Round>,
    /// The masks of the ticket's last round (for `cnnlab train --mask`).
    #[serde(skip)]
    pub last_ticket_masks: Masks,
}

#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub dataset: String,
    pub model: String,
    pub dense_accuracy: f64,
    pub fine_tune_steps: usize,
    pub one_shot: Vec<OneShotPoint>,
    pub lottery_steps: usize,
    pub lottery: Vec<LotteryChains>,
    #[serde(skip)]
    pub sparsities: Vec<f64>,
    /// Whether the lottery follows the MNIST-1D notebook's protocol (published values shown).
    #[serde(skip)]
    pub comparable: bool,
    #[serde(skip)]
    pub wall_seconds: f64,
    #[serde(skip)]
    pub seeds: usize,
    #[serde(skip)]
    pub rounds: usize,
}

/// The first weighted layer's geometry when it is dense over positions: (parameter index of
/// its weight, units, positions per row, channels).
fn first_dense_layer<B: Backend>(net: &dyn Layer<B>, example_shape: &[usize]) -> Option<(usize, usize, usize, usize)> {
    let first = leaves(net)
        .into_iter()
        .find(|l| matches!(l.reads, Reads::Linear { .. } | Reads::Window { weighted: true, .. }))?;
    if !matches!(first.reads, Reads::Linear { .. }) {
        return None;
    }
    let (index, _, shape) = first.params.into_iter().find(|p| p.1)?;
    let (row_len, channels) = match *example_shape {
        [l, c] => (l, c),
        [_, w, c] => (w, c),
        _ => return None,
    };
    (shape.len() == 2 && shape[1] == example_shape.iter().product::<usize>())
        .then_some((index, shape[0], row_len, channels))
}

/// One-shot pruning of the trained weights at each sparsity, both scopes, magnitude and
/// random masks; fine-tuned for `fine_tune_steps` when non-zero. Runs in parallel on
/// `compute`'s device (backend `B`, opened first).
pub fn one_shot<B: Backend>(
    compute: Compute,
    subject: &PruneSubject,
    sparsities: &[f64],
    fine_tune_steps: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<OneShotPoint>> {
    let trained = subject.model::<Cpu>(&subject.trained)?;
    let trained_params = params(&trained.net);
    let groups = subject.groups(&trained.net);
    let mut jobs = Vec::new();
    for &scope in &[Scope::Global, Scope::LayerWise] {
        for &s in sparsities {
            jobs.push((scope, MaskKind::Magnitude, s));
        }
    }
    for &s in sparsities {
        jobs.push((Scope::LayerWise, MaskKind::Random, s));
    }
    let jobs: Vec<(usize, (Scope, MaskKind, f64))> = jobs.into_iter().enumerate().collect();
    run_grid(compute, &jobs, &progress, |&(j, (scope, mask, s))| {
        let masks = if mask == MaskKind::Random {
            random_masks(&trained_params, &groups, s, &mut rng_for(subject.config.seed + j as u64, MASK_STREAM))
        } else {
            magnitude_masks(&trained_params, &groups, s, scope)
        };
        let mut t = subject.trainer::<B>(&subject.trained, fine_tune_steps.max(1), &masks, subject.config.seed)?;
        let (_, accuracy) = t.evaluate(subject.data)?;
        let fine_tuned = if fine_tune_steps > 0 {
            Some(t.fit(subject.data, &mut |n| progress(n))?.final_test_accuracy)
        } else {
            None
        };
        Ok(OneShotPoint { scope, mask, sparsity: s, accuracy: accuracy as f64, fine_tuned })
    })
}

/// Iterative magnitude pruning with rewinding (the ticket) and random masks of the same
/// sparsities (the control), one pair of chains per seed, chains in parallel on `compute`'s
/// device (backend `B`, opened first).
pub fn lottery<B: Backend>(
    compute: Compute,
    subject: &PruneSubject,
    schedule: &[f64],
    steps: usize,
    seeds: &[u64],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<LotteryChains>> {
    let probe = subject.model::<Cpu>(&subject.init)?;
    let groups = subject.groups(&probe.net);
    let dense_first = first_dense_layer(&probe.net, &subject.data.example_shape);
    let jobs: Vec<(u64, bool)> = seeds.iter().flat_map(|&s| [(s, true), (s, false)]).collect();
    let chains = run_grid(compute, &jobs, &progress, |&(seed, ticket)| {
        // the run's own seed rewinds to its saved initial weights; other seeds start afresh
        let start = if seed == subject.config.seed {
            subject.model::<B>(&subject.init)?
        } else {
            let mut rng = rng_for(seed, crate::train::streams::INIT);
            Model::<B>::build_with(
                subject.kind,
                &subject.data.example_shape,
                subject.data.classes,
                subject.arch,
                &mut rng,
            )?
        };
        let init = crate::train::checkpoint::state(&start.net);
        let init_params = params(&start.net);
        let mut rng = rng_for(seed, MASK_STREAM);
        let mut trained: Option<Vec<NamedTensor>> = None;
        let mut rounds = Vec::new();
        let mut last_masks = Masks::new();
        for &s in schedule {
            let masks = match (&trained, ticket) {
                (Some(w), true) => magnitude_masks(w, &groups, s, Scope::LayerWise),
                (_, false) => random_masks(&init_params, &groups, s, &mut rng),
                (None, true) => magnitude_masks(&init_params, &groups, 0.0, Scope::LayerWise),
            };
            let mut t = subject.trainer::<B>(&init, steps, &masks, seed)?;
            let r = t.fit(subject.data, &mut |n| progress(n))?;
            let best = r.curve.iter().map(|p| p.test_accuracy as f64).fold(0.0, f64::max);
            let adjacent_kept =
                dense_first.and_then(|(i, out, row, ch)| masks[i].as_ref().map(|m| adjacency(m, out, row, ch)));
            rounds.push(Round {
                sparsity: sparsity_of(&masks),
                final_accuracy: r.final_test_accuracy,
                best_accuracy: best,
                adjacent_kept,
            });
            trained = Some(params(&t.model.net));
            last_masks = masks;
        }
        Ok((rounds, last_masks))
    })?;
    // jobs come in (ticket, random) pairs per seed
    let mut chains = chains.into_iter();
    let mut out = Vec::new();
    for &seed in seeds {
        let (Some((ticket, last_ticket_masks)), Some((random, _))) = (chains.next(), chains.next()) else {
            return Err(Error::Config("a lottery chain is missing".into()));
        };
        out.push(LotteryChains { seed, ticket, random, last_ticket_masks });
    }
    Ok(out)
}

/// What to prune.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct PruneConfig {
    /// A run saved by `cnnlab train --save DIR`.
    pub run: PathBuf,
    /// Sparsities of the one-shot curves.
    pub sparsities: Vec<f64>,
    /// Fine-tuning steps after one-shot pruning (0: none).
    pub fine_tune_steps: usize,
    /// Lottery rounds: sparsities evenly spaced from 0 to `max_sparsity` (0: no lottery).
    pub rounds: usize,
    pub max_sparsity: f64,
    /// Training steps of each lottery round (None: the run's).
    pub lottery_steps: Option<usize>,
    /// Lottery seeds (the first is the run's own initialisation).
    pub seeds: usize,
    /// Prune biases too (the MNIST-1D notebook prunes every parameter of each layer).
    pub prune_biases: bool,
    /// Write the masks of the last ticket here (for `cnnlab train --mask`).
    pub save_mask: Option<PathBuf>,
    /// Where fine-tuning and the lottery rounds train (the masks are computed on the host).
    #[serde(default)]
    pub compute: Compute,
}

impl PruneConfig {
    pub fn new(run: PathBuf) -> Self {
        Self {
            run,
            sparsities: vec![0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
            fine_tune_steps: 500,
            rounds: 20,
            max_sparsity: 0.95,
            lottery_steps: None,
            seeds: 1,
            prune_biases: false,
            save_mask: None,
            compute: Compute::default(),
        }
    }

    /// The lottery's sparsity schedule: `rounds` values from 0 to `max_sparsity`.
    pub fn schedule(&self) -> Vec<f64> {
        (0..self.rounds).map(|i| self.max_sparsity * i as f64 / (self.rounds.max(2) - 1) as f64).collect()
    }
}

/// The MNIST-1D notebook's lottery protocol: the default MNIST-1D, an MLP 40-500-500-10, 100
/// rounds of 1501 steps of Adam 2e-2, weights and biases pruned.
fn follows_notebook(saved: &crate::train::checkpoint::SavedRun, cfg: &PruneConfig, steps: usize) -> bool {
    saved.data.dataset.is_sequence()
        && saved.data.mnist1d == crate::data::mnist1d::Mnist1dConfig::default()
        && saved.data.train_subset.is_none()
        && saved.model == ModelKind::Mlp
        && saved.config.arch.sequence_mlp_hidden == [500, 500]
        && saved.config.lr == 2e-2
        && matches!(saved.config.optimizer, crate::core::optim::OptimizerConfig::Adam { .. })
        && cfg.rounds == 100
        && steps == 1501
        && cfg.prune_biases
}

/// Prunes the saved run: one-shot curves, then the lottery chains.
pub fn run(cfg: &PruneConfig, progress: &dyn Progress) -> Result<PruneReport> {
    use crate::train::checkpoint;
    if cfg.sparsities.iter().any(|s| !(0.0..1.0).contains(s)) || !(0.0..1.0).contains(&cfg.max_sparsity) {
        return Err(Error::Config("sparsities must lie in [0, 1)".into()));
    }
    // by the floats' bits (+ 0.0 makes -0 the 0 it equals)
    crate::limits::check_distinct_by("sparsities", &cfg.sparsities, |s| (s + 0.0).to_bits())?;
    if cfg.save_mask.is_some() && cfg.rounds == 0 {
        return Err(Error::Config("saving a mask needs lottery rounds (rounds above 0)".into()));
    }
    if cfg.seeds == 0 || cfg.seeds > crate::limits::MAX_SEEDS {
        return Err(Error::Config(format!("lottery seeds must lie in 1..={}", crate::limits::MAX_SEEDS)));
    }
    if cfg.rounds > 10_000 {
        return Err(Error::Config("at most 10,000 lottery rounds".into()));
    }
    if cfg.fine_tune_steps > crate::limits::MAX_STEPS {
        return Err(Error::Config(format!("at most {} fine-tuning steps", crate::limits::MAX_STEPS)));
    }
    if let Some(path) = &cfg.save_mask {
        // before the work, not after it
        crate::report::check_writable_file(path)?;
    }
    let device = cfg.compute.open()?;
    let run = checkpoint::load_run::<Cpu>(&cfg.run, checkpoint::FINAL_WEIGHTS)?;
    // the initial weights, checked as the final ones are (finite, this network's shapes)
    let mut probe = Model::<Cpu>::build_with(
        run.saved.model,
        &run.data.example_shape,
        run.data.classes,
        &run.saved.config.arch,
        &mut rng_for(0, crate::train::streams::INIT),
    )?;
    checkpoint::load_state(&mut probe.net, &cfg.run.join(checkpoint::INIT_WEIGHTS))?;
    let init = checkpoint::state(&probe.net);
    let subject = PruneSubject {
        kind: run.saved.model,
        arch: &run.saved.config.arch,
        data: &run.data,
        permutation: run.permutation.clone(),
        config: run.saved.config.clone(),
        init,
        trained: checkpoint::state(&run.model.net),
        prune_biases: cfg.prune_biases,
    };
    let steps = cfg.lottery_steps.unwrap_or(run.saved.config.steps);
    let schedule = cfg.schedule();
    let seeds: Vec<u64> = (0..cfg.seeds as u64).map(|k| run.saved.seed + k).collect();
    progress.start((cfg.sparsities.len() * 3 * cfg.fine_tune_steps + seeds.len() * 2 * schedule.len() * steps) as u64);
    let start = std::time::Instant::now();
    let compute = cfg.compute;
    let (one_shot, lottery) = crate::with_backend!(device, B => {
        let one_shot = one_shot::<B>(compute, &subject, &cfg.sparsities, cfg.fine_tune_steps, &|n| progress.steps(n))?;
        let lottery = lottery::<B>(compute, &subject, &schedule, steps, &seeds, &|n| progress.steps(n))?;
        Ok::<_, Error>((one_shot, lottery))
    })?;
    if let (Some(path), Some(chains)) = (&cfg.save_mask, lottery.first()) {
        let made_for = Some((run.saved.model, &run.saved.config.arch));
        checkpoint::save_masks(&run.model.net, &chains.last_ticket_masks, made_for, path)?;
    }
    Ok(PruneReport {
        dataset: run.data.name.clone(),
        model: run.saved.model.name().into(),
        dense_accuracy: run.saved.final_test_accuracy,
        fine_tune_steps: cfg.fine_tune_steps,
        one_shot,
        lottery_steps: steps,
        lottery,
        sparsities: cfg.sparsities.clone(),
        comparable: follows_notebook(&run.saved, cfg, steps),
        wall_seconds: start.elapsed().as_secs_f64(),
        seeds: seeds.len(),
        rounds: schedule.len(),
    })
}

/// A lottery round averaged over seeds: (sparsity, final accuracy, best accuracy).
pub type MeanRound = (f64, f64, f64);

impl PruneReport {
    /// The ticket and random chains, each round averaged over the seeds.
    pub fn mean_chains(&self) -> (Vec<MeanRound>, Vec<MeanRound>) {
        let mean = |pick: &dyn Fn(&LotteryChains) -> &Vec<Round>| -> Vec<MeanRound> {
            (0..self.rounds)
                .map(|i| {
                    let rounds: Vec<&Round> = self.lottery.iter().filter_map(|c| pick(c).get(i)).collect();
                    let n = rounds.len().max(1) as f64;
                    (
                        rounds.iter().map(|r| r.sparsity).sum::<f64>() / n,
                        rounds.iter().map(|r| r.final_accuracy).sum::<f64>() / n,
                        rounds.iter().map(|r| r.best_accuracy).sum::<f64>() / n,
                    )
                })
                .collect()
        };
        (mean(&|c| &c.ticket), mean(&|c| &c.random))
    }

    fn one_shot_cell(&self, scope: Scope, mask: MaskKind, s: f64) -> String {
        self.one_shot
            .iter()
            .find(|p| p.scope == scope && p.mask == mask && p.sparsity == s)
            .map(|p| match p.fine_tuned {
                Some(f) => format!("{:5.1} / {:5.1}", p.accuracy * 100.0, f * 100.0),
                None => format!("{:5.1}", p.accuracy * 100.0),
            })
            .unwrap_or_default()
    }
}

impl std::fmt::Display for PruneReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {} run: dense test accuracy {:.1}%", self.dataset, self.model, self.dense_accuracy * 100.0)?;
        writeln!(f, "one-shot magnitude pruning (as is / after {} fine-tuning steps):", self.fine_tune_steps)?;
        writeln!(f, "{:>9}  {:>15}  {:>15}  {:>15}", "sparsity", "global", "layer-wise", "random mask")?;
        for &s in &self.sparsities {
            writeln!(
                f,
                "{:>8.0}%  {:>15}  {:>15}  {:>15}",
                s * 100.0,
                self.one_shot_cell(Scope::Global, MaskKind::Magnitude, s),
                self.one_shot_cell(Scope::LayerWise, MaskKind::Magnitude, s),
                self.one_shot_cell(Scope::LayerWise, MaskKind::Random, s)
            )?;
        }
        if self.rounds > 0 {
            let (ticket, random) = self.mean_chains();
            let over = if self.seeds > 1 { format!("mean of {} seeds", self.seeds) } else { "one seed".into() };
            writeln!(
                f,
                "\nlottery tickets: {} rounds of {} steps, {over}; final (best) test accuracy %",
                self.rounds, self.lottery_steps
            )?;
            writeln!(
                f,
                "{:>9}  {:>15}  {:>15}  {:>12}  first layer: 2/3/4 adjacent kept (ticket vs random)",
                "sparsity",
                "ticket",
                "random ticket",
                if self.comparable { "published" } else { "" }
            )?;
            for (i, (t, r)) in ticket.iter().zip(&random).enumerate() {
                let adj = match (
                    self.lottery[0].ticket.get(i).and_then(|x| x.adjacent_kept),
                    self.lottery[0].random.get(i).and_then(|x| x.adjacent_kept),
                ) {
                    (Some(t), Some(r)) => {
                        format!("{:.3}/{:.3}/{:.3} vs {:.3}/{:.3}/{:.3}", t[0], t[1], t[2], r[0], r[1], r[2])
                    }
                    _ => String::new(),
                };
                let reference = if self.comparable {
                    mnist1d_published(t.0)
                        .map(|(a, b)| format!("{:.1} / {:.1}", a * 100.0, b * 100.0))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                writeln!(
                    f,
                    "{:>8.1}%  {:>6.1} ({:>5.1})  {:>6.1} ({:>5.1})  {reference:>12}  {adj}",
                    t.0 * 100.0,
                    t.1 * 100.0,
                    t.2 * 100.0,
                    r.1 * 100.0,
                    r.2 * 100.0
                )?;
            }
            if self.comparable {
                writeln!(
                    f,
                    "published: the MNIST-1D notebook's trial 0 (MLP 40-500-500-10, 100 rounds of 1501 steps, Adam \
                     2e-2, weights and biases pruned), final accuracy of ticket / random ticket; dense runs 64-66%"
                )?;
            }
        }
        writeln!(f, "{:.1} s", self.wall_seconds)
    }
}

impl Artifacts for PruneReport {
    fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ensure_dir(dir)?;
        let (json, svg) = (dir.join("prune.json"), dir.join("prune.svg"));
        write_json(&json, self)?;
        // curves: one-shot (fine-tuned where available) and the lottery chains (mean over seeds)
        let mut series = Vec::new();
        for (scope, mask, name) in [
            (Scope::Global, MaskKind::Magnitude, "one-shot global"),
            (Scope::LayerWise, MaskKind::Magnitude, "one-shot layer-wise"),
            (Scope::LayerWise, MaskKind::Random, "one-shot random mask"),
        ] {
            let points = self
                .one_shot
                .iter()
                .filter(|p| p.scope == scope && p.mask == mask)
                .map(|p| (p.sparsity, p.fine_tuned.unwrap_or(p.accuracy)))
                .collect();
            let tuned = if self.fine_tune_steps > 0 { ", fine-tuned" } else { "" };
            series.push(plot::Series { name: format!("{name}{tuned}"), points });
        }
        if self.rounds > 0 {
            let (ticket, random) = self.mean_chains();
            series.push(plot::Series {
                name: "lottery ticket (rewind to init)".into(),
                points: ticket.iter().map(|r| (r.0, r.1)).collect(),
            });
            series.push(plot::Series {
                name: "random ticket".into(),
                points: random.iter().map(|r| (r.0, r.1)).collect(),
            });
        }
        if self.comparable {
            let at = [0.80, 0.85, 0.90, 0.92, 0.95];
            let published = |pick: fn((f64, f64)) -> f64| -> Vec<(f64, f64)> {
                at.iter().filter_map(|&s| mnist1d_published(s).map(|p| (s, pick(p)))).collect()
            };
            series.push(plot::Series { name: "published ticket (notebook)".into(), points: published(|p| p.0) });
            series.push(plot::Series { name: "published random ticket".into(), points: published(|p| p.1) });
        }
        plot::line_chart(
            &svg,
            &format!("{} {}: test accuracy against sparsity", self.dataset, self.model),
            ("share of weights removed", "test accuracy"),
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

    fn tensor(name: &str, values: Vec<f32>) -> NamedTensor {
        NamedTensor { name: name.into(), shape: vec![values.len()], values }
    }

    #[test]
    fn magnitude_masks_drop_the_smallest_weights() {
        let p = vec![tensor("a", vec![0.1, -5.0, 0.3, 2.0]), tensor("b", vec![1.0, -0.2]), tensor("bias", vec![0.0])];
        let on = [vec![0], vec![1]];
        let layer = magnitude_masks(&p, &on, 0.5, Scope::LayerWise);
        assert_eq!(layer[0].as_deref(), Some(&[0.0, 1.0, 0.0, 1.0][..]));
        assert_eq!(layer[1].as_deref(), Some(&[1.0, 0.0][..]));
        assert!(layer[2].is_none(), "biases are not pruned");
        // global: the 3 smallest of all six weights are 0.1, -0.2, 0.3
        let global = magnitude_masks(&p, &on, 0.5, Scope::Global);
        assert_eq!(global[0].as_deref(), Some(&[0.0, 1.0, 0.0, 1.0][..]));
        assert_eq!(global[1].as_deref(), Some(&[1.0, 0.0][..]));
        assert!((sparsity_of(&global) - 0.5).abs() < 1e-12);
        // a layer's weights and bias ranked together: the bias 0.0 goes first
        let joint = magnitude_masks(&p, &[vec![1, 2]], 0.5, Scope::LayerWise);
        assert_eq!((joint[1].as_deref(), joint[2].as_deref()), (Some(&[1.0, 1.0][..]), Some(&[0.0][..])));
        assert!(joint[0].is_none());
    }

    #[test]
    fn layer_groups_pair_weights_with_their_biases() {
        use crate::core::init::InitRng;
        use rand::SeedableRng;
        let m = Model::<Cpu>::build(ModelKind::Mlp, &[40, 1], 10, &mut InitRng::seed_from_u64(0)).unwrap();
        assert_eq!(layer_groups(&m.net, false), vec![vec![0], vec![2], vec![4]]);
        assert_eq!(layer_groups(&m.net, true), vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    }

    #[test]
    fn random_masks_have_the_exact_sparsity() {
        let p = vec![tensor("w", vec![1.0; 1000])];
        let m = random_masks(&p, &[vec![0]], 0.9, &mut rng_for(0, MASK_STREAM));
        assert!((sparsity_of(&m) - 0.9).abs() < 1e-12);
    }

    #[test]
    fn adjacency_counts_runs_of_kept_inputs() {
        // one unit over 6 positions, kept: 1 1 1 0 1 1 → pairs 3/5, triples 1/4, quads 0/3
        let m = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        let [p2, p3, p4] = adjacency(&m, 1, 6, 1);
        assert!((p2 - 3.0 / 5.0).abs() < 1e-12 && (p3 - 0.25).abs() < 1e-12 && p4 == 0.0);
        // a random mask of density d keeps k neighbours with probability about d^k
        let mut rng = rng_for(1, 1);
        let p = vec![tensor("w", vec![1.0; 100 * 40])];
        let r = random_masks(&p, &[vec![0]], 0.5, &mut rng);
        let [q2, q3, _] = adjacency(r[0].as_ref().unwrap(), 100, 40, 1);
        assert!((q2 - 0.25).abs() < 0.03 && (q3 - 0.125).abs() < 0.03, "{q2} {q3}");
    }
}
