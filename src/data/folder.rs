//! An image folder: one subfolder per class of PNG/JPEG files (decoded by the `image` crate).
//!
//! `ROOT/train/<class>/…` and `ROOT/test/<class>/…` when both exist; otherwise `ROOT/<class>/…`
//! split into train and test by a seeded shuffle (`test_fraction` of each class). Images are
//! RGB, channels last, in [0, 1]; every image must have the first image's size unless a size
//! to resize to is given.

use crate::data::Dataset;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Options for reading a folder.
#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Resize every image to (height, width); `None`: all images must share one size.
    pub resize: Option<(u32, u32)>,
    /// Share of each class held out for testing when there is no train/test split on disk.
    pub test_fraction: f64,
    pub seed: u64,
}

impl Default for FolderOptions {
    fn default() -> Self {
        Self { resize: None, test_fraction: 0.2, seed: 0 }
    }
}

/// Class names with their image files.
type ClassFiles = Vec<(String, Vec<PathBuf>)>;

/// Class folders (sorted) and their image files (sorted) under `dir`.
fn class_files(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let path = entry.path();
        // hidden entries (.git, .DS_Store, …) are not classes
        if !path.is_dir() || entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| Error::io("listing", &path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .filter(|p| {
                let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
                matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
            })
            .collect();
        files.sort();
        let name = entry.file_name().to_string_lossy().into_owned();
        classes.push((name, files));
    }
    classes.sort_by(|a, b| a.0.cmp(&b.0));
    if classes.is_empty() {
        return Err(Error::MissingData(format!("{} has no class subfolders", dir.display())));
    }
    if let Some((name, _)) = classes.iter().find(|(_, f)| f.is_empty()) {
        return Err(Error::MissingData(format!("class folder {} in {} has no PNG/JPEG images", name, dir.display())));
    }
    Ok(classes)
}

/// Decodes one image to RGB [0, 1], checking or fixing its size.
fn decode(path: &Path, size: &mut Option<(u32, u32)>, resize: bool, out: &mut Vec<f32>) -> Result<()> {
    let img = image::open(path)
        .map_err(|e| Error::Malformed { path: path.into(), reason: format!("cannot decode image: {e}") })?;
    let mut rgb = img.to_rgb8();
    match *size {
        None if rgb.height() > MAX_SIDE || rgb.width() > MAX_SIDE => {
            return Err(Error::Malformed {
                path: path.into(),
                reason: format!("image is {}x{}: each side is limited to {MAX_SIDE} pixels", rgb.height(), rgb.width()),
            })
        }
        None => *size = Some((rgb.height(), rgb.width())),
        Some((h, w)) if (rgb.height(), rgb.width()) != (h, w) => {
            if resize {
                rgb = image::imageops::resize(&rgb, w, h, image::imageops::FilterType::Triangle);
            } else {
                return Err(Error::Malformed {
                    path: path.into(),
                    reason: format!(
                        "image is {}x{}, expected {h}x{w} (pass a size to resize)",
                        rgb.height(),
                        rgb.width()
                    ),
                });
            }
        }
        Some(_) => {}
    }
    out.extend(rgb.as_raw().iter().map(|&v| v as f32 / 255.0));
    Ok(())
}

/// Largest side of an image, in pixels (resized or as read).
pub const MAX_SIDE: u32 = 8192;

