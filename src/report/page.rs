//! The HTML report: one self-contained page (inline CSS, figures as data URIs, no script, no
//! network) that follows the argument section by section — the claim, the figure, the numbers
//! beside the published ones, the command that reproduces it. Built from run directories
//! (`reproduce`) and analysis directories (`analyze …`); sections whose files are absent are
//! left out. The page is an askama template (`templates/report.html`, checked at compile time;
//! every value escaped).

use crate::analysis::plot::{dot_chart_svg, line_chart_svg, DotColumn, Series};
use crate::data::{Condition, Dataset};
use crate::error::{Error, Result};
use crate::experiments::reproduce::{curve_name, read_curve_file, ReproduceConfig};

use crate::report::provenance::{self, Provenance};
use crate::report::{write_atomic, Summary};
use crate::train::CurvePoint;
use crate::train::TrainConfig;
use askama::Template;
use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A figure: an SVG or PNG as a data URI.
pub struct Figure {
    pub src: String,
    pub alt: String,
    pub caption: String,
    /// CSS class: "" or "pixels" (upscaled images) / "row" (side by side).
    pub class: String,
}

impl Figure {
    fn svg(svg: &str, alt: &str, caption: &str) -> Self {
        Figure {
            src: format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(svg)),
            alt: alt.into(),
            caption: caption.into(),
            class: String::new(),
        }
    }
}

pub struct HtmlTable {
    pub caption: String,
    pub head: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub struct Section {
    pub id: String,
    pub title: String,
    /// The claim, one sentence.
    pub claim: String,
    pub figures: Vec<Figure>,
    pub tables: Vec<HtmlTable>,
    pub notes: Vec<String>,
    /// The command that reproduces it.
    pub command: String,
    /// The directory it was read from.
    pub source: String,
    /// Place in the argument (sections are sorted by it): the part, then the table within it.
    order: (u32, usize),
}

pub struct ProvenanceTable {
    pub source: String,
    pub rows: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "report.html")]
pub struct Page {
    pub title: String,
    pub version: String,
    pub commit: String,
    pub generated: String,
    pub sections: Vec<Section>,
    pub provenance: Vec<ProvenanceTable>,
}

impl Page {
    pub fn render_html(&self) -> Result<String> {
        self.render().map_err(|e| Error::Internal(format!("rendering the report: {e}")))
    }
}

/// What `cnnlab report` wrote.
#[derive(Debug, serde::Serialize)]
pub struct ReportFile {
    pub path: PathBuf,
    pub bytes: usize,
    pub sections: Vec<String>,
}

impl std::fmt::Display for ReportFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "wrote {} ({:.0} KB): {}",
            self.path.display(),
            self.bytes as f64 / 1024.0,
            self.sections.join(", ")
        )
    }
}

/// Builds the page from `dirs` and writes it to `out` (atomically).
pub fn write_report(dirs: &[PathBuf], out: &Path) -> Result<ReportFile> {
    let page = build(dirs)?;
    let html = page.render_html()?;
    write_atomic(out, html.as_bytes())?;
    Ok(ReportFile {
        path: out.into(),
        bytes: html.len(),
        sections: page.sections.iter().map(|s| s.title.clone()).collect(),
    })
}

/// The page of `dirs` (run or analysis directories). A directory with nothing cnnlab wrote is
/// refused.
pub fn build(dirs: &[PathBuf]) -> Result<Page> {
    if dirs.is_empty() {
        return Err(Error::Config("the report needs at least one run or analysis directory".into()));
    }
    let mut sections = Vec::new();
    let mut provenance = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(Error::NotFound(format!("{} is not a directory", dir.display())));
        }
        let before = sections.len();
        run_sections(dir, &mut sections)?;
        sweep_sections(dir, &mut sections, &mut provenance)?;
        analysis_sections(dir, &mut sections)?;
        if sections.len() == before {
            return Err(Error::NotFound(format!(
                "{} holds no results cnnlab wrote (summary.json of reproduce, a sweep's sweep.json, or an analysis' JSON)",
                dir.display()
            )));
        }
        if let Some(p) = Provenance::read(dir) {
            provenance.push(provenance_table(&dir.display().to_string(), &p));
        }
        for a in ANALYSES {
            if let Some(p) = Provenance::read_from(&provenance::beside(&dir.join(a.json))) {
                provenance.push(provenance_table(&dir.join(a.json).display().to_string(), &p));
            }
        }
    }
    sections.sort_by_key(|s| s.order);
    let mut seen = std::collections::HashMap::new();
    for s in &mut sections {
        let n = seen.entry(s.id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            s.id = format!("{}-{n}", s.id);
        }
    }
    Ok(Page {
        title: "cnnlab: why convolutional networks work so well".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        commit: env!("CNNLAB_GIT_COMMIT").into(),
        generated: provenance::utc(provenance::now_unix()),
        sections,
        provenance,
    })
}

