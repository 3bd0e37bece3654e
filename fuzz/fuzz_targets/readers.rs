#![no_main]
//! Every reader of a file a user can hand cnnlab, fed libFuzzer's bytes: the first byte picks
//! the reader (IDX, CIFAR records, safetensors weights and masks, run.json, sweep specs in TOML
//! and JSON, a sweep's manifest, the Rotten Tomatoes CSV under bzip2, an image folder). A
//! panic, an abort or an allocation beyond libFuzzer's limit is a finding; Ok or a typed error
//! is fine. Seeds: `python3 fuzz/seeds.py fuzz/corpus/readers`.
use cnnlab::core::init::InitRng;
use cnnlab::core::Cpu;
use cnnlab::data::cifar::{read_batch, Cifar};
use cnnlab::data::folder::{load_folder, FolderOptions};
use cnnlab::experiments::sweep::{Manifest, SweepSpec};
use cnnlab::models::{Model, ModelKind};
use cnnlab::train::checkpoint;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        // files in memory where the machine has a tmpfs: each input is written before it is read
        let base = Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()).unwrap_or_else(std::env::temp_dir);
        let d = base.join(format!("cnnlab-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn put(name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir().join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, bytes).unwrap();
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 12 {
        0 => {
            let _ = cnnlab::data::idx::parse_idx(bytes);
        }
        1 => {
            let p = put("batch.bin", bytes);
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let _ = read_batch(&p, Cifar::Ten, &mut x, &mut y);
            let _ = read_batch(&p, Cifar::Hundred { fine: true }, &mut x, &mut y);
        }
        2 | 3 | 4 | 5 => {
            let p = put("w.safetensors", bytes);
            let mut m: Model<Cpu> = Model::build(ModelKind::Mlp, &[40, 1], 10, &mut InitRng::seed_from_u64(0)).unwrap();
            match which % 12 {
                2 => drop(checkpoint::read_tensors_with_metadata(&p)),
                3 => drop(checkpoint::load_state(&mut m.net, &p)),
                4 => drop(checkpoint::load_masks(&m.net, &p)),
                _ => drop(checkpoint::mask_made_for(&p)),
            }
        }
        6 => {
            put("run/run.json", bytes);
            let _ = checkpoint::read_run(&dir().join("run"));
        }
        7 => {
            let p = put("spec.toml", bytes);
            if let Ok(spec) = SweepSpec::load(&p) {
                let _ = spec.tables();
            }
        }
        8 => {
            let p = put("spec.json", bytes);
            if let Ok(spec) = SweepSpec::load(&p) {
                let _ = spec.tables();
            }
        }
        9 => {
            put("sweep/sweep.json", bytes);
            if let Ok(m) = Manifest::load(&dir().join("sweep")) {
                for i in 0..m.tasks.len() {
                    let _ = m.describe(i);
                }
            }
        }
        10 => {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            enc.write_all(bytes).unwrap();
            let p = put("rt.csv.bz2", &enc.finish().unwrap());
            let _ = cnnlab::data::rotten_tomatoes::read_snippets(&p);
        }
        _ => {
            let ext = if bytes.starts_with(&[0xff, 0xd8]) { "jpg" } else { "png" };
            for split in ["train", "test"] {
                put(&format!("folder/{split}/a/x.{ext}"), bytes);
                put(&format!("folder/{split}/b/y.{ext}"), bytes);
            }
            let _ = load_folder(&dir().join("folder"), &FolderOptions::default());
            let opts = FolderOptions { resize: Some((7, 5)), ..FolderOptions::default() };
            let _ = load_folder(&dir().join("folder"), &opts);
            let _ = std::fs::remove_dir_all(dir().join("folder"));
        }
    }
});