/// Loads an image folder as a dataset named `folder:<root>`.
pub fn load_folder(root: &Path, opts: &FolderOptions) -> Result<Dataset> {
    if !root.is_dir() {
        return Err(Error::MissingData(format!("{} is not a directory", root.display())));
    }
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    let (train, test): (ClassFiles, ClassFiles) = if train_dir.is_dir() && test_dir.is_dir() {
        let (a, b) = (class_files(&train_dir)?, class_files(&test_dir)?);
        let names = |v: &Vec<(String, Vec<PathBuf>)>| v.iter().map(|c| c.0.clone()).collect::<Vec<_>>();
        if names(&a) != names(&b) {
            return Err(Error::Malformed {
                path: root.into(),
                reason: "train and test have different class folders".into(),
            });
        }
        (a, b)
    } else {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let mut train = Vec::new();
        let mut test = Vec::new();
        for (name, mut files) in class_files(root)? {
            files.shuffle(&mut rng);
            let n_test = ((files.len() as f64 * opts.test_fraction).round() as usize)
                .clamp(1, files.len().saturating_sub(1).max(1));
            if files.len() < 2 {
                return Err(Error::MissingData(format!(
                    "class {name} needs at least 2 images to split into train and test"
                )));
            }
            let rest = files.split_off(n_test);
            test.push((name.clone(), files));
            train.push((name, rest));
        }
        (train, test)
    };
    if train.len() < 2 {
        return Err(Error::MissingData(format!(
            "{} has {} class folder(s): a classifier needs at least 2",
            root.display(),
            train.len()
        )));
    }
    let mut size = opts.resize;
    let resize = opts.resize.is_some();
    if let Some((h, w)) = size {
        if h > MAX_SIDE || w > MAX_SIDE {
            return Err(Error::Config(format!("image size {h}x{w}: each side is limited to {MAX_SIDE} pixels")));
        }
        let images: usize = train.iter().chain(&test).map(|c| c.1.len()).sum();
        crate::limits::check_fits("the resized images", 4.0 * 3.0 * h as f64 * w as f64 * images as f64)?;
    }
    let mut load = |classes: &[(String, Vec<PathBuf>)]| -> Result<(Vec<f32>, Vec<u32>)> {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (label, (_, files)) in classes.iter().enumerate() {
            for f in files {
                decode(f, &mut size, resize, &mut x)?;
                y.push(label as u32);
            }
        }
        Ok((x, y))
    };
    let (x, y) = load(&train)?;
    let (x_test, y_test) = load(&test)?;
    let (h, w) = size.unwrap_or((0, 0));
    let d = Dataset {
        name: format!("folder:{}", root.display()),
        example_shape: vec![h as usize, w as usize, 3],
        classes: train.len(),
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
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, value: u8) {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([value, value / 2, 255 - value]));
        img.save(path).unwrap();
    }

    fn make_tree(root: &Path, classes: &[&str], per_class: usize, size: (u32, u32)) {
        for (ci, c) in classes.iter().enumerate() {
            std::fs::create_dir_all(root.join(c)).unwrap();
            for i in 0..per_class {
                write_png(&root.join(c).join(format!("{i}.png")), size.1, size.0, (ci * 100 + i) as u8);
            }
        }
    }

    #[test]
    fn loads_and_splits_a_class_folder() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(dir.path(), &["cat", "dog"], 5, (6, 4));
        // hidden entries (a git checkout of the images, an editor's files) are not classes
        make_tree(dir.path(), &[".git"], 2, (6, 4));
        std::fs::write(dir.path().join("cat").join(".hidden.png"), b"not an image").unwrap();
        let d = load_folder(dir.path(), &FolderOptions::default()).unwrap();
        assert_eq!(d.example_shape, vec![6, 4, 3]);
        assert_eq!((d.n_train(), d.n_test(), d.classes), (8, 2, 2));
        assert_eq!(d.y_test, vec![0, 1]);
        // dog images have red = 100 + i
        let red = d.x_test[6 * 4 * 3];
        assert!((100.0 / 255.0..105.0 / 255.0).contains(&red));
    }

    #[test]
    fn explicit_train_test_split_and_resize() {
        let dir = tempfile::tempdir().unwrap();
        make_tree(&dir.path().join("train"), &["a", "b"], 3, (8, 8));
        make_tree(&dir.path().join("test"), &["a", "b"], 1, (5, 7));
        let e = load_folder(dir.path(), &FolderOptions::default()).unwrap_err().to_string();
        assert!(e.contains("expected 8x8"), "{e}");
        let d = load_folder(dir.path(), &FolderOptions { resize: Some((4, 4)), ..Default::default() }).unwrap();
        assert_eq!((d.example_shape.clone(), d.n_train(), d.n_test()), (vec![4, 4, 3], 6, 2));
    }

    #[test]
    fn broken_folders_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_folder(&dir.path().join("missing"), &FolderOptions::default()).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = load_folder(dir.path(), &FolderOptions::default()).unwrap_err().to_string();
        assert!(e.contains("no class subfolders"), "{e}");
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        let e = load_folder(dir.path(), &FolderOptions::default()).unwrap_err().to_string();
        assert!(e.contains("no PNG/JPEG"), "{e}");
        make_tree(dir.path(), &["empty", "x"], 3, (4, 4));
        std::fs::write(dir.path().join("x").join("broken.png"), b"not a png").unwrap();
        let e = load_folder(dir.path(), &FolderOptions::default()).unwrap_err().to_string();
        assert!(e.contains("broken.png") && e.contains("cannot decode"), "{e}");
    }
}