fn provenance_table(source: &str, p: &Provenance) -> ProvenanceTable {
    let mut rows = vec![
        ("command".to_string(), p.command.clone()),
        ("cnnlab".into(), format!("{} (commit {})", p.cnnlab_version, p.git_commit)),
        ("started".into(), p.started.clone()),
        ("wall time".into(), format!("{:.1} s", p.wall_seconds)),
        ("machine".into(), format!("{}, {} cores, {}", p.machine.cpu, p.machine.cores, p.machine.os)),
        ("device".into(), p.device.clone()),
    ];
    for (k, v) in [("dataset", &p.dataset), ("data CRC-32", &p.data_crc32), ("seeds", &p.seeds)] {
        if let Some(v) = v {
            rows.push((k.into(), v.clone()));
        }
    }
    for line in &p.backend_choices {
        rows.push(("backend".into(), line.clone()));
    }
    ProvenanceTable { source: source.into(), rows }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Json { path: path.into(), source: e }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

fn command_of(dir: &Path, fallback: String) -> String {
    Provenance::read(dir).map(|p| p.command).unwrap_or(fallback)
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

/// The sections of a `reproduce` run directory: the table, the learning curves, the
/// permutation on an example.
fn run_sections(dir: &Path, out: &mut Vec<Section>) -> Result<()> {
    let Some(summary) = read_json::<Summary>(&dir.join("summary.json"))? else { return Ok(()) };
    let config = read_json::<ReproduceConfig>(&dir.join("reproduce.json")).ok().flatten();
    let source = dir.display().to_string();
    let command = command_of(dir, format!("cnnlab replay {}", dir.join("reproduce.json").display()));
    let base_seed = config.as_ref().map_or(0, |c| c.base_seed);
    let curves = |model: &str, condition: &str, seeds: usize| -> Vec<Vec<CurvePoint>> {
        (0..seeds as u64)
            .filter_map(|k| read_curve_file(&dir.join(curve_name(model, condition, base_seed + k))))
            .collect()
    };
    let view =
        Table { index: 0, label: summary.dataset.clone(), summary: &summary, command: &command, source: &source };
    results_sections(&view, &curves, out)?;
    if let Some(cfg) = &config {
        let prepared = cfg.data.prepare().ok();
        let shown = prepared.as_ref().and_then(|p| {
            let train = p.train_config(&cfg.train, cfg.base_seed).ok()?;
            permutation_section(&p.data, &train, &command, &source)
        });
        out.extend(shown);
    }
    Ok(())
}

/// The sections of a sweep directory (`cnnlab sweep`): each table's results and curves, the
/// permutation on an example of each dataset; its provenance from the tasks' records.
fn sweep_sections(dir: &Path, out: &mut Vec<Section>, provenance: &mut Vec<ProvenanceTable>) -> Result<()> {
    use crate::experiments::sweep;
    if !dir.join(sweep::MANIFEST).is_file() {
        return Ok(());
    }
    let manifest = sweep::Manifest::load(dir)?;
    let collected = sweep::collect(dir)?;
    let source = dir.display().to_string();
    let command = format!(
        "cnnlab sweep local {source}   # or: cnnlab sweep slurm {source}; every task's run is in {}",
        dir.join(sweep::MANIFEST).display()
    );
    let mut shown: Vec<String> = Vec::new();
    for (i, report) in collected.tables.iter().enumerate() {
        let curves = |model: &str, condition: &str, _: usize| -> Vec<Vec<CurvePoint>> {
            report
                .records
                .iter()
                .filter(|r| r.model.name() == model && r.condition.name() == condition)
                .map(|r| r.result.curve.clone())
                .collect()
        };
        let view = Table {
            index: i,
            label: collected.labels[i].clone(),
            summary: &report.summary,
            command: &command,
            source: &source,
        };
        results_sections(&view, &curves, out)?;
        let table = &manifest.tables[i];
        if !shown.contains(&table.dataset) {
            shown.push(table.dataset.clone());
            // the table's own data source (absolute paths) and resolved config
            let data = table.source.load().ok();
            out.extend(data.and_then(|d| permutation_section(&d, &table.train, &command, &source)));
        }
        provenance.push(ProvenanceTable {
            source: format!("{} ({})", source, collected.labels[i]),
            rows: vec![
                ("sweep".into(), format!("{}: {} tasks in all", manifest.name, manifest.tasks.len())),
                (
                    "table".into(),
                    format!(
                        "{} train / {} test; {} seeds, {} steps",
                        table.n_train, table.n_test, table.seeds, table.train.steps
                    ),
                ),
                ("dataset".into(), table.dataset.clone()),
                ("data CRC-32".into(), table.data_crc32.clone()),
                ("device".into(), report.device.to_string()),
                (
                    "wall time".into(),
                    format!("{:.1} s from the first task's start to the last task's end", report.summary.wall_seconds),
                ),
            ]
            .into_iter()
            .filter(|(_, v): &(String, String)| !v.is_empty())
            .collect(),
        });
    }
    Ok(())
}

/// Each seed's learning curve of (model, condition), given the count of seeds.
type CurvesOf<'a> = dyn Fn(&str, &str, usize) -> Vec<Vec<CurvePoint>> + 'a;

/// What the results sections show: a summary, under a label, with its command and source.
struct Table<'a> {
    /// Its place among the directory's tables.
    index: usize,
    label: String,
    summary: &'a Summary,
    command: &'a str,
    source: &'a str,
}

/// The results table (ours beside the published numbers, each seed a dot) and the learning
/// curves (`curves(model, condition, seeds)`: each seed's curve).
fn results_sections(t: &Table, curves: &CurvesOf, out: &mut Vec<Section>) -> Result<()> {
    let summary = t.summary;
    let conditions: Vec<String> = {
        let mut c: Vec<String> = Vec::new();
        for r in &summary.rows {
            if !c.contains(&r.condition) {
                c.push(r.condition.clone());
            }
        }
        c
    };
    // the table: ours (mean ± sd over seeds, each seed) beside the published number
    let rows = summary
        .rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.condition.clone(),
                format!("{} ± {}", pct(r.accuracy_mean), pct(r.accuracy_std)),
                r.accuracies.iter().map(|&a| pct(a)).collect::<Vec<_>>().join(", "),
                r.reference.map(pct).unwrap_or_else(|| "–".into()),
            ]
        })
        .collect();
    let table = HtmlTable {
        caption: format!("{}: test accuracy %, mean ± sd over seeds, and the published value", t.label),
        head: ["model", "condition", "ours", "each seed", "published"].map(String::from).to_vec(),
        rows,
    };
    let columns: Vec<DotColumn> = summary
        .rows
        .iter()
        .map(|r| DotColumn {
            label: format!("{} {}", r.model, short(&r.condition)),
            values: r.accuracies.iter().map(|a| 100.0 * a).collect(),
            published: r.reference.map(|p| 100.0 * p),
        })
        .collect();
    let svg = dot_chart_svg(Path::new(t.source), &t.label, "test accuracy %", &columns, (0.0, 100.0))?;
    out.push(Section {
        id: "results".into(),
        title: format!("Results: {}", t.label),
        claim: "A CNN beats the networks that see the whole input at once, and one fixed permutation of the input's positions (train and test alike) takes its lead away, while the MLP and the Mixer, blind to position order, do not change.".into(),
        figures: vec![Figure::svg(&svg, "test accuracy of each seed per model and condition", "Each dot is a seed; black bar: the mean; red bar: the published number.")],
        tables: vec![table],
        notes: vec![format!("Wall time of the experiment: {:.1} s.", summary.wall_seconds)],
        command: t.command.into(),
        source: t.source.into(),
        order: (10, 2 * t.index),
    });
    // learning curves: the mean over seeds of each model, per condition
    let mut figures = Vec::new();
    for condition in &conditions {
        let mut acc = Vec::new();
        let mut loss = Vec::new();
        for r in summary.rows.iter().filter(|r| &r.condition == condition) {
            let curves = curves(&r.model, &r.condition, r.accuracies.len());
            if curves.is_empty() {
                continue;
            }
            let mean = |f: fn(&CurvePoint) -> f32| -> Vec<(f64, f64)> {
                let n = curves.iter().map(Vec::len).min().unwrap_or(0);
                (0..n)
                    .map(|i| {
                        let s = curves.iter().map(|c| f(&c[i]) as f64).sum::<f64>() / curves.len() as f64;
                        (curves[0][i].step as f64, s)
                    })
                    .collect()
            };
            acc.push(Series { name: r.model.clone(), points: mean(|p| 100.0 * p.test_accuracy) });
            loss.push(Series { name: r.model.clone(), points: mean(|p| p.train_loss) });
        }
        if acc.is_empty() {
            continue;
        }
        let max_loss =
            loss.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|v| v.is_finite()).fold(0.0, f64::max);
        let path = Path::new(t.source);
        let title = format!("{condition}: test accuracy");
        let a = line_chart_svg(path, &title, ("step", "test accuracy %"), &acc, false, (0.0, 100.0), (620, 380))?;
        let title = format!("{condition}: training loss");
        let l = line_chart_svg(
            path,
            &title,
            ("step", "training loss"),
            &loss,
            false,
            (0.0, max_loss.max(1e-3) * 1.05),
            (620, 380),
        )?;
        for (svg, what) in [(a, "test accuracy"), (l, "training loss")] {
            let mut f = Figure::svg(
                &svg,
                &format!("{what} against step, {condition}"),
                &format!("{condition}: {what}, mean over seeds"),
            );
            f.class = "row".into();
            figures.push(f);
        }
    }
    if !figures.is_empty() {
        out.push(Section {
            id: "curves".into(),
            title: format!("Learning curves: {}", t.label),
            claim: "Under the permutation the CNN still fits its training set but no longer generalises; the MLP and the Mixer learn the same either way.".into(),
            figures,
            tables: vec![],
            notes: vec![],
            command: t.command.into(),
            source: t.source.into(),
            order: (10, 2 * t.index + 1),
        });
    }
    Ok(())
}

