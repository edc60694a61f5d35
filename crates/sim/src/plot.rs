//! PNG plots with plotters: each metric against the round for every run, and utility against ε.

use crate::report::Run;
use plotters::prelude::*;
use std::path::Path;

const FONT_FILES: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf"];
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// plotters draws text with a font registered at run time: Debian's DejaVu (fonts-dejavu-core).
fn register_font() -> Result<(), String> {
    let bytes =
        FONT_FILES.iter().find_map(|f| std::fs::read(f).ok()).ok_or("no TrueType font found: install fonts-dejavu-core")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| "the font could not be read".to_string())
}

type Panel<'a> = ChartContext<
    'a,
    BitMapBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A titled panel with a grid and labelled axes.
fn panel<'a>(
    area: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Panel<'a>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc(x_desc).label_style(("sans-serif", 14)).draw().map_err(|e| e.to_string())?;
    Ok(chart)
}

/// The panel's legend, drawn once its series are.
fn legend(chart: &mut Panel<'_>) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())
}

type Pick = fn(&crate::metrics::Metrics) -> f64;

const METRICS: [(&str, Pick); 4] =
    [("AUC", |m| m.auc), ("log loss", |m| m.logloss), ("HR@10", |m| m.hr10), ("NDCG@10", |m| m.ndcg10)];

fn range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// One panel per metric; runs with a history are lines, runs without (baselines) are flat.
pub fn metrics_vs_round(runs: &[Run], out: &Path) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(out, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_round = runs.iter().map(|r| r.rounds).max().unwrap_or(1).max(1) as f64;
    for ((title, pick), area) in METRICS.iter().zip(root.split_evenly((2, 2))) {
        let values = runs.iter().flat_map(|r| r.history.iter().map(|p| pick(&p.metrics)).chain([pick(&metrics_of(r))]));
        let mut chart =
            panel(&area, &format!("{title} vs round"), "round (epoch for centralized)", 0.0..max_round, range(values))?;
        for (i, run) in runs.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> = if run.history.is_empty() {
                vec![(0.0, pick(&metrics_of(run))), (max_round, pick(&metrics_of(run)))]
            } else {
                run.history.iter().map(|p| (p.round as f64, pick(&p.metrics))).collect()
            };
            if !run.history.is_empty() {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(run.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        legend(&mut chart)?;
    }
    root.present().map_err(|e| e.to_string())
}

/// AUC, HR@10 and NDCG@10 of the DP runs against ε, with the non-private federated run and the
/// popularity baseline as reference lines.
pub fn utility_vs_epsilon(runs: &[Run], out: &Path) -> Result<(), String> {
    register_font()?;
    let dp: Vec<&Run> = runs.iter().filter(|r| r.epsilon.is_some()).collect();
    let root = BitMapBackend::new(out, (1400, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let eps_max = dp.iter().filter_map(|r| r.epsilon).fold(1.0, f64::max) * 1.1;
    let panels = [METRICS[0], METRICS[2], METRICS[3]];
    for ((title, pick), area) in panels.iter().zip(root.split_evenly((1, 3))) {
        let refs: Vec<&Run> = runs.iter().filter(|r| r.name == "federated" || r.name == "popularity").collect();
        let values = dp.iter().chain(&refs).map(|r| pick(&metrics_of(r)));
        let mut chart = panel(&area, &format!("{title} vs ε"), "ε (δ = 1/N^1.1)", 0.0..eps_max, range(values))?;
        let line: Vec<(f64, f64)> = dp.iter().filter_map(|r| Some((r.epsilon?, pick(&metrics_of(r))))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), COLORS[3].stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("federated + DP")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], COLORS[3].stroke_width(2)));
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 4, COLORS[3].filled()))).map_err(|e| e.to_string())?;
        for (i, r) in refs.iter().enumerate() {
            let color = COLORS[i];
            let y = pick(&metrics_of(r));
            chart
                .draw_series(LineSeries::new(vec![(0.0, y), (eps_max, y)], color.stroke_width(1)))
                .map_err(|e| e.to_string())?
                .label(r.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(1)));
        }
        legend(&mut chart)?;
    }
    root.present().map_err(|e| e.to_string())
}

fn metrics_of(r: &Run) -> crate::metrics::Metrics {
    crate::metrics::Metrics { auc: r.auc, logloss: r.logloss, hr10: r.hr10, ndcg10: r.ndcg10 }
}
