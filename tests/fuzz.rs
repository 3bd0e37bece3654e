//! Property tests of everything that reads a file a user can hand over — IDX images, CIFAR
//! records, safetensors weights and masks, run.json — and of the CLI's numeric flags: arbitrary
//! bytes and single-byte mutations of valid files give `Ok` or a typed error, never a panic, an
//! allocation abort or a hang. Bounded: a fixed number of cases each (the CI part).

use cnnlab::core::init::InitRng;
use cnnlab::core::Cpu;
use cnnlab::data::cifar::{read_batch, Cifar};
use cnnlab::data::idx::parse_idx;
use cnnlab::models::{Model, ModelKind};
use cnnlab::train::checkpoint;
use proptest::prelude::*;
use rand::SeedableRng;
use std::path::Path;

/// `n` cases from a fixed seed (the same inputs in every run; set PROPTEST_CASES to explore more).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    let seed = proptest::test_runner::RngSeed::Fixed(0x5eed_c0de);
    ProptestConfig { cases: n, failure_persistence: None, rng_seed: seed, ..ProptestConfig::default() }
}

/// A valid IDX file of 3 images of 4x4.
fn valid_idx() -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4];
    b.extend((0..48u8).map(|i| i * 5));
    b
}

/// `bytes` with byte `at` (mod length) set to `value`, or cut at `cut`.
fn mutate(mut bytes: Vec<u8>, at: usize, value: u8, cut: Option<usize>) -> Vec<u8> {
    if !bytes.is_empty() {
        let i = at % bytes.len();
        bytes[i] = value;
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

fn mlp() -> Model<Cpu> {
    Model::build(ModelKind::Mlp, &[40, 1], 10, &mut InitRng::seed_from_u64(0)).unwrap()
}

fn valid_weights(dir: &Path) -> Vec<u8> {
    let path = dir.join("w.safetensors");
    checkpoint::save_state(&mlp().net, &path).unwrap();
    std::fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn idx_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                               at in any::<usize>(), value in any::<u8>(), cut in proptest::option::of(any::<usize>())) {
        let _ = parse_idx(&bytes);
        let _ = parse_idx(&mutate(valid_idx(), at, value, cut));
    }

    #[test]
    fn cifar_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8000),
                                 hundred in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data_batch_1.bin");
        std::fs::write(&p, &bytes).unwrap();
        let kind = if hundred { Cifar::Hundred { fine: true } } else { Cifar::Ten };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let _ = read_batch(&p, kind, &mut x, &mut y);
    }
}

proptest! {
    #![proptest_config(cases(128))]

    /// Weights, masks and their metadata readers on damaged files: an error, never a panic;
    /// a file that loads leaves the model with finite weights.
    #[test]
    fn weight_and_mask_readers_never_panic(at in any::<usize>(), value in any::<u8>(),
                                           cut in proptest::option::of(any::<usize>()),
                                           junk in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        for bytes in [mutate(valid_weights(dir.path()), at, value, cut), junk.clone()] {
            std::fs::write(&p, &bytes).unwrap();
            let mut model = mlp();
            if checkpoint::load_state(&mut model.net, &p).is_ok() {
                prop_assert!(checkpoint::params(&model.net).iter().all(|t| t.values.iter().all(|v| v.is_finite())));
            }
            let _ = checkpoint::load_masks(&model.net, &p);
            let _ = checkpoint::mask_made_for(&p);
            let _ = checkpoint::read_tensors_with_metadata(&p);
        }
    }

    /// run.json, damaged: read as a run or refused; a run that reads builds its model or is
    /// refused (an absurd architecture is an error, not an abort).
    #[test]
    fn run_json_reader_never_panics(at in any::<usize>(), value in 32u8..127, cut in proptest::option::of(any::<usize>())) {
        let dir = tempfile::tempdir().unwrap();
        let saved = checkpoint::SavedRun {
            data: cnnlab::data::DataSource::mnist1d(),
            model: ModelKind::Cnn,
            condition: cnnlab::data::Condition::Permuted,
            seed: 3,
            config: cnnlab::train::TrainConfig::mnist1d(),
            final_test_accuracy: 0.5,
        };
        checkpoint::save_run(dir.path(), &saved).unwrap();
        let p = dir.path().join(checkpoint::RUN_FILE);
        let bytes = mutate(std::fs::read(&p).unwrap(), at, value, cut);
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(run) = checkpoint::read_run(dir.path()) {
            let arch = &run.config.arch;
            let _ = Model::<Cpu>::build_with(run.model, &[40, 1], 10, arch, &mut InitRng::seed_from_u64(0));
            let _ = run.config.validate();
        }
    }
}

proptest! {
    #![proptest_config(cases(24))]

    /// The CLI's numeric flags with arbitrary numbers: success, or one line and exit 1 or 2
    /// (never a crash signal or a panic's 101).
    #[test]
    fn numeric_flags_never_crash(flag in prop::sample::select(vec![
                                     "--lr", "--batch-size", "--eval-every", "--weight-decay", "--warmup-steps",
                                     "--num-samples", "--final-seq-length", "--template-len", "--train-split",
                                     "--mlp-hidden", "--padding-high", "--max-translation", "--scale-coeff"]),
                                 value in prop_oneof![
                                     any::<i64>().prop_map(|v| v.to_string()),
                                     any::<f64>().prop_map(|v| format!("{v:e}")),
                                     (0u32..64).prop_map(|v| v.to_string()),
                                     Just("nan".to_string()), Just("inf".to_string()), Just("-0".to_string())]) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cnnlab"))
            .args(["--threads", "1", "train", "--model", "mlp", "--steps", "3", "--quiet", flag, &value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        prop_assert!(matches!(out.status.code(), Some(0..=2)), "{flag} {value}: {:?} {err}", out.status);
        prop_assert!(!err.contains("panicked") && !err.contains("internal"), "{flag} {value}: {err}");
        if !out.status.success() {
            prop_assert_eq!(err.trim_end().lines().count(), 1, "{} {}: {}", flag, value, err);
        }
    }
}