fn short(condition: &str) -> &str {
    match condition {
        "original" => "orig",
        "permuted" => "perm",
        "per-example" => "per-ex",
        c => c,
    }
}

/// One test example as the networks see it under each condition: 1-D traces for sequences,
/// images (upscaled, as PNG) for images. Left out where the data cannot be loaded here.
fn permutation_section(data: &Dataset, train: &TrainConfig, command: &str, source: &str) -> Option<Section> {
    let len = data.example_len();
    if data.n_test() == 0 || len == 0 {
        return None;
    }
    let example = data.x_test[..len].to_vec();
    let one = Dataset {
        name: data.name.clone(),
        example_shape: data.example_shape.clone(),
        classes: data.classes,
        vocab: None,
        x: example.clone(),
        y: vec![data.y_test[0]],
        x_test: example.clone(),
        y_test: vec![data.y_test[0]],
    };
    let base_seed = train.seed;
    let views: Vec<(&str, Vec<f32>)> = [Condition::Original, Condition::Permuted, Condition::PerExample]
        .into_iter()
        .map(|c| (c.name(), crate::train::condition_for_run(c, &one, train, base_seed).0.x_test))
        .collect();
    let mut figures = Vec::new();
    if data.example_shape.len() == 2 {
        let channels = data.example_shape[1].max(1);
        for (name, x) in &views {
            let points = x.iter().step_by(channels).enumerate().map(|(i, &v)| (i as f64, v as f64)).collect();
            let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
            let pad = ((hi - lo) * 0.1).max(1e-3) as f64;
            let series = [Series { name: (*name).into(), points }];
            let svg = line_chart_svg(
                Path::new(source),
                name,
                ("position", "value"),
                &series,
                false,
                (lo as f64 - pad, hi as f64 + pad),
                (620, 260),
            )
            .ok()?;
            let mut f = Figure::svg(&svg, &format!("test example 0, {name}"), name);
            f.class = "row".into();
            figures.push(f);
        }
    } else if data.example_shape.len() == 3 {
        let (h, w, c) = (data.example_shape[0], data.example_shape[1], data.example_shape[2]);
        for (name, x) in &views {
            let png = image_png(x, h, w, c)?;
            let src = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png));
            figures.push(Figure {
                src,
                alt: format!("test example 0, {name}"),
                caption: (*name).into(),
                class: "pixels row".into(),
            });
        }
    } else {
        return None;
    }
    Some(Section {
        id: "permutation".into(),
        title: "The permutation, shown".into(),
        claim: "One fixed permutation of positions keeps every value of an example and destroys only which values are neighbours: noise to our eyes, and to the CNN's local windows, yet nothing changes for a network that sees all positions at once.".into(),
        figures,
        tables: vec![],
        notes: vec![format!(
            "Test example 0 of {} (label {}), as normalised for training: original, under the run's fixed permutation (seed {}), and under a permutation of its own (the per-example control).",
            data.name, data.y_test[0], base_seed
        )],
        command: command.into(),
        source: source.into(),
        order: (30, 0),
    })
}

