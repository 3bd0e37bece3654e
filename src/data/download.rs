//! `cnnlab data download`: fetch an official archive, check its published MD5, unpack it.
//! The only code in cnnlab that touches the network (and only when asked to).

use crate::data::cifar::Cifar;
use crate::error::{Error, Result};
use md5::{Digest, Md5};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where an archive comes from and what it must hash to.
#[derive(Clone, Copy, Debug)]
pub struct Archive {
    pub url: &'static str,
    pub file_name: &'static str,
    pub md5: &'static str,
}

/// The official CIFAR binary archives and their published MD5 sums.
pub fn cifar_archive(kind: Cifar) -> Archive {
    match kind {
        Cifar::Ten => Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            file_name: "cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
        },
        Cifar::Hundred { .. } => Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            file_name: "cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
        },
    }
}

/// Hex MD5 of a file, streamed.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks `archive`'s MD5 against `expected`, then unpacks the tar.gz into `dir`. Entries that
/// would land outside `dir` are refused by the `tar` crate's `unpack_in`.
pub fn verify_and_unpack(archive: &Path, expected_md5: &str, dir: &Path) -> Result<()> {
    let got = md5_file(archive)?;
    if !got.eq_ignore_ascii_case(expected_md5) {
        return Err(Error::Malformed {
            path: archive.into(),
            reason: format!("MD5 {got} does not match the published {expected_md5}; delete it and download again"),
        });
    }
    let f = std::fs::File::open(archive).map_err(|e| Error::io("opening", archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let bad = |e: std::io::Error| Error::Malformed { path: archive.into(), reason: format!("cannot unpack: {e}") };
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entry.unpack_in(dir).map_err(bad)?;
    }
    Ok(())
}

/// Downloads `archive` into `dir` (through a temporary file), verifies and unpacks it.
#[cfg(feature = "download")]
pub fn download(archive: Archive, dir: &Path, progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<PathBuf> {
    use std::io::Write;
    crate::report::ensure_dir(dir)?;
    let dest = dir.join(archive.file_name);
    if !dest.is_file() {
        let tmp = dir.join(format!(".{}.part", archive.file_name));
        let net = |e: ureq::Error| Error::Io {
            action: "downloading",
            path: PathBuf::from(archive.url),
            source: std::io::Error::other(e.to_string()),
        };
        let response = ureq::get(archive.url).call().map_err(net)?;
        let total = response.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let mut reader = response.into_body().into_reader();
        let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| Error::io("downloading", archive.url, e))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(|e| Error::io("writing", &tmp, e))?;
            done += n as u64;
            progress(done, total);
        }
        out.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io("renaming into", &dest, e))?;
    }
    verify_and_unpack(&dest, archive.md5, dir)?;
    Ok(dest)
}

/// Without the `download` feature: says how to get the archive by hand.
#[cfg(not(feature = "download"))]
pub fn download(archive: Archive, dir: &Path, _progress: &mut dyn FnMut(u64, Option<u64>)) -> Result<PathBuf> {
    Err(Error::Config(format!(
        "this build has no download support; fetch {} into {} and run again, or rebuild with the default features",
        archive.url,
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::cifar::{load_cifar, tests::records};

    /// Builds a cifar-10-binary.tar.gz in the official layout, as the archive is.
    fn build_archive(path: &Path) {
        let f = std::fs::File::create(path).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, bytes).unwrap();
        };
        for i in 1..=5 {
            add(&format!("cifar-10-batches-bin/data_batch_{i}.bin"), &records(Cifar::Ten, 3));
        }
        add("cifar-10-batches-bin/test_batch.bin", &records(Cifar::Ten, 2));
        add("cifar-10-batches-bin/batches.meta.txt", b"airplane\n");
        tar.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn verifies_then_unpacks_into_a_loadable_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("cifar-10-binary.tar.gz");
        build_archive(&archive);
        let md5 = md5_file(&archive).unwrap();
        let out = dir.path().join("data");
        std::fs::create_dir_all(&out).unwrap();
        verify_and_unpack(&archive, &md5, &out).unwrap();
        let d = load_cifar(&out, Cifar::Ten).unwrap();
        assert_eq!((d.n_train(), d.n_test()), (15, 2));
    }

    #[test]
    fn wrong_checksum_or_corrupt_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        build_archive(&archive);
        let e = verify_and_unpack(&archive, cifar_archive(Cifar::Ten).md5, dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not match the published"), "{e}");
        assert!(!dir.path().join("cifar-10-batches-bin").exists(), "nothing unpacked");
        let bytes = std::fs::read(&archive).unwrap();
        std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
        let md5 = md5_file(&archive).unwrap();
        let e = verify_and_unpack(&archive, &md5, dir.path()).unwrap_err().to_string();
        assert!(e.contains("cannot unpack"), "{e}");
    }

    #[test]
    fn md5_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
