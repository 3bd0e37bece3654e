//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed (detected by the gzip magic).
//!
//! Layout: two zero bytes, a type byte (0x08: unsigned bytes, the only type these datasets
//! use), the number of dimensions, each dimension as a big-endian u32, then the values.

use crate::data::Dataset;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An IDX array of bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads an IDX file, decompressing it first if it is gzip.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        // bounded: a small corrupt (or hostile) archive must not inflate without limit
        const MAX_INFLATED: u64 = 1 << 32;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut out)
            .map_err(|e| malformed(path, format!("gzip data is corrupt: {e}")))?;
        if out.len() as u64 > MAX_INFLATED {
            return Err(malformed(path, "inflates to more than 4 GiB: not an IDX file of a dataset"));
        }
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|reason| malformed(path, reason))
}

/// Parses IDX bytes; the error says what is wrong.
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.len() < 4 {
        return Err(format!("{} bytes is too short for an IDX header", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!("bad magic number {:02x}{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2], bytes[3]));
    }
    if bytes[2] != 0x08 {
        return Err(format!("element type 0x{:02x} is not unsigned bytes (0x08)", bytes[2]));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 || ndims > 4 {
        return Err(format!("{ndims} dimensions (expected 1 to 4)"));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err("truncated header".into());
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("dimensions overflow")?;
    let body = bytes.len() - header;
    if body < count {
        return Err(format!("truncated: header promises {count} values, file holds {body}"));
    }
    if body > count {
        return Err(format!("oversized: header promises {count} values, file holds {body}"));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// Finds `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::MissingData(format!("{} has no {stem}[.gz]", dir.display())))
}

/// Loads an MNIST-layout directory (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte`,
/// `t10k-…`) as `[28, 28, 1]` images scaled to [0, 1].
pub fn load_idx_dataset(dir: &Path, name: &str) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::MissingData(format!("{} is not a directory", dir.display())));
    }
    let split = |images: &str, labels: &str| -> Result<(Vec<f32>, Vec<u32>, Vec<usize>)> {
        let (ip, lp) = (find(dir, images)?, find(dir, labels)?);
        let img = read_idx(&ip)?;
        let lab = read_idx(&lp)?;
        if img.dims.len() != 3 {
            return Err(malformed(&ip, format!("images must have 3 dimensions, found {:?}", img.dims)));
        }
        if lab.dims.len() != 1 {
            return Err(malformed(&lp, format!("labels must have 1 dimension, found {:?}", lab.dims)));
        }
        if img.dims[0] != lab.dims[0] {
            return Err(malformed(&lp, format!("{} labels for {} images", lab.dims[0], img.dims[0])));
        }
        if let Some(bad) = lab.data.iter().find(|&&l| l >= 10) {
            return Err(malformed(&lp, format!("label {bad} out of range 0..10")));
        }
        let x = img.data.iter().map(|&v| v as f32 / 255.0).collect();
        let y = lab.data.iter().map(|&l| l as u32).collect();
        Ok((x, y, vec![img.dims[1], img.dims[2], 1]))
    };
    let (x, y, shape) = split("train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let (x_test, y_test, shape_test) = split("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    if shape != shape_test {
        return Err(Error::Malformed {
            path: dir.to_path_buf(),
            reason: "train and test images differ in size".into(),
        });
    }
    let d = Dataset { name: name.into(), example_shape: shape, classes: 10, vocab: None, x, y, x_test, y_test };
    d.validate()?;
    Ok(d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// IDX bytes for `dims` with values `0, 1, 2, …` (mod `modulo`).
    pub fn idx_bytes(dims: &[u32], modulo: u32) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        let n: u32 = dims.iter().product();
        b.extend((0..n).map(|i| (i % modulo) as u8));
        b
    }

    pub fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A tiny MNIST-layout directory: 6 train and 4 test 28×28 images, gzip and raw mixed.
    pub fn write_mnist_dir(dir: &Path) {
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&idx_bytes(&[6, 28, 28], 251))).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_bytes(&[6], 10)).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_bytes(&[4, 28, 28], 253)).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_bytes(&[4], 10))).unwrap();
    }

    #[test]
    fn loads_gzip_and_raw_files() {
        let dir = tempfile::tempdir().unwrap();
        write_mnist_dir(dir.path());
        let d = load_idx_dataset(dir.path(), "mnist").unwrap();
        assert_eq!(d.example_shape, vec![28, 28, 1]);
        assert_eq!((d.n_train(), d.n_test()), (6, 4));
        assert_eq!(d.y, vec![0, 1, 2, 3, 4, 5]);
        assert!((d.x[250] - 250.0 / 255.0).abs() < 1e-6 && d.x[251] == 0.0);
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let good = idx_bytes(&[2, 3, 3], 255);
        let mut truncated = good.clone();
        truncated.pop();
        let mut oversized = good.clone();
        oversized.push(0);
        let mut bad_magic = good.clone();
        bad_magic[0] = 7;
        let mut bad_type = good.clone();
        bad_type[2] = 0x0d;
        for (bytes, want) in [
            (truncated, "truncated"),
            (oversized, "oversized"),
            (bad_magic, "magic"),
            (bad_type, "type"),
            (vec![0, 0], "too short"),
            (gzip(&good)[..10].to_vec(), "gzip"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f");
            std::fs::write(&p, &bytes).unwrap();
            let e = read_idx(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("f"), "{e}");
        }
    }

    #[test]
    fn bad_labels_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        write_mnist_dir(dir.path());
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), &idx_bytes(&[6], 12)[..]).unwrap();
        let mut labels = idx_bytes(&[6], 10);
        labels[8 + 5] = 42;
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), labels).unwrap();
        let e = load_idx_dataset(dir.path(), "mnist").unwrap_err().to_string();
        assert!(e.contains("label 42"), "{e}");
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[5], 10)).unwrap();
        let e = load_idx_dataset(dir.path(), "mnist").unwrap_err().to_string();
        assert!(e.contains("5 labels for 6 images"), "{e}");
        std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte")).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[6], 10)).unwrap();
        let e = load_idx_dataset(dir.path(), "mnist").unwrap_err().to_string();
        assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
        let e = load_idx_dataset(&dir.path().join("nope"), "mnist").unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