/// An `h`×`w`×`c` example (any range) as a PNG, min-max scaled.
fn image_png(x: &[f32], h: usize, w: usize, c: usize) -> Option<Vec<u8>> {
    let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    let byte = |v: f32| ((v - lo) * scale).round().clamp(0.0, 255.0) as u8;
    let mut buf = std::io::Cursor::new(Vec::new());
    if c == 1 {
        let img = image::GrayImage::from_raw(w as u32, h as u32, x.iter().map(|&v| byte(v)).collect())?;
        img.write_to(&mut buf, image::ImageFormat::Png).ok()?;
    } else if c == 3 {
        let img = image::RgbImage::from_raw(w as u32, h as u32, x.iter().map(|&v| byte(v)).collect())?;
        img.write_to(&mut buf, image::ImageFormat::Png).ok()?;
    } else {
        return None;
    }
    Some(buf.into_inner())
}

/// An analysis: its files, its place in the argument, its claim.
struct Analysis {
    json: &'static str,
    figures: &'static [&'static str],
    id: &'static str,
    title: &'static str,
    claim: &'static str,
    command: &'static str,
    order: u32,
}

const ANALYSES: &[Analysis] = &[
    Analysis {
        json: "dimension.json",
        figures: &["dimension.svg", "samples.svg"],
        id: "dimension",
        title: "The curse of dimensionality",
        claim: "Filling an N-dimensional input space at d points per axis takes d^N examples, and nearest-neighbour interpolation degrades as the input's dimension grows: learning needs something other than coverage.",
        command: "cnnlab analyze dimension",
        order: 40,
    },
    Analysis {
        json: "receptive_field.json",
        figures: &["receptive_field.svg"],
        id: "receptive-field",
        title: "Receptive fields grow with depth",
        claim: "Each convolution sees a 3x3 window, a low-dimensional input; stacking them (and pooling) grows the region a unit depends on, measured here by the gradient of a central unit beside its theoretical window.",
        command: "cnnlab analyze receptive-field --run RUN",
        order: 50,
    },
    Analysis {
        json: "effective_dim.json",
        figures: &["effective_dim.svg"],
        id: "effective-dim",
        title: "Effective dimension",
        claim: "Small windows of natural inputs live in far fewer dimensions than whole inputs: a few principal components carry most of a patch's variance.",
        command: "cnnlab analyze effective-dim --run RUN",
        order: 60,
    },
    Analysis {
        json: "pooling.json",
        figures: &["pooling.svg"],
        id: "pooling",
        title: "Pooling and data size",
        claim: "Max-pooling is mostly efficiency: the networks with and without it end close together once the training set is large enough.",
        command: "cnnlab analyze pooling",
        order: 70,
    },
    Analysis {
        json: "pooling_images.json",
        figures: &["pooling_images.svg"],
        id: "pooling-images",
        title: "Pooling on images",
        claim: "On images too, the CNN without max-pooling generalises about as well as the one with it; pooling buys speed.",
        command: "cnnlab analyze pooling --dataset DATASET",
        order: 71,
    },
    Analysis {
        json: "data_size.json",
        figures: &["data_size.svg"],
        id: "data-size",
        title: "Accuracy against training-set size",
        claim: "The CNN needs far fewer examples than the networks that see the whole input to reach the same accuracy: locality is worth data.",
        command: "cnnlab analyze data-size",
        order: 80,
    },
    Analysis {
        json: "prune.json",
        figures: &["prune.svg"],
        id: "prune",
        title: "Pruning and lottery tickets",
        claim: "Most weights can be removed by magnitude with little loss, and the surviving sparse network, rewound to its original initialisation (a lottery ticket), retrains better than a random mask of the same sparsity.",
        command: "cnnlab analyze prune --run RUN",
        order: 90,
    },
    Analysis {
        json: "distance.json",
        figures: &["distance.svg"],
        id: "distance",
        title: "Text: related tokens far apart",
        claim: "When the answer depends on a pair of far-apart positions (a key and the query that asks for its value), models that compare every pair of positions (attention; here also the Mixer) answer at any distance, while the CNN, which compares positions only inside its window, stays near a guess among the bound values.",
        command: "cnnlab analyze distance",
        order: 100,
    },
];

