//! CIFAR-10 and CIFAR-100 in the official binary layout.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1..5.bin`, `test_batch.bin`; each record is
//! a label byte and 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32).
//! CIFAR-100 (`cifar-100-binary/`): `train.bin`, `test.bin`; records carry a coarse and a fine
//! label byte before the pixels. Images become `[32, 32, 3]`, channels last, scaled to [0, 1].

use crate::data::Dataset;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const PIXELS: usize = 3072;

/// Which CIFAR and, for CIFAR-100, which labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cifar {
    Ten,
    /// CIFAR-100 with its 100 fine labels (`fine`) or 20 coarse ones.
    Hundred {
        fine: bool,
    },
}

impl Cifar {
    fn label_bytes(&self) -> usize {
        match self {
            Cifar::Ten => 1,
            Cifar::Hundred { .. } => 2,
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            Cifar::Ten => 10,
            Cifar::Hundred { fine: true } => 100,
            Cifar::Hundred { fine: false } => 20,
        }
    }

    /// The folder the official archive unpacks to.
    pub fn folder(&self) -> &'static str {
        match self {
            Cifar::Ten => "cifar-10-batches-bin",
            Cifar::Hundred { .. } => "cifar-100-binary",
        }
    }

    fn files(&self) -> (Vec<String>, &'static str) {
        match self {
            Cifar::Ten => ((1..=5).map(|i| format!("data_batch_{i}.bin")).collect(), "test_batch.bin"),
            Cifar::Hundred { .. } => (vec!["train.bin".into()], "test.bin"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Cifar::Ten => "cifar10",
            Cifar::Hundred { .. } => "cifar100",
        }
    }
}

/// Appends the records of one binary file to `x` (HWC, [0, 1]) and `y`.
pub fn read_batch(path: &Path, kind: Cifar, x: &mut Vec<f32>, y: &mut Vec<u32>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let record = kind.label_bytes() + PIXELS;
    let bad = |reason: String| Error::Malformed { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(bad("empty file".into()));
    }
    if bytes.len() % record != 0 {
        return Err(bad(format!(
            "truncated or oversized: {} bytes is not a whole number of {record}-byte records",
            bytes.len()
        )));
    }
    x.reserve(bytes.len() / record * PIXELS);
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = match kind {
            Cifar::Ten => r[0],
            Cifar::Hundred { fine } => r[if fine { 1 } else { 0 }],
        } as usize;
        if label >= kind.classes() {
            return Err(bad(format!("record {i}: label {label} out of range 0..{}", kind.classes())));
        }
        y.push(label as u32);
        let px = &r[kind.label_bytes()..];
        for p in 0..1024 {
            for c in 0..3 {
                x.push(px[c * 1024 + p] as f32 / 255.0);
            }
        }
    }
    Ok(())
}

/// The dataset's folder: `dir` itself or `dir/<official folder>`.
fn locate(dir: &Path, kind: Cifar) -> Result<PathBuf> {
    let (train, _) = kind.files();
    for candidate in [dir.join(kind.folder()), dir.to_path_buf()] {
        if candidate.join(&train[0]).is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::MissingData(format!(
        "no {} in {} (expected {}/{}); get it with: cnnlab data download {} --dir {}",
        kind.name(),
        dir.display(),
        kind.folder(),
        train[0],
        kind.name(),
        dir.display()
    )))
}

