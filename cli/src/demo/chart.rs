//! The release timeline as an SVG chart: canary weight and success rate (left axis, percent),
//! p99 latency (right axis, ms), and the events marked where they happened.

use std::path::Path;

use plotters::prelude::*;

use serin_controller::error::{Error, Result};

/// One step of the release.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// Seconds since the demo started.
    pub(crate) at: f64,
    /// Canary weight, percent.
    pub(crate) weight: f64,
    /// Measured success rate, percent (analysis steps only).
    pub(crate) success_rate: Option<f64>,
    /// Measured p99, milliseconds (analysis steps only).
    pub(crate) p99_ms: Option<f64>,
    /// Events of the step.
    pub(crate) events: Vec<String>,
}

/// A short label for the events worth marking.
fn label(event: &str) -> Option<String> {
    let short = if event.starts_with("New revision") {
        "new revision".to_owned()
    } else if let Some(w) = event.rsplit_once("canary weight ").map(|(_, w)| w) {
        format!("{w}%")
    } else if event.starts_with("Halt") {
        "halt".to_owned()
    } else if event.starts_with("Rolling back") {
        "rollback".to_owned()
    } else if event.starts_with("Copying") {
        "promote".to_owned()
    } else if event.starts_with("Promotion completed") {
        "succeeded".to_owned()
    } else if event.starts_with("Canary failed") {
        "failed".to_owned()
    } else {
        return None;
    };
    Some(short)
}

/// Draws the chart to `path` (SVG).
/// The analysis' limits, drawn as dashed lines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Thresholds {
    pub(crate) min_success_rate: f64,
    pub(crate) max_p99_ms: f64,
}

pub(crate) fn draw(
    path: &Path,
    samples: &[Sample],
    thresholds: Thresholds,
    title: &str,
) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| Error::Standalone(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
    }
    let end = samples.last().map_or(1.0, |s| s.at).max(1.0);
    let p99_max = samples
        .iter()
        .filter_map(|s| s.p99_ms)
        .fold(thresholds.max_p99_ms * 1.2, f64::max)
        * 1.15;

    let blue = RGBColor(31, 119, 180);
    let green = RGBColor(44, 160, 44);
    let orange = RGBColor(255, 127, 14);
    let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0.0..end, 0.0..110.0)
        .map_err(|e| fail(&e))?
        .set_secondary_coord(0.0..end, 0.0..p99_max);
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("percent")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 latency (ms)")
        .draw()
        .map_err(|e| fail(&e))?;

    // Events: a dashed vertical line and a label, staggered so neighbours do not overlap.
    let mut row = 0;
    for s in samples {
        for text in s.events.iter().filter_map(|e| label(e)) {
            let color = if text == "halt" || text == "rollback" || text == "failed" {
                RED
            } else {
                RGBColor(90, 90, 90)
            };
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(s.at, 0.0), (s.at, 104.0)],
                    3,
                    3,
                    color.mix(0.35).stroke_width(1),
                ))
                .map_err(|e| fail(&e))?;
            let y = 106.0 - f64::from(row % 3) * 4.0;
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (s.at, y),
                    ("sans-serif", 12).into_font().color(&color),
                )))
                .map_err(|e| fail(&e))?;
            row += 1;
        }
    }

    // Thresholds the analysis holds the canary to.
    chart
        .draw_series(DashedLineSeries::new(
            vec![
                (0.0, thresholds.min_success_rate),
                (end, thresholds.min_success_rate),
            ],
            6,
            4,
            green.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| fail(&e))?
        .label(format!(
            "success rate floor ({}%)",
            thresholds.min_success_rate
        ))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green.mix(0.6)));
    chart
        .draw_secondary_series(DashedLineSeries::new(
            vec![(0.0, thresholds.max_p99_ms), (end, thresholds.max_p99_ms)],
            6,
            4,
            orange.mix(0.6).stroke_width(1),
        ))
        .map_err(|e| fail(&e))?
        .label(format!("p99 ceiling ({} ms)", thresholds.max_p99_ms))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange.mix(0.6)));
    // The weight holds between steps: draw it as steps.
    let steps = samples
        .windows(2)
        .flat_map(|w| [(w[1].at, w[0].weight), (w[1].at, w[1].weight)]);
    chart
        .draw_series(LineSeries::new(
            samples
                .first()
                .map(|s| (s.at, s.weight))
                .into_iter()
                .chain(steps),
            blue.stroke_width(3),
        ))
        .map_err(|e| fail(&e))?
        .label("canary weight (%)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(3)));
    let rates: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.at, s.success_rate?)))
        .collect();
    chart
        .draw_series(LineSeries::new(
            rates.iter().copied(),
            green.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("canary success rate (%)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], green.stroke_width(2)));
    chart
        .draw_series(rates.iter().map(|&p| Circle::new(p, 3, green.filled())))
        .map_err(|e| fail(&e))?;
    let p99: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.at, s.p99_ms?)))
        .collect();
    chart
        .draw_secondary_series(LineSeries::new(p99.iter().copied(), orange.stroke_width(2)))
        .map_err(|e| fail(&e))?
        .label("canary p99 latency (ms, right axis)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2)));
    chart
        .draw_secondary_series(p99.iter().map(|&p| Circle::new(p, 3, orange.filled())))
        .map_err(|e| fail(&e))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