/// The sections of an analysis directory: each known analysis whose JSON is there, with its
/// figures and its numbers as tables.
fn analysis_sections(dir: &Path, out: &mut Vec<Section>) -> Result<()> {
    for a in ANALYSES {
        let Some(json) = read_json::<Value>(&dir.join(a.json))? else { continue };
        let mut figures = Vec::new();
        for f in a.figures {
            match std::fs::read_to_string(dir.join(f)) {
                Ok(svg) => figures.push(Figure::svg(&svg, &format!("{} ({f})", a.title), f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("reading", dir.join(f), e)),
            }
        }
        out.push(Section {
            id: a.id.into(),
            title: a.title.into(),
            claim: a.claim.into(),
            figures,
            tables: json_tables(&json, a.json),
            notes: vec![],
            command: Provenance::read_from(&provenance::beside(&dir.join(a.json)))
                .map(|p| p.command)
                .unwrap_or_else(|| a.command.into()),
            source: dir.display().to_string(),
            order: (a.order, 0),
        });
    }
    Ok(())
}

/// Rows shown of a long table (the JSON holds them all).
const MAX_ROWS: usize = 60;

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.abs() >= 1e4 || (f != 0.0 && f.abs() < 1e-3) => format!("{f:.3e}"),
            (None, Some(f)) => format!("{f:.4}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        // a short list in full; a long one (a heat map, a spectrum) is a figure's, not a cell's
        Value::Array(a) if a.len() <= 12 && a.iter().all(|x| !x.is_array() && !x.is_object()) => {
            a.iter().map(cell).collect::<Vec<_>>().join(", ")
        }
        Value::Array(a) if a.iter().all(|x| !x.is_array() && !x.is_object()) => format!("[{} values]", a.len()),
        Value::Array(a) => format!("[{} entries]", a.len()),
        Value::Object(o) => format!("{{{} fields}}", o.len()),
    }
}

