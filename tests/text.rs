//! The text experiments' models on the recall task: the transformer's indifference to a fixed
//! permutation of positions (its position table permuted the same way), and seeded runs.

use cnnlab::core::cpu::with_intra_op_threads;
use cnnlab::core::{Cpu, Layer};
use cnnlab::data::permutation::{permute_one, random_permutation};
use cnnlab::data::recall::RecallConfig;
use cnnlab::data::Dataset;
use cnnlab::models::ModelKind;
use cnnlab::train::{TrainConfig, Trainer};
use rand::SeedableRng;

fn small_recall() -> Dataset {
    RecallConfig { n_train: 2000, n_test: 500, len: 16, pairs: 2, keys: 8, values: 8, ..Default::default() }
        .generate()
        .unwrap()
}

fn config(steps: usize, seed: u64) -> TrainConfig {
    TrainConfig { steps, batch_size: 32, lr: 1e-3, eval_every: steps, seed, shuffle: true, ..TrainConfig::mnist1d() }
}

/// A transformer trained on the original order, its position table permuted by π, tested on
/// the test split permuted by π: the accuracy is the original's (within a point; the sums run
/// in another order). Attention and the pooling do not see order; the table is all it knows.
#[test]
fn transformer_with_permuted_positions_is_indifferent_to_a_fixed_permutation() {
    let data = small_recall();
    for kind in [ModelKind::Transformer1, ModelKind::Transformer2] {
        let mut t = Trainer::<Cpu>::for_dataset(kind, &data, config(150, 1)).unwrap();
        with_intra_op_threads(1, || t.fit(&data, &mut |_| {})).unwrap();
        let (_, original) = t.evaluate(&data).unwrap();
        let perm = random_permutation(16, &mut rand_chacha::ChaCha8Rng::seed_from_u64(9));
        let mut permuted = data.clone();
        let mut scratch = vec![0.0; 16];
        for example in permuted.x_test.chunks_mut(16) {
            permute_one(example, &perm, 1, &mut scratch);
        }
        let (_, unadapted) = t.evaluate(&permuted).unwrap();
        assert_eq!(t.model.net.permute_positions(&perm).unwrap(), 1, "one position table");
        let (_, adapted) = t.evaluate(&permuted).unwrap();
        eprintln!("{kind:?}: original {original}, permuted {unadapted}, permuted with the table permuted {adapted}");
        assert!((adapted - original).abs() <= 0.01, "{kind:?}: {original} vs {adapted}");
        // the test means something: the trained model is not indifferent to order by itself
        assert!(original > 1.0 / 8.0 + 0.05, "{kind:?} learned nothing: {original}");
    }
}

/// The same seed gives the same numbers, on one thread or two; another seed does not.
#[test]
fn text_models_are_deterministic() {
    let data = small_recall();
    for kind in [ModelKind::Transformer2, ModelKind::Cnn, ModelKind::Bag] {
        let run = |threads, seed| {
            with_intra_op_threads(threads, || {
                let mut t = Trainer::<Cpu>::for_dataset(kind, &data, config(40, seed)).unwrap();
                t.fit(&data, &mut |_| {}).unwrap().curve
            })
        };
        let a = run(1, 3);
        assert_eq!(a, run(1, 3), "{kind:?}");
        assert_eq!(a, run(2, 3), "{kind:?}: thread count changed the numbers");
        assert_ne!(a, run(1, 4), "{kind:?}: another seed gave the same run");
    }
}
