//! Property tests of everything that reads a file a user can hand over — IDX images, CIFAR
//! records, safetensors weights and masks, run.json, sweep specs and manifests, the Rotten
//! Tomatoes CSV, image folders — and of the CLI's numeric flags: arbitrary
//! bytes and single-byte mutations of valid files give `Ok` or a typed error, never a panic, an
//! allocation abort or a hang. Bounded: a fixed number of cases each (the CI part).

use cnnlab::core::init::InitRng;
use cnnlab::core::Cpu;
use cnnlab::data::cifar::{read_batch, Cifar};
use cnnlab::data::folder::{load_folder, FolderOptions};
use cnnlab::data::idx::parse_idx;
use cnnlab::data::rotten_tomatoes;
use cnnlab::experiments::sweep::{self, SweepSpec};
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

/// A sweep directory planned once (MNIST-1D, 2 training-set sizes, 4 tasks): its manifest is
/// what the manifest test damages.
fn planned_sweep() -> &'static (tempfile::TempDir, Vec<u8>) {
    static SWEEP: std::sync::OnceLock<(tempfile::TempDir, Vec<u8>)> = std::sync::OnceLock::new();
    SWEEP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("s.toml");
        std::fs::write(&spec, SPEC_TOML).unwrap();
        let spec = SweepSpec::load(&spec).unwrap();
        let out = dir.path().join("sweep");
        sweep::plan(&spec, &out, false).unwrap();
        let bytes = std::fs::read(out.join(sweep::MANIFEST)).unwrap();
        (dir, bytes)
    })
}

const SPEC_TOML: &str = "name = \"t\"\nmodels = [\"cnn\", \"mlp\"]\nconditions = [\"permuted\"]\nseeds = 1\n\
                         train_sizes = [100, 200]\n[train]\nsteps = 30\n[data.mnist1d]\nnum_samples = 600\n";
const SPEC_JSON: &str = r#"{"name": "t", "models": ["cnn", "mlp"], "seeds": 2, "train_sizes": [100, 200],
                            "datasets": ["mnist1d", "folder:/tmp/x"], "train": {"steps": 30}}"#;

/// A CSV of Rotten Tomatoes' shape, bzip2-compressed as the real file is.
fn reviews_csv() -> String {
    let mut csv = String::from("category,text,movie_name\n");
    for i in 0..12 {
        let cat = ["fresh", "rotten", "plot"][i % 3];
        csv += &format!("{cat},\"a film, number {i}, it's {cat}\",m{i}\n");
    }
    csv
}

fn bzip2(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A small image as a PNG or JPEG file's bytes.
fn image_file(format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 128]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

proptest! {
    #![proptest_config(cases(128))]

    /// Sweep specs (TOML and JSON), damaged by one printable byte or cut: read, or refused;
    /// a spec that reads names its tables and job without a panic.
    #[test]
    fn sweep_spec_reader_never_panics(at in any::<usize>(), value in 32u8..127, cut in proptest::option::of(any::<usize>())) {
        let dir = tempfile::tempdir().unwrap();
        for (text, ext) in [(SPEC_TOML, "toml"), (SPEC_JSON, "json")] {
            let p = dir.path().join(format!("spec.{ext}"));
            std::fs::write(&p, mutate(text.as_bytes().to_vec(), at, value, cut)).unwrap();
            if let Ok(spec) = SweepSpec::load(&p) {
                prop_assert!(!spec.tables().is_empty());
                let _ = spec.job_name();
            }
        }
    }

    /// A sweep's manifest, damaged: refused, or a manifest whose every task can be described
    /// and whose status can be read.
    #[test]
    fn sweep_manifest_reader_never_panics(at in any::<usize>(), value in 32u8..127, cut in proptest::option::of(any::<usize>())) {
        let (_, valid) = planned_sweep();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(sweep::MANIFEST), mutate(valid.clone(), at, value, cut)).unwrap();
        if let Ok(m) = sweep::Manifest::load(dir.path()) {
            for i in 0..m.tasks.len() {
                let _ = m.describe(i);
                let _ = m.task_dir(dir.path(), i);
            }
            let _ = sweep::status(dir.path());
            let _ = sweep::collect(dir.path());
        }
    }

    /// The Rotten Tomatoes CSV, damaged under its compression (and the compressed bytes
    /// damaged too): snippets and a dataset whose tokens lie inside its vocabulary, or an error.
    #[test]
    fn review_reader_never_panics(at in any::<usize>(), value in any::<u8>(), cut in proptest::option::of(any::<usize>()),
                                  outer in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let csv = reviews_csv().into_bytes();
        let bytes = if outer { mutate(bzip2(&csv), at, value, cut) } else { bzip2(&mutate(csv, at, value, cut)) };
        std::fs::write(dir.path().join(rotten_tomatoes::FILE), bytes).unwrap();
        if let Ok((data, _)) = rotten_tomatoes::load(dir.path()) {
            let vocab = data.vocab.unwrap() as f32;
            prop_assert!(data.x.iter().chain(&data.x_test).all(|&t| t >= 0.0 && t < vocab));
        }
    }

    /// An image folder whose images are damaged PNG or JPEG files: a dataset of the promised
    /// size with values in [0, 1], or an error naming the file.
    #[test]
    fn image_folder_reader_never_panics(at in any::<usize>(), value in any::<u8>(), cut in proptest::option::of(any::<usize>()),
                                        jpeg in any::<bool>(), resize in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let (format, ext) = if jpeg { (image::ImageFormat::Jpeg, "jpg") } else { (image::ImageFormat::Png, "png") };
        let damaged = mutate(image_file(format), at, value, cut);
        for split in ["train", "test"] {
            for (class, bytes) in [("a", image_file(format)), ("b", damaged.clone())] {
                let d = dir.path().join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(format!("x.{ext}")), &bytes).unwrap();
            }
        }
        let opts = FolderOptions { resize: resize.then_some((3, 5)), ..FolderOptions::default() };
        if let Ok(data) = load_folder(dir.path(), &opts) {
            let (h, w) = if resize { (3, 5) } else { (4, 6) };
            prop_assert_eq!(&data.example_shape, &vec![h, w, 3]);
            prop_assert_eq!(data.x.len(), 2 * h * w * 3);
            prop_assert!(data.x.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }
}