/// Loads CIFAR-10 or CIFAR-100 from `dir`.
pub fn load_cifar(dir: &Path, kind: Cifar) -> Result<Dataset> {
    let root = locate(dir, kind)?;
    let (train, test) = kind.files();
    let (mut x, mut y, mut x_test, mut y_test) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for f in &train {
        read_batch(&root.join(f), kind, &mut x, &mut y)?;
    }
    read_batch(&root.join(test), kind, &mut x_test, &mut y_test)?;
    let d = Dataset {
        name: kind.name().into(),
        example_shape: vec![32, 32, 3],
        classes: kind.classes(),
        vocab: None,
        x,
        y,
        x_test,
        y_test,
    };
    d.validate()?;
    Ok(d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `n` records whose labels cycle through `classes` and whose pixels encode (record, channel).
    pub fn records(kind: Cifar, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            match kind {
                Cifar::Ten => out.push((i % 10) as u8),
                Cifar::Hundred { .. } => {
                    out.push((i % 20) as u8);
                    out.push((i % 100) as u8);
                }
            }
            for c in 0..3 {
                out.extend(std::iter::repeat_n((i * 3 + c) as u8, 1024));
            }
        }
        out
    }

    /// A small CIFAR-10 folder in the official layout (`n` records per file).
    pub fn write_cifar10(dir: &Path, n: usize) -> PathBuf {
        let root = dir.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&root).unwrap();
        for i in 1..=5 {
            std::fs::write(root.join(format!("data_batch_{i}.bin")), records(Cifar::Ten, n)).unwrap();
        }
        std::fs::write(root.join("test_batch.bin"), records(Cifar::Ten, n)).unwrap();
        root
    }

    #[test]
    fn cifar10_official_layout() {
        let dir = tempfile::tempdir().unwrap();
        write_cifar10(dir.path(), 4);
        let d = load_cifar(dir.path(), Cifar::Ten).unwrap();
        assert_eq!((d.n_train(), d.n_test(), d.classes), (20, 4, 10));
        assert_eq!(d.example_shape, vec![32, 32, 3]);
        assert_eq!(&d.y[..5], &[0, 1, 2, 3, 0]);
        // record 1, pixel 0: channels (3, 4, 5) / 255, interleaved
        let px = &d.x[PIXELS..PIXELS + 3];
        assert_eq!(px, &[3.0 / 255.0, 4.0 / 255.0, 5.0 / 255.0]);
    }

    #[test]
    fn cifar100_fine_and_coarse() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cifar-100-binary");
        std::fs::create_dir_all(&root).unwrap();
        let kind = Cifar::Hundred { fine: true };
        std::fs::write(root.join("train.bin"), records(kind, 30)).unwrap();
        std::fs::write(root.join("test.bin"), records(kind, 5)).unwrap();
        let fine = load_cifar(dir.path(), kind).unwrap();
        assert_eq!((fine.classes, fine.y[25]), (100, 25));
        let coarse = load_cifar(dir.path(), Cifar::Hundred { fine: false }).unwrap();
        assert_eq!((coarse.classes, coarse.y[25]), (20, 5));
    }

    #[test]
    fn malformed_cifar_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = write_cifar10(dir.path(), 2);
        let f = root.join("data_batch_3.bin");
        let mut bytes = records(Cifar::Ten, 2);
        bytes.truncate(bytes.len() - 7);
        std::fs::write(&f, &bytes).unwrap();
        let e = load_cifar(dir.path(), Cifar::Ten).unwrap_err().to_string();
        assert!(e.contains("data_batch_3.bin") && e.contains("truncated or oversized"), "{e}");
        let mut bytes = records(Cifar::Ten, 2);
        bytes[3073] = 11;
        std::fs::write(&f, &bytes).unwrap();
        let e = load_cifar(dir.path(), Cifar::Ten).unwrap_err().to_string();
        assert!(e.contains("label 11"), "{e}");
        std::fs::write(&f, b"").unwrap();
        let e = load_cifar(dir.path(), Cifar::Ten).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        std::fs::remove_file(root.join("test_batch.bin")).unwrap();
        std::fs::write(&f, records(Cifar::Ten, 2)).unwrap();
        let e = load_cifar(dir.path(), Cifar::Ten).unwrap_err().to_string();
        assert!(e.contains("test_batch.bin"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = load_cifar(empty.path(), Cifar::Ten).unwrap_err().to_string();
        assert!(e.contains("cnnlab data download cifar10"), "{e}");
    }
}
