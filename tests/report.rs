//! The HTML report, built from short real runs and checked in a real headless browser
//! (Debian's chromium: `--dump-dom` for the rendered page, `--screenshot` for pixels). Where
//! chromium is missing the browser checks say SKIPPED; with CNNLAB_REQUIRE_CHROMIUM=1 (CI) that
//! is a failure instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cnnlab(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cnnlab")).args(args).output().unwrap();
    assert!(out.status.success(), "cnnlab {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
    });
    if found.is_none() && std::env::var("CNNLAB_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
        panic!("chromium is required here (CNNLAB_REQUIRE_CHROMIUM=1) but not installed");
    }
    found
}

fn skip(test: &str, why: &str) {
    // written to the stream itself: `cargo test` does not capture it
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Runs headless chromium on `page` with `args`; its stdout. (As root it needs --no-sandbox,
/// and it exits 0 even when it fails: callers check what it produced.)
fn browser(exe: &Path, page: &Path, args: &[String], profile: &Path) -> String {
    let mut child = Command::new(exe)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The sections of the page, in order, by their ids.
fn section_ids(html: &str) -> Vec<String> {
    html.match_indices("<section id=\"")
        .map(|(i, m)| html[i + m.len()..].split('"').next().unwrap().to_string())
        .collect()
}

/// The text of section `id` (up to the next section).
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html.find(&format!("<section id=\"{id}\"")).unwrap_or_else(|| panic!("no section {id}"));
    let end = html[start + 1..].find("<section id=").map_or(html.len(), |e| start + 1 + e);
    &html[start..end]
}

#[test]
fn a_report_of_short_real_runs_renders_in_a_real_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, an, page) = (tmp.path().join("run"), tmp.path().join("an"), tmp.path().join("report.html"));
    let (r, a) = (run.to_str().unwrap(), an.to_str().unwrap());
    // the experiment with --report, a saved CNN and three analyses of it
    let said = cnnlab(&[
        "--quiet",
        "reproduce",
        "--steps",
        "200",
        "--eval-every",
        "100",
        "--seeds",
        "2",
        "--run-dir",
        r,
        "--report",
        page.to_str().unwrap(),
    ]);
    assert!(said.contains("wrote ") && page.exists(), "{said}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(section_ids(&html), ["results", "curves", "permutation", "provenance"]);
    let cnn = tmp.path().join("cnn");
    cnnlab(&["--quiet", "train", "--model", "cnn", "--steps", "200", "--save", cnn.to_str().unwrap()]);
    cnnlab(&["analyze", "receptive-field", "--run", cnn.to_str().unwrap(), "--examples", "32", "--out", a]);
    cnnlab(&[
        "analyze",
        "effective-dim",
        "--run",
        cnn.to_str().unwrap(),
        "--examples",
        "50",
        "--samples",
        "500",
        "--out",
        a,
    ]);
    cnnlab(&["analyze", "dimension", "--knn-train", "500", "--knn-test", "100", "--out", a]);
    let full = tmp.path().join("full.html");
    cnnlab(&["report", r, a, "--out", full.to_str().unwrap()]);
    let html = std::fs::read_to_string(&full).unwrap();
    let ids = section_ids(&html);
    assert_eq!(
        ids,
        ["results", "curves", "permutation", "dimension", "receptive-field", "effective-dim", "provenance"]
    );
    // self-contained: no script, nothing fetched
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
    for id in &ids[..ids.len() - 1] {
        let s = section(&html, id);
        assert!(s.contains("<img src=\"data:image/"), "section {id} has no figure");
        assert!(s.contains("<pre><code>cnnlab "), "section {id} has no command");
    }
    // the results table: 5 models x 2 conditions, each beside its seeds
    let results = section(&html, "results");
    assert_eq!(results.matches("<tr><td>").count(), 10);
    assert!(
        results.contains("cnnlab --quiet reproduce --steps 200 --eval-every 100 --seeds 2 --run-dir"),
        "the exact command"
    );
    let prov = section(&html, "provenance");
    for want in ["data CRC-32", "machine", "commit", "receptive_field.json", "dimension.json"] {
        assert!(prov.contains(want), "provenance lacks {want}");
    }

    let Some(exe) = chromium() else {
        skip("a_report_of_short_real_runs_renders_in_a_real_browser (browser checks)", "chromium is not installed");
        return;
    };
    let profile = tmp.path().join("profile");
    let dom = browser(&exe, &full, &["--dump-dom".into()], &profile);
    assert!(dom.contains("<section id=\"results\""), "no rendered DOM:\n{}", &dom[..dom.len().min(500)]);
    assert_eq!(section_ids(&dom), ids, "the browser's DOM has the page's sections");
    assert_eq!(section(&dom, "results").matches("<tr><td>").count(), 10);
    for id in &ids[..ids.len() - 1] {
        assert!(section(&dom, id).contains("<img src=\"data:image/"), "rendered section {id} has no figure");
    }
    for bad in ["Error", "error:", "NaN", "undefined"] {
        assert!(!dom.contains(bad), "the page shows {bad:?}");
    }
    // pixels: a screenshot that is not blank
    let shot = tmp.path().join("shot.png");
    browser(&exe, &full, &[format!("--screenshot={}", shot.display()), "--window-size=1200,3000".into()], &profile);
    let img = image::open(&shot).unwrap_or_else(|e| panic!("no screenshot ({e})")).to_rgb8();
    assert_eq!(img.dimensions(), (1200, 3000));
    let dark = img.pixels().filter(|p| p.0.iter().map(|&c| c as u32).sum::<u32>() < 3 * 200).count();
    let colored = img.pixels().filter(|p| p.0[2] as i32 - p.0[0] as i32 > 60).count();
    let n = (img.width() * img.height()) as f64;
    assert!(dark as f64 / n > 0.01, "the screenshot is blank ({dark} dark pixels)");
    assert!(colored > 500, "no plotted (blue) lines or dots in the screenshot ({colored})");
}

#[test]
fn labels_and_paths_render_as_text_and_absent_sections_are_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run<script>alert(1)</script>");
    let r = run.to_str().unwrap();
    cnnlab(&[
        "--quiet",
        "reproduce",
        "--models",
        "mlp",
        "--steps",
        "50",
        "--eval-every",
        "50",
        "--seeds",
        "1",
        "--run-dir",
        r,
    ]);
    // a model label with markup in it
    let summary = run.join("summary.json");
    let text =
        std::fs::read_to_string(&summary).unwrap().replace("\"mlp\"", "\"<script>alert('m')</script><b>mlp</b>\"");
    std::fs::write(&summary, text).unwrap();
    let page = tmp.path().join("p.html");
    cnnlab(&["report", r, "--out", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script") && !html.contains("<b>mlp"), "markup from the data reached the page");
    // askama writes numeric entities
    let escaped = |s: &str| s.replace('<', "&#60;").replace('>', "&#62;").replace('\'', "&#39;");
    assert!(html.contains(&escaped("<script>alert('m')</script><b>mlp</b>")), "the label is not shown as text");
    assert!(html.contains(&escaped("run<script>alert(1)</script>")), "the path is not shown as text");
    // the curves of a model renamed in the summary are not found: that section is left out, the
    // others stay
    assert_eq!(section_ids(&html), ["results", "permutation", "provenance"]);
    if let Some(exe) = chromium() {
        let dom = browser(&exe, &page, &["--dump-dom".into()], &tmp.path().join("profile"));
        assert!(dom.contains("<section id=\"results\""), "no DOM");
        assert!(!dom.contains("<script") && !dom.contains("<b>"), "the browser built elements from the data");
        assert!(dom.contains("&lt;script&gt;"), "the label is not text in the DOM");
    } else {
        skip(
            "labels_and_paths_render_as_text_and_absent_sections_are_left_out (browser checks)",
            "chromium is not installed",
        );
    }
    // a directory with nothing cnnlab wrote is refused in one line
    let out = Command::new(env!("CARGO_BIN_EXE_cnnlab"))
        .args(["report", tmp.path().to_str().unwrap(), "--out", page.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("holds no results cnnlab wrote") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_sweep_directory_reports_each_table() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("sizes.toml");
    std::fs::write(
        &spec,
        "models = [\"cnn\", \"mlp\"]\nconditions = [\"original\"]\nseeds = 1\ntrain_sizes = [500, 1000]\n[train]\nsteps = 100\neval_every = 50\n",
    )
    .unwrap();
    let dir = tmp.path().join("sweep");
    let d = dir.to_str().unwrap();
    cnnlab(&["sweep", "plan", spec.to_str().unwrap(), "--out", d]);
    let page = tmp.path().join("p.html");
    // an unfinished sweep is refused, naming what is missing
    let out = Command::new(env!("CARGO_BIN_EXE_cnnlab"))
        .args(["report", d, "--out", page.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("4 of 4 tasks have no valid result yet")
    );
    cnnlab(&["--quiet", "sweep", "local", d]);
    cnnlab(&["report", d, "--out", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(section_ids(&html), ["results", "curves", "results-2", "curves-2", "permutation", "provenance"]);
    assert!(section(&html, "results").contains("mnist1d (500 train)"));
    assert!(section(&html, "results-2").contains("mnist1d (1000 train)"));
    assert_eq!(section(&html, "results-2").matches("<tr><td>").count(), 2);
    let prov = section(&html, "provenance");
    assert!(prov.contains("sizes: 4 tasks in all") && prov.contains("data CRC-32"), "{prov}");
}
