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

/// Draws `series` against a logarithmic x axis (`log_x`) or a linear one, y in `y_range`.
pub fn line_chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    log_x: bool,
    y_range: (f64, f64),
) -> Result<()> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    if !x0.is_finite() || !x1.is_finite() {
        return Err(Error::Config(format!("nothing to plot in {}", path.display())));
    }
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let decimals = if x1 - x0 <= 2.0 { 2 } else { 0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
        let mut builder = ChartBuilder::on(&root);
        builder.caption(title, ("sans-serif", 20)).margin(12).x_label_area_size(40).y_label_area_size(56);
        let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
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
    write_atomic(path, svg.as_bytes())
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
