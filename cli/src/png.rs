//! `cohort plot --png FILE`: the same curves as the terminal chart, as a PNG image (plotters'
//! bitmap backend; labels in DejaVu Sans, read from the system's fonts).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use cohort_catalog::read::Point;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Where distributions put DejaVu Sans.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn load_font() -> Result<()> {
    let Some(bytes) = FONTS.iter().find_map(|path| std::fs::read(path).ok()) else {
        bail!(
            "no DejaVu Sans font for the chart's labels (looked in {}); install fonts-dejavu-core (Debian) or dejavu-sans-fonts (RHEL)",
            FONTS.join(", ")
        );
    };
    // The font must live as long as the process: plotters keeps a reference.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("the DejaVu Sans font file is not a usable TrueType font"))?;
    Ok(())
}

/// Writes `series` as a line chart to `path` (written beside it and renamed when complete).
pub(crate) fn write(
    path: &Path,
    title: &str,
    metric: &str,
    series: &[(String, Vec<Point>)],
) -> Result<()> {
    load_font()?;
    let finite = || {
        series
            .iter()
            .flat_map(|(_, points)| points.iter())
            .filter(|p| p.value.is_finite())
    };
    let (Some(x0), Some(x1)) = (
        finite().map(|p| p.step).min(),
        finite().map(|p| p.step).max(),
    ) else {
        bail!("no finite values of {metric} to plot");
    };
    let y0 = finite().map(|p| p.value).fold(f64::INFINITY, f64::min);
    let y1 = finite().map(|p| p.value).fold(f64::NEG_INFINITY, f64::max);
    let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { 0.5 };
    let x1 = if x1 > x0 { x1 } else { x0 + 1 };
    let tmp = path.with_extension("partial.png");
    let draw = || -> Result<()> {
        let root = BitMapBackend::new(&tmp, (1200, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc(if metric == "regret" {
                "budget (units of training)"
            } else {
                "step"
            })
            .y_desc(metric)
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (index, (label, points)) in series.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points
                        .iter()
                        .filter(|p| p.value.is_finite())
                        .map(|p| (p.step, p.value)),
                    color.stroke_width(2),
                ))
                .map_err(|e| anyhow!("{e}"))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow!("{e}"))?;
        Ok(())
    };
    if let Err(e) = draw() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("{}: cannot write the chart", path.display())));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}
