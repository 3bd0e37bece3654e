//! NumPy `.npy` export (through the `npyz` crate), so Python users can load cnnlab's data.

use crate::error::{Error, Result};
use crate::report::write_atomic;
use npyz::WriterBuilder;
use std::path::Path;

/// Writes a float32 array of `shape`.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write(path, shape, data.iter().copied())
}

/// Writes an int64 array of `shape`.
pub fn write_i64(path: &Path, shape: &[usize], data: &[i64]) -> Result<()> {
    write(path, shape, data.iter().copied())
}

fn write<T: npyz::Serialize + npyz::AutoSerialize>(
    path: &Path,
    shape: &[usize],
    data: impl Iterator<Item = T>,
) -> Result<()> {
    let mut bytes = Vec::new();
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let io = |e| Error::io("writing", path, e);
    let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut bytes).begin_nd().map_err(io)?;
    w.extend(data).map_err(io)?;
    w.finish().map_err(io)?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_npyz() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write_f32(&p, &[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(npy.shape(), &[2, 3]);
        assert_eq!(npy.dtype(), npyz::DType::Plain("<f4".parse().unwrap()));
        let v: Vec<f32> = npy.into_vec().unwrap();
        assert_eq!(v, vec![1., 2., 3., 4., 5., 6.]);
    }
}