/// An analysis' JSON as tables: its scalar fields as one key/value table, each list of
/// records as a table of its own (nested lists of records too, one level down).
pub fn json_tables(json: &Value, name: &str) -> Vec<HtmlTable> {
    let mut tables = Vec::new();
    let Value::Object(top) = json else { return tables };
    let scalars: Vec<Vec<String>> = top
        .iter()
        .filter(|(_, v)| {
            !matches!(v, Value::Object(_)) && !v.as_array().is_some_and(|a| a.iter().any(Value::is_object))
        })
        .map(|(k, v)| vec![k.clone(), cell(v)])
        .collect();
    if !scalars.is_empty() {
        tables.push(HtmlTable { caption: name.into(), head: vec!["field".into(), "value".into()], rows: scalars });
    }
    let mut lists: Vec<(String, &Vec<Value>)> = Vec::new();
    for (k, v) in top {
        match v {
            Value::Array(a) if a.iter().any(Value::is_object) => lists.push((k.clone(), a)),
            Value::Object(o) => {
                for (k2, v2) in o {
                    if let Value::Array(a) = v2 {
                        if a.iter().any(Value::is_object) {
                            lists.push((format!("{k}.{k2}"), a));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for (key, list) in lists {
        let mut head: Vec<String> = Vec::new();
        for item in list {
            if let Value::Object(o) = item {
                for (k, v) in o {
                    let nested = v.as_array().is_some_and(|a| a.iter().any(Value::is_object));
                    if !nested && !head.contains(k) {
                        head.push(k.clone());
                    }
                }
            }
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .take(MAX_ROWS)
            .map(|item| head.iter().map(|k| item.get(k).map(cell).unwrap_or_default()).collect())
            .collect();
        let more =
            if list.len() > MAX_ROWS { format!(" (first {MAX_ROWS} of {} rows)", list.len()) } else { String::new() };
        if !head.is_empty() {
            tables.push(HtmlTable { caption: format!("{name}: {key}{more}"), head, rows });
        }
        // one level of nested records (e.g. each lottery chain's rounds)
        for item in list.iter().take(4) {
            if let Value::Object(o) = item {
                for (k, v) in o {
                    if let Value::Array(inner) = v {
                        if inner.iter().any(Value::is_object) {
                            let label: Vec<String> = o
                                .iter()
                                .filter(|(_, x)| x.is_string() || x.is_number())
                                .take(2)
                                .map(|(k, x)| format!("{k} {}", cell(x)))
                                .collect();
                            let sub = Value::Object([(k.clone(), v.clone())].into_iter().collect());
                            for mut t in json_tables(&sub, name) {
                                t.caption = format!("{name}: {key} ({}) / {k}", label.join(", "));
                                tables.push(t);
                            }
                        }
                    }
                }
            }
        }
    }
    tables
}
