//! Line charts as SVG (plotters), written atomically next to each analysis' JSON.

use crate::error::{Error, Result};
use crate::report::write_atomic;
use plotters::prelude::*;
use std::path::Path;

/// One named curve.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io { action: "plotting", path: path.into(), source: std::io::Error::other(e.to_string()) }
}

/// Draws `series` against a logarithmic x axis (`log_x`) or a linear one, y in `y_range`,
/// into the SVG file `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    labels: (&str, &str),
    series: &[Series],
    log_x: bool,
    y_range: (f64, f64),
) -> Result<()> {
    let svg = line_chart_svg(path, title, labels, series, log_x, y_range, (760, 460))?;
    write_atomic(path, svg.as_bytes())
}

/// [`line_chart`] as SVG text of `size` pixels (`path` names the figure in errors).
pub fn line_chart_svg(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    log_x: bool,
    y_range: (f64, f64),
    size: (u32, u32),
) -> Result<String> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if !x0.is_finite() || !x1.is_finite() {
        return Err(Error::Config(format!("nothing to plot in {}", path.display())));
    }
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let decimals = if x1 - x0 <= 2.0 { 2 } else { 0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let mut builder = ChartBuilder::on(&root);
        builder.caption(title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(56);
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK, RGBColor(230, 120, 0), RGBColor(128, 128, 128)];
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_labels(6)
                    .x_label_formatter(&|x| format!("{x:.decimals$}"))
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .draw()
                    .map_err(|e| plot_error(path, e))?;
                for (i, s) in series.iter().enumerate() {
                    let color = colors[i % colors.len()];
                    chart
                        .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                        .map_err(|e| plot_error(path, e))?
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| plot_error(path, e))?;
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| plot_error(path, e))?;
            }};
        }
        if log_x {
            draw!(builder
                .build_cartesian_2d((x0..x1).log_scale(), y_range.0..y_range.1)
                .map_err(|e| plot_error(path, e))?);
        } else {
            draw!(builder.build_cartesian_2d(x0..x1, y_range.0..y_range.1).map_err(|e| plot_error(path, e))?);
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    Ok(svg)
}

/// One column of a dot chart: its label, the values (one dot each) and a published value
/// (a red bar).
pub struct DotColumn {
    pub label: String,
    pub values: Vec<f64>,
    pub published: Option<f64>,
}

/// Dots per column (each seed's value), the column's mean as a black bar and its published
/// value as a red one; y in `y_range`. SVG text (`path` names the figure in errors).
pub fn dot_chart_svg(
    path: &Path,
    title: &str,
    y_label: &str,
    columns: &[DotColumn],
    y_range: (f64, f64),
) -> Result<String> {
    if columns.is_empty() {
        return Err(Error::Config(format!("nothing to plot in {}", path.display())));
    }
    let n = columns.len();
    let mut svg = String::new();
    {
        let width = (120 + 70 * n as u32).max(420);
        let root = SVGBackend::with_string(&mut svg, (width, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, y_range.0..y_range.1)
            .map_err(|e| plot_error(path, e))?;
        let labels: Vec<String> = columns.iter().map(|c| c.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc(y_label)
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (i, c) in columns.iter().enumerate() {
            let x = i as f64;
            let k = c.values.len().max(1) as f64;
            let dots = c.values.iter().enumerate().map(|(j, &v)| {
                let jitter = if k > 1.0 { (j as f64 / (k - 1.0) - 0.5) * 0.3 } else { 0.0 };
                Circle::new((x + jitter, v), 4, BLUE.mix(0.7).filled())
            });
            chart.draw_series(dots).map_err(|e| plot_error(path, e))?;
            if !c.values.is_empty() {
                let mean = c.values.iter().sum::<f64>() / k;
                let bar = PathElement::new(vec![(x - 0.3, mean), (x + 0.3, mean)], BLACK.stroke_width(2));
                chart.draw_series(std::iter::once(bar)).map_err(|e| plot_error(path, e))?;
            }
            if let Some(p) = c.published {
                let bar = PathElement::new(vec![(x - 0.3, p), (x + 0.3, p)], RED.stroke_width(3));
                chart.draw_series(std::iter::once(bar)).map_err(|e| plot_error(path, e))?;
            }
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    Ok(svg)
}

/// One heat map: `values` (rows × cols, row-major, in [0, 1]) and a rectangle to outline
/// (rows `[r0, r1)`, columns `[c0, c1)`).
pub struct HeatMap {
    pub title: String,
    pub rows: usize,
    pub cols: usize,
    pub values: Vec<f32>,
    pub outline: Option<((usize, usize), (usize, usize))>,
}

/// Draws heat maps side by side (white = 0, dark blue = 1), each with its outline in red.
pub fn heat_maps(path: &Path, title: &str, maps: &[HeatMap]) -> Result<()> {
    if maps.is_empty() {
        return Err(Error::Config(format!("nothing to plot in {}", path.display())));
    }
    let panel = 240u32;
    let mut svg = String::new();
    {
        let width = panel * maps.len() as u32 + 20;
        let root = SVGBackend::with_string(&mut svg, (width, panel + 70)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let root = root.titled(title, ("sans-serif", 18)).map_err(|e| plot_error(path, e))?;
        let panels = root.margin(4, 4, 10, 10).split_evenly((1, maps.len()));
        for (area, m) in panels.iter().zip(maps) {
            let mut chart = ChartBuilder::on(area)
                .caption(&m.title, ("sans-serif", 13))
                .margin(6)
                .build_cartesian_2d(0f64..m.cols as f64, m.rows as f64..0f64)
                .map_err(|e| plot_error(path, e))?;
            chart
                .draw_series((0..m.rows).flat_map(|r| (0..m.cols).map(move |c| (r, c))).map(|(r, c)| {
                    let v = m.values.get(r * m.cols + c).copied().unwrap_or(0.0).clamp(0.0, 1.0) as f64;
                    let shade = |full: f64| (255.0 - v * (255.0 - full)) as u8;
                    Rectangle::new(
                        [(c as f64, r as f64), (c as f64 + 1.0, r as f64 + 1.0)],
                        RGBColor(shade(8.0), shade(48.0), shade(107.0)).filled(),
                    )
                }))
                .map_err(|e| plot_error(path, e))?;
            if let Some(((r0, r1), (c0, c1))) = m.outline {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(c0 as f64, r0 as f64), (c1 as f64, r1 as f64)],
                        RED.stroke_width(2),
                    )))
                    .map_err(|e| plot_error(path, e))?;
            }
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    write_atomic(path, svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_the_series() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.svg");
        let s = Series { name: "knn".into(), points: vec![(16.0, 0.5), (64.0, 0.7), (784.0, 0.8)] };
        line_chart(&p, "accuracy", ("dimension", "accuracy"), &[s], true, (0.0, 1.0)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("<svg") && text.contains("knn") && text.contains("<polyline"), "{}", &text[..200]);
    }
}
