//! The collector's reports of the released periods, in three forms: JSON (`/v1/measure/reports`),
//! CSV (`/v1/measure/reports.csv`) and a server-rendered HTML page (`/reports/`) for publishers
//! and advertisers.
//!
//! Every figure carries its noise's 95% interval. A released count is the true (capped) count
//! plus both servers' discrete Gaussian noise, so [`TaskParams::half_width`] bounds the error;
//! the interval shown is that band intersected with what a true count can be (a whole number, not
//! below zero), which keeps its coverage. Totals over periods add the periods' independent noises,
//! so their half-width grows with √periods. CTR's interval holds whenever both counts' 97.5%
//! intervals do, so at least 95% of the time whatever the noises' dependence (union bound).
//!
//! None of the three shows how many reports a released period had: that count is exact, and
//! publishing it would reveal whether one browser reported, which the noise on the counts is there
//! to hide. What every reader does learn is whether a period reached K reports.
//!
//! The page has no script and no external asset; every string from the task (campaign names come
//! from the catalog) is escaped.

use super::release::Release;
use hearth_core::measure::{Cell, Kind, TargetKind, TaskParams};
use serde_json::{Value, json};
use std::fmt::Write;

/// The confidence of every interval shown.
const CONFIDENCE: f64 = 0.95;
/// The confidence of the interval that holds a whole period's table at once.
const TABLE_CONFIDENCE: f64 = 0.99;
/// Each count's confidence in a ratio's interval: both hold together with at least 1 − 2·0.025.
const RATIO_EACH: f64 = 0.975;
/// Campaigns plotted, most impressions first (every one is in the tables).
const PLOTTED: usize = 12;
/// Seconds in a day, for dates and durations.
const DAY: u64 = 86_400;

/// Colours of the page. Each foreground has a contrast of at least 4.5:1 against each background
/// (WCAG 2 AA for text; the plots' marks are held to the same), which a test checks.
const INK: &str = "#1b1b1b";
const MUTED: &str = "#555555";
const IMPRESSIONS: &str = "#1d4f91";
const CLICKS: &str = "#a33b00";
const PAPER: &str = "#ffffff";
const SHADE: &str = "#eef1f5";
#[cfg(test)]
const FOREGROUNDS: [&str; 4] = [INK, MUTED, IMPRESSIONS, CLICKS];
#[cfg(test)]
const BACKGROUNDS: [&str; 2] = [PAPER, SHADE];

/// The noise-consistent range of a true count: the whole numbers, not below zero, within a
/// half-width of the released count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    low: i64,
    high: i64,
}

impl Interval {
    fn around(count: i64, half_width: f64) -> Interval {
        let c = count as f64;
        // A band entirely below zero (noise beyond the interval) leaves only 0.
        Interval { low: (c - half_width).ceil().max(0.0) as i64, high: (c + half_width).floor().max(0.0) as i64 }
    }
}

/// A ratio of two released counts (clicks per impression) with the range it can take when both
/// counts lie in their intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio {
    value: f64,
    low: f64,
    high: f64,
}

impl Ratio {
    /// `None` when the denominator's interval reaches zero: the ratio is then unbounded, and the
    /// page says "—".
    fn of(numerator: i64, denominator: i64, half_width_each: f64) -> Option<Ratio> {
        let (n, d) = (Interval::around(numerator, half_width_each), Interval::around(denominator, half_width_each));
        (d.low > 0).then(|| Ratio {
            value: numerator.max(0) as f64 / denominator as f64,
            low: n.low as f64 / d.high as f64,
            high: n.high as f64 / d.low as f64,
        })
    }
}

/// A campaign or slot and the indices of its four cells, in [`Kind::ALL`] order.
struct Target<'a> {
    kind: TargetKind,
    name: &'a str,
    cells: [usize; 4],
}

impl Target<'_> {
    fn count(&self, counts: &[i64], kind: Kind) -> i64 {
        counts[self.cells[kind.offset()]]
    }
}

/// One period: its start and its counts, `None` when withheld or failed (then `failed` says why).
struct Period<'a> {
    start: u64,
    counts: Option<&'a [i64]>,
    failed: Option<&'a str>,
}

/// What all three forms show, gathered once: the task's targets and the periods in time order.
struct Sheet<'a> {
    task: &'a TaskParams,
    targets: Vec<Target<'a>>,
    periods: Vec<Period<'a>>,
    /// The sum of the released periods' counts, per cell (zeros when none was released).
    totals: Vec<i64>,
    released: usize,
    /// Periods whose collection failed (the rest of the unreleased were withheld).
    failed: usize,
}

impl<'a> Sheet<'a> {
    fn new(task: &'a TaskParams, releases: &'a [Release]) -> Sheet<'a> {
        let names =
            task.campaigns.iter().map(|n| (TargetKind::Campaign, n)).chain(task.slots.iter().map(|n| (TargetKind::Slot, n)));
        let targets = names
            .filter_map(|(kind, name)| {
                let cells = Kind::ALL.map(|k| task.index(kind, name, k));
                Some(Target { kind, name, cells: [cells[0]?, cells[1]?, cells[2]?, cells[3]?] })
            })
            .collect();
        let mut periods: Vec<Period> = releases
            .iter()
            .filter(|r| match &r.counts {
                Some(c) if c.len() != task.length() => {
                    // A release of another layout cannot be read with this task's cells.
                    tracing::error!(
                        period = r.period_start,
                        cells = c.len(),
                        expected = task.length(),
                        "release left out of the reports"
                    );
                    false
                }
                _ => true,
            })
            .map(|r| Period { start: r.period_start, counts: r.counts.as_deref(), failed: r.failed.as_deref() })
            .collect();
        periods.sort_by_key(|p| p.start);
        let mut totals = vec![0i64; task.length()];
        let mut released = 0;
        for counts in periods.iter().filter_map(|p| p.counts) {
            released += 1;
            totals.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
        }
        let failed = periods.iter().filter(|p| p.failed.is_some()).count();
        Sheet { task, targets, periods, totals, released, failed }
    }

    /// The half-width of one period's count at `confidence`.
    fn half_width(&self, confidence: f64) -> f64 {
        self.task.half_width(confidence)
    }

    /// The half-width of a total at `confidence`: independent noises add in quadrature.
    fn total_half_width(&self, confidence: f64) -> f64 {
        self.half_width(confidence) * (self.released as f64).sqrt()
    }

    fn withheld_note(&self) -> String {
        format!("fewer than K = {} browsers reported: not released", self.task.min_reports)
    }

    /// Why an unreleased period has no counts.
    fn unreleased_note(&self, period: &Period) -> String {
        match period.failed {
            Some(why) => format!("collection failed, not released: {why}"),
            None => self.withheld_note(),
        }
    }
}

/// The reports as JSON: the task, its privacy statements (ε `null` where nothing protects), every
/// period with every cell's count and 95% interval, and the totals over the released periods
/// (`null` before the first).
pub fn json(task: &TaskParams, task_id: &str, releases: &[Release]) -> Value {
    let sheet = Sheet::new(task, releases);
    let cells = task.cells();
    let listed = |counts: &[i64], half_width: f64| -> Vec<Value> {
        cells
            .iter()
            .zip(counts)
            .map(|(cell, &count)| {
                let ci = Interval::around(count, half_width);
                json!({"target": cell.target, "name": cell.name, "kind": cell.kind, "count": count, "ci95_low": ci.low, "ci95_high": ci.high})
            })
            .collect()
    };
    let periods: Vec<Value> = sheet
        .periods
        .iter()
        .map(|p| match p.counts {
            Some(counts) => json!({
                "start": p.start, "end": p.start + task.period_secs, "released": true,
                "cells": listed(counts, sheet.half_width(CONFIDENCE)),
            }),
            None => match p.failed {
                Some(why) => json!({
                    "start": p.start, "end": p.start + task.period_secs, "released": false, "failed": why,
                }),
                None => json!({
                    "start": p.start, "end": p.start + task.period_secs, "released": false,
                    "withheld": sheet.withheld_note(),
                }),
            },
        })
        .collect();
    json!({
        "task_id": task_id,
        "params": task,
        "max_count": task.max_count(),
        "sensitivity": task.sensitivity(),
        "noise_std": task.noise_std(),
        "ci95_half_width": sheet.half_width(CONFIDENCE),
        // Every cell of a period at once, with 99% probability: what a whole table is good to.
        "ci99_all_cells_half_width": task.simultaneous_half_width(TABLE_CONFIDENCE),
        "privacy": task.privacy(),
        "periods": periods,
        // Nothing to add up before the first release.
        "totals": (sheet.released > 0).then(|| json!({
            "periods": sheet.released,
            "ci95_half_width": sheet.total_half_width(CONFIDENCE),
            "cells": listed(&sheet.totals, sheet.total_half_width(CONFIDENCE)),
        })),
    })
}

/// The reports as CSV (RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or
/// line break): a header line, then one row per period and cell; a withheld (or failed) period's
/// rows have status `withheld` (or `failed`) and empty figures.
pub fn csv(task: &TaskParams, releases: &[Release]) -> String {
    let sheet = Sheet::new(task, releases);
    let h = sheet.half_width(CONFIDENCE);
    let mut out = String::from("period_start,period_end,status,target,name,kind,count,ci95_low,ci95_high\r\n");
    let cells = task.cells();
    for p in &sheet.periods {
        let (start, end) = (rfc3339(p.start), rfc3339(p.start + task.period_secs));
        for (i, Cell { target, name, kind }) in cells.iter().enumerate() {
            let figures = match p.counts {
                Some(counts) => {
                    let ci = Interval::around(counts[i], h);
                    format!(
                        "released,{},{},{},{},{},{}",
                        target.as_str(),
                        csv_field(name),
                        kind.as_str(),
                        counts[i],
                        ci.low,
                        ci.high
                    )
                }
                None => format!(
                    "{},{},{},{},,,",
                    if p.failed.is_some() { "failed" } else { "withheld" },
                    target.as_str(),
                    csv_field(name),
                    kind.as_str()
                ),
            };
            let _ = write!(out, "{start},{end},{figures}\r\n");
        }
    }
    out
}

/// One CSV field, quoted (inner quotes doubled) when it holds a separator, quote or line break.
/// A name a spreadsheet would run as a formula (starting `=`, `+`, `-`, `@`, tab or CR) gets a
/// leading `'`, so that opening the export cannot execute a campaign name from the catalog.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() };
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// The reports page: privacy statement, plots of the busiest campaigns and every slot, totals and
/// the full per-period tables.
pub fn html(task: &TaskParams, releases: &[Release]) -> String {
    let sheet = Sheet::new(task, releases);
    let mut out = String::with_capacity(16_384);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Hearth measurement reports</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n\
         <h1>Campaign and slot reports</h1>\n",
        style()
    );
    summary(&mut out, &sheet);
    privacy(&mut out, &sheet);
    plots(&mut out, &sheet);
    totals(&mut out, &sheet);
    per_period(&mut out, &sheet);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn style() -> String {
    format!(
        "body{{font:15px/1.45 system-ui,sans-serif;color:{INK};background:{PAPER};margin:0}}\
         main{{max-width:72rem;margin:0 auto;padding:1rem 1.25rem 3rem}}\
         h1{{font-size:1.6rem}}h2{{margin-top:2.2rem;border-bottom:1px solid {MUTED}}}\
         table{{border-collapse:collapse;margin:.6rem 0 1.2rem;font-variant-numeric:tabular-nums}}\
         caption{{text-align:left;font-weight:600;padding:.3rem 0}}\
         th,td{{padding:.25rem .6rem;text-align:right;vertical-align:top;border-bottom:1px solid {SHADE}}}\
         th[scope=row],thead th:first-child{{text-align:left}}thead th{{background:{SHADE}}}\
         .ci{{display:block;color:{MUTED};font-size:.82em}}.note{{color:{MUTED}}}\
         .figures{{display:grid;grid-template-columns:repeat(auto-fill,minmax(21rem,1fr));gap:1rem}}\
         figure{{margin:0}}figcaption{{font-weight:600;overflow-wrap:anywhere}}svg{{width:100%;height:auto}}\
         a{{color:{IMPRESSIONS}}}.key-i{{color:{IMPRESSIONS}}}.key-c{{color:{CLICKS}}}"
    )
}

fn summary(out: &mut String, sheet: &Sheet) {
    let task = sheet.task;
    let withheld = sheet.periods.len() - sheet.released - sheet.failed;
    let failed = if sheet.failed > 0 { format!(", {} failed", sheet.failed) } else { String::new() };
    let span = match (sheet.periods.first(), sheet.periods.last()) {
        (Some(first), Some(last)) => {
            format!(", from {} to {}", when(first.start, task.period_secs), when(last.start + task.period_secs, task.period_secs))
        }
        _ => String::new(),
    };
    let _ = write!(
        out,
        "<p>{} campaigns and {} slots, counted per period of {}. Periods: {} released, {} withheld{failed}{span}.</p>\n\
         <p>Every figure is a noised count: it differs from the true count by random noise of standard \
         deviation {}, and the range under it is where the true count lies with 95% confidence \
         (±{} for one period; a total over n periods ±{}·√n). All {} counts of one period lie within \
         ±{} of their true values together, with 99% probability. Counts are capped at M = {} per browser, cell \
         and period, and at {} cells per browser and period. CTR is clicks per impression; it shows “—” \
         where the impressions are too few to tell from noise. Why: see <a href=\"#privacy\">Privacy</a>.</p>\n",
        task.campaigns.len(),
        task.slots.len(),
        duration(task.period_secs),
        sheet.released,
        withheld,
        num(task.noise_std()),
        num(sheet.half_width(CONFIDENCE)),
        num(sheet.half_width(CONFIDENCE)),
        task.length(),
        num(task.simultaneous_half_width(TABLE_CONFIDENCE)),
        task.max_count(),
        task.max_cells,
    );
}

fn privacy(out: &mut String, sheet: &Sheet) {
    let task = sheet.task;
    let _ = write!(
        out,
        "<h2 id=\"privacy\">Privacy</h2>\n\
         <p>No server sees what one browser counted. Each browser sends at most one report per period, split \
         into two encrypted shares, one for each of two independent servers (the leader and the helper, \
         IETF DAP with the Prio3 proof system); neither can read a share alone, and the proof lets them \
         check that every count is between 0 and M without reading it. A report counts each \
         (campaign or slot, event) cell at most M = {m} times and at most {cells} cells: beyond that a \
         browser's events are not counted, so one browser moves the released counts by at most \
         Δ = {delta} (Euclidean norm over all cells). The servers release only the sum of at least \
         K = {k} reports per period; a period with fewer is withheld, its reports deleted. Before \
         release each server adds discrete Gaussian noise to every cell of its share of the sum \
         (σ = {sl} at the leader, {sh} at the helper), so that the released counts, and what either \
         server sees, barely depend on any one browser. That noise is why the counts are not exact.</p>\n\
         <table>\n<caption>ε per observer (δ = {d:e}; neighbouring datasets: {n})</caption>\n\
         <thead><tr><th scope=\"col\">Observer</th><th scope=\"col\">Noise σ</th>\
         <th scope=\"col\">ε per period</th><th scope=\"col\">ε per year</th></tr></thead>\n<tbody>\n",
        m = task.max_count(),
        cells = task.max_cells,
        delta = num(task.sensitivity()),
        k = task.min_reports,
        sl = num(task.leader_noise),
        sh = num(task.helper_noise),
        d = task.delta,
        n = esc(hearth_core::measure::task::NEIGHBOURS),
    );
    for s in task.privacy() {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(s.observer),
            if s.sigma > 0.0 { num(s.sigma) } else { "none".into() },
            num(s.epsilon_per_period),
            num(s.epsilon_per_year),
        );
    }
    out.push_str(
        "</tbody>\n</table>\n<p class=\"note\">ε per year composes the periods of 365 days for a browser that \
         reports in every one (zero-concentrated DP, converted once). One curious server sees only the \
         other server's noise on top of the true sum; both servers together could open every report, \
         so the guarantee needs one of them honest. Whether a period reached K reports is shown \
         exactly, as is the task itself (campaigns, slots and settings).</p>\n",
    );
}

/// Small multiples: for the campaigns with the most impressions, then every slot, impressions
/// and clicks per period with their 95% whiskers.
fn plots(out: &mut String, sheet: &Sheet) {
    if sheet.released == 0 {
        return;
    }
    let impressions = |t: &Target| t.count(&sheet.totals, Kind::Impression);
    let mut campaigns: Vec<&Target> = sheet.targets.iter().filter(|t| t.kind == TargetKind::Campaign).collect();
    // Stable: equal totals keep the task's (name) order.
    campaigns.sort_by_key(|t| std::cmp::Reverse(impressions(t)));
    campaigns.truncate(PLOTTED);
    let slots = sheet.targets.iter().filter(|t| t.kind == TargetKind::Slot);
    let _ = write!(
        out,
        "<h2 id=\"plots\">Over time</h2>\n<p>Per period, <span class=\"key-i\">● impressions</span> and \
         <span class=\"key-c\">■ clicks</span>, each with its 95% interval; × marks a period not released (withheld, or its collection failed). \
         The {} campaigns with the most impressions, then every slot; all figures are in the tables below.</p>\n\
         <div class=\"figures\">\n",
        campaigns.len()
    );
    for (i, target) in campaigns.into_iter().chain(slots).enumerate() {
        figure(out, sheet, target, i);
    }
    out.push_str("</div>\n");
}

const WIDTH: f64 = 340.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 10.0;
const PANEL: f64 = 78.0;
/// The tops of the impressions and clicks panels.
const TOPS: [f64; 2] = [22.0, 132.0];
const HEIGHT: f64 = 236.0;

fn figure(out: &mut String, sheet: &Sheet, target: &Target, index: usize) {
    let what = format!("{} {}", singular(target.kind), target.name);
    let range = |kind: Kind| {
        let counts: Vec<i64> = sheet.periods.iter().filter_map(|p| p.counts).map(|c| target.count(c, kind)).collect();
        format!("{} from {} to {}", plural(kind), counts.iter().min().unwrap_or(&0), counts.iter().max().unwrap_or(&0))
    };
    let _ = write!(
        out,
        "<figure>\n<figcaption>{name}</figcaption>\n\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-labelledby=\"plot{index}-t plot{index}-d\" \
         xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\" font-family=\"system-ui,sans-serif\">\n\
         <title id=\"plot{index}-t\">{title}: impressions and clicks per period</title>\n\
         <desc id=\"plot{index}-d\">Over {n} periods ({w} not released): {i}; {c}. Each with its 95% interval in \
         the tables below.</desc>\n",
        name = esc(&what),
        title = esc(&what),
        n = sheet.periods.len(),
        w = sheet.periods.len() - sheet.released,
        i = range(Kind::Impression),
        c = range(Kind::Click),
    );
    for (kind, top, colour) in [(Kind::Impression, TOPS[0], IMPRESSIONS), (Kind::Click, TOPS[1], CLICKS)] {
        panel(out, sheet, target, kind, top, colour);
    }
    // The time axis, under the clicks panel.
    let base = TOPS[1] + PANEL;
    if let (Some(first), Some(last)) = (sheet.periods.first(), sheet.periods.last()) {
        let _ = writeln!(
            out,
            "<text x=\"{LEFT}\" y=\"{y}\" fill=\"{MUTED}\">{a}</text>\
             <text x=\"{x}\" y=\"{y}\" fill=\"{MUTED}\" text-anchor=\"end\">{b}</text>",
            y = base + 18.0,
            x = WIDTH - RIGHT,
            a = when(first.start, sheet.task.period_secs),
            b = when(last.start, sheet.task.period_secs),
        );
    }
    out.push_str("</svg>\n</figure>\n");
}

/// One kind's panel: a y axis from min(0, lowest count) to a round maximum, a point per released
/// period with its whisker, an × per unreleased one.
fn panel(out: &mut String, sheet: &Sheet, target: &Target, kind: Kind, top: f64, colour: &str) {
    let h = sheet.half_width(CONFIDENCE);
    let points: Vec<Option<(i64, Interval)>> = sheet
        .periods
        .iter()
        .map(|p| p.counts.map(|c| target.count(c, kind)).map(|count| (count, Interval::around(count, h))))
        .collect();
    let low = points.iter().flatten().map(|(c, _)| *c).min().unwrap_or(0).min(0);
    let high = round_up(points.iter().flatten().map(|(c, ci)| ci.high.max(*c)).max().unwrap_or(0).max(1));
    let bottom = top + PANEL;
    let y = |v: i64| bottom - (v - low) as f64 / (high - low) as f64 * PANEL;
    let step = (WIDTH - LEFT - RIGHT) / points.len() as f64;
    let x = |i: usize| LEFT + (i as f64 + 0.5) * step;
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{t}\" fill=\"{colour}\" font-weight=\"600\">{label}</text>\n\
         <g fill=\"{MUTED}\" text-anchor=\"end\"><text x=\"{lx}\" y=\"{yh}\">{high}</text>\
         <text x=\"{lx}\" y=\"{y0}\">0</text>",
        t = top - 6.0,
        label = plural(kind),
        lx = LEFT - 6.0,
        yh = y(high) + 4.0,
        y0 = y(0) + 4.0,
    );
    // A label for the lowest count only where it does not sit on the 0 label.
    if y(low) - y(0) >= 12.0 {
        let _ = write!(out, "<text x=\"{}\" y=\"{}\">{low}</text>", LEFT - 6.0, y(low) + 4.0);
    }
    let _ = write!(
        out,
        "</g>\n<path d=\"M{LEFT} {top}V{bottom}M{LEFT} {z}H{r}\" stroke=\"{MUTED}\" fill=\"none\"/>\n<g fill=\"{colour}\" stroke=\"{colour}\">",
        z = y(0),
        r = WIDTH - RIGHT,
    );
    // The line joins consecutive released periods; a withheld one breaks it.
    let mut line = String::new();
    let mut pen_down = false;
    for (i, point) in points.iter().enumerate() {
        match point {
            Some((count, _)) => {
                let _ = write!(line, "{}{:.1} {:.1}", if pen_down { "L" } else { "M" }, x(i), y(*count));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    let _ = write!(out, "<path d=\"{line}\" fill=\"none\" stroke-width=\"1.5\"/>");
    for (i, point) in points.iter().enumerate() {
        let (px, cap) = (x(i), (step / 4.0).min(4.0));
        match point {
            Some((count, ci)) => {
                let (lo, hi, py) = (y(ci.low), y(ci.high), y(*count));
                let _ = write!(
                    out,
                    "<path d=\"M{px:.1} {lo:.1}V{hi:.1}M{:.1} {lo:.1}H{:.1}M{:.1} {hi:.1}H{:.1}\"/>",
                    px - cap,
                    px + cap,
                    px - cap,
                    px + cap
                );
                match kind {
                    Kind::Impression => {
                        let _ = write!(out, "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\"/>");
                    }
                    _ => {
                        let _ = write!(out, "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"6\" height=\"6\"/>", px - 3.0, py - 3.0);
                    }
                }
            }
            None => {
                let _ = write!(
                    out,
                    "<text x=\"{px:.1}\" y=\"{:.1}\" fill=\"{MUTED}\" stroke=\"none\" text-anchor=\"middle\">×</text>",
                    y(0) - 3.0
                );
            }
        }
    }
    out.push_str("</g>\n");
}

/// The smallest 1, 2, 3, 4, 5, 6 or 8 × 10^k at or above `v` (≥ 1): a round top for an axis
/// that the data fills at least half of.
fn round_up(v: i64) -> i64 {
    let mut scale = 1i64;
    loop {
        if let Some(top) = [1, 2, 3, 4, 5, 6, 8].map(|m| m * scale).into_iter().find(|&top| top >= v) {
            return top;
        }
        scale *= 10;
    }
}

fn totals(out: &mut String, sheet: &Sheet) {
    let _ = write!(
        out,
        "<h2 id=\"totals\">Totals over the released periods</h2>\n<p>{} released periods; each total's 95% interval is ±{}.</p>\n",
        sheet.released,
        num(sheet.total_half_width(CONFIDENCE))
    );
    if sheet.released == 0 {
        return;
    }
    let (h, ratio_h) = (sheet.total_half_width(CONFIDENCE), sheet.total_half_width(RATIO_EACH));
    for kind in [TargetKind::Campaign, TargetKind::Slot] {
        table(out, sheet, kind, &format!("{}, totals", title(kind)), &sheet.totals, h, ratio_h);
    }
}

fn per_period(out: &mut String, sheet: &Sheet) {
    out.push_str("<h2 id=\"periods\">Per period</h2>\n");
    let (h, ratio_h) = (sheet.half_width(CONFIDENCE), sheet.half_width(RATIO_EACH));
    for p in sheet.periods.iter().rev() {
        let period = format!(
            "{} to {}",
            when(p.start, sheet.task.period_secs),
            when(p.start + sheet.task.period_secs, sheet.task.period_secs)
        );
        let _ = writeln!(out, "<h3>{period}</h3>");
        match p.counts {
            Some(counts) => {
                for kind in [TargetKind::Campaign, TargetKind::Slot] {
                    table(out, sheet, kind, &format!("{}, {period}", title(kind)), counts, h, ratio_h);
                }
            }
            None => {
                let _ = writeln!(out, "<p class=\"note\">{}.</p>", esc(&sheet.unreleased_note(p)));
            }
        }
    }
}

/// One table of a target kind's rows: each figure with its interval under it.
fn table(out: &mut String, sheet: &Sheet, kind: TargetKind, caption: &str, counts: &[i64], h: f64, ratio_h: f64) {
    let rows: Vec<&Target> = sheet.targets.iter().filter(|t| t.kind == kind).collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<table>\n<caption>{}</caption>\n<thead><tr><th scope=\"col\">{}</th><th scope=\"col\">Impressions</th>\
         <th scope=\"col\">Clicks</th><th scope=\"col\">CTR</th><th scope=\"col\">Conversions</th>\
         <th scope=\"col\">Dismissals</th></tr></thead>\n<tbody>\n",
        esc(caption),
        singular(kind),
    );
    for t in rows {
        let cell = |k: Kind| {
            let count = t.count(counts, k);
            let ci = Interval::around(count, h);
            format!("<td>{count}<span class=\"ci\">{}–{}</span></td>", ci.low, ci.high)
        };
        let ctr = match Ratio::of(t.count(counts, Kind::Click), t.count(counts, Kind::Impression), ratio_h) {
            Some(r) => format!("<td>{}<span class=\"ci\">{}–{}</span></td>", percent(r.value), percent(r.low), percent(r.high)),
            None => "<td>—</td>".into(),
        };
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th>{}{}{ctr}{}{}</tr>",
            esc(t.name),
            cell(Kind::Impression),
            cell(Kind::Click),
            cell(Kind::Conversion),
            cell(Kind::Dismissal),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn title(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Campaign => "Campaigns",
        TargetKind::Slot => "Slots",
    }
}

fn singular(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Campaign => "Campaign",
        TargetKind::Slot => "Slot",
    }
}

fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Impression => "Impressions",
        Kind::Click => "Clicks",
        Kind::Conversion => "Conversions",
        Kind::Dismissal => "Dismissals",
    }
}

/// Text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most three significant digits; ∞ for an unbounded ε.
fn num(x: f64) -> String {
    if x.is_infinite() {
        return "∞".into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// A period length in words.
fn duration(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s.is_multiple_of(DAY) => (s / DAY, "day"),
        s if s.is_multiple_of(3600) => (s / 3600, "hour"),
        s if s.is_multiple_of(60) => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

/// A period boundary for people: the date alone when periods are whole days, else down to the
/// second, in UTC.
fn when(secs: u64, period_secs: u64) -> String {
    let (date, time) = utc(secs);
    if period_secs.is_multiple_of(DAY) && secs.is_multiple_of(DAY) { date } else { format!("{date} {time} UTC") }
}

/// RFC 3339 in UTC.
fn rfc3339(secs: u64) -> String {
    let (date, time) = utc(secs);
    format!("{date}T{time}Z")
}

/// Unix seconds to ("YYYY-MM-DD", "HH:MM:SS") in UTC, by the proleptic Gregorian calendar
/// (the days-to-civil conversion counted in 400-year eras from 0000-03-01).
fn utc(secs: u64) -> (String, String) {
    let (days, rem) = (secs / DAY, secs % DAY);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (format!("{year:04}-{month:02}-{day:02}"), format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::measure::hpke_dap::DapKeyPair;

    /// 2025-01-01T00:00:00Z.
    const DAY0: u64 = 1_735_689_600;
    /// 1.959964 · √(50² + 50²): the 95% half-width of the test task.
    const H95: f64 = 138.5904;

    fn task(campaigns: &[&str], slots: &[&str]) -> TaskParams {
        let collector = DapKeyPair::from_secret(0, &[9; 32]).config();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        TaskParams::new(names(campaigns), names(slots), 2, DAY, 100, 16, 50.0, 50.0, 1e-9, &collector).unwrap()
    }

    fn released(start: u64, counts: Vec<i64>) -> Release {
        Release { period_start: start, reports: 500, counts: Some(counts), failed: None }
    }

    /// Rows of the CSV, split at CRLF (a quoted name may hold a bare LF).
    fn rows(csv: &str) -> Vec<&str> {
        csv.strip_suffix("\r\n").unwrap().split("\r\n").collect()
    }

    #[test]
    fn intervals_are_the_noise_band_cut_to_possible_counts() {
        let t = task(&["a"], &["s"]);
        assert!((t.half_width(CONFIDENCE) - H95).abs() < 1e-3);
        assert_eq!(Interval::around(1000, H95), Interval { low: 862, high: 1138 });
        assert_eq!(Interval::around(50, H95), Interval { low: 0, high: 188 });
        assert_eq!(Interval::around(-200, H95), Interval { low: 0, high: 0 });

        // Two released periods of 1000 each and one withheld: the total's half-width is H95·√2.
        let releases = [
            released(DAY0, vec![1000; 8]),
            Release { period_start: DAY0 + DAY, reports: 7, counts: None, failed: None },
            released(DAY0 + 2 * DAY, vec![1000; 8]),
        ];
        let j = json(&t, "id", &releases);
        assert!((j["ci95_half_width"].as_f64().unwrap() - H95).abs() < 1e-3);
        let cell = &j["periods"][0]["cells"][0];
        assert_eq!(
            (cell["count"].as_i64(), cell["ci95_low"].as_i64(), cell["ci95_high"].as_i64()),
            (Some(1000), Some(862), Some(1138))
        );
        assert_eq!(j["totals"]["periods"], 2);
        assert!((j["totals"]["ci95_half_width"].as_f64().unwrap() - H95 * 2f64.sqrt()).abs() < 1e-3);
        let total = &j["totals"]["cells"][0];
        assert_eq!(
            (total["count"].as_i64(), total["ci95_low"].as_i64(), total["ci95_high"].as_i64()),
            (Some(2000), Some(1805), Some(2195))
        );
        assert!(rows(&csv(&t, &releases))[1].ends_with(",impression,1000,862,1138"));

        // CTR: each count at 97.5% (2.241403 · 70.7107 = 158.49): clicks 30 → 0 to 188,
        // impressions 1000 → 842 to 1158.
        let r = Ratio::of(30, 1000, t.half_width(RATIO_EACH)).unwrap();
        assert_eq!((r.value, r.low), (0.03, 0.0));
        assert!((r.high - 188.0 / 842.0).abs() < 1e-12);
        assert_eq!(Ratio::of(30, 158, t.half_width(RATIO_EACH)), None, "impressions within their interval of zero");
        let page = html(&t, &[released(DAY0, vec![1000, 30, 0, 0, 150, 30, 0, 0])]);
        assert!(page.contains("<td>3.00%<span class=\"ci\">0.00%–22.33%</span></td>"), "{page}");
        assert!(page.contains("<td>—</td>"));
    }

    #[test]
    fn names_from_the_catalog_are_escaped() {
        let t = task(&["<script>alert(1)</script>", "a&b\"c'd"], &["<b>slot</b>"]);
        let page = html(&t, &[released(DAY0, vec![5; t.length()])]);
        assert!(!page.contains("<script") && !page.contains("<b>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a&amp;b&quot;c&#39;d"));
        assert!(page.contains("&lt;b&gt;slot&lt;/b&gt;"));
        // Self-contained: no script, no fetched asset.
        for external in ["src=", "href=\"http", "url(", "@import", "<link"] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(page.starts_with("<!doctype html>\n<html lang=\"en\">"));
    }

    #[test]
    fn csv_quotes_by_rfc_4180() {
        let t = task(&["Acme, \"Spring\" sale\nUK", "plain"], &[]);
        let out = csv(&t, &[released(DAY0, (0..8).collect())]);
        let rows = rows(&out);
        assert_eq!(rows[0], "period_start,period_end,status,target,name,kind,count,ci95_low,ci95_high");
        assert_eq!(
            rows[1],
            "2025-01-01T00:00:00Z,2025-01-02T00:00:00Z,released,campaign,\"Acme, \"\"Spring\"\" sale\nUK\",impression,0,0,138"
        );
        assert_eq!(rows[6], "2025-01-01T00:00:00Z,2025-01-02T00:00:00Z,released,campaign,plain,click,5,0,143");
        assert_eq!(rows.len(), 1 + 8);
        let formula = csv(&task(&["=HYPERLINK(\"x\")"], &[]), &[released(DAY0, vec![0; 4])]);
        assert!(formula.split("\r\n").nth(1).unwrap().contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{formula}");
    }

    #[test]
    fn a_withheld_period_is_shown_as_such_and_no_report_count_is_published() {
        let t = task(&["a"], &["s"]);
        let releases =
            [released(DAY0, vec![40; 8]), Release { period_start: DAY0 + DAY, reports: 7, counts: None, failed: None }];
        let j = json(&t, "id", &releases);
        let withheld = &j["periods"][1];
        assert_eq!(withheld["released"], false);
        assert_eq!(withheld["withheld"], "fewer than K = 100 browsers reported: not released");
        assert!(withheld.get("cells").is_none());
        assert!(j["periods"].as_array().unwrap().iter().all(|p| p.get("reports").is_none()));

        let out = csv(&t, &releases);
        let csv_rows = rows(&out);
        assert_eq!(csv_rows.len(), 1 + 2 * 8);
        assert_eq!(csv_rows[9], "2025-01-02T00:00:00Z,2025-01-03T00:00:00Z,withheld,campaign,a,impression,,,");

        let page = html(&t, &releases);
        assert!(page.contains(
            "<h3>2025-01-02 to 2025-01-03</h3>\n<p class=\"note\">fewer than K = 100 browsers reported: not released.</p>"
        ));
        assert!(page.contains("Periods: 1 released, 1 withheld, from 2025-01-01 to 2025-01-03."));
        assert!(page.contains(">×</text>"), "the plots mark the withheld period");

        let nothing = json(&t, "id", &releases[1..]);
        assert!(nothing["totals"].is_null());
        assert!(!html(&t, &releases[1..]).contains("<svg"));
    }

    #[test]
    fn a_failed_period_is_shown_as_failed_with_its_reason() {
        let t = task(&["a"], &["s"]);
        let why = "the helper refused its collection 5 times; the last: <period_too_short>";
        let failed = Release { period_start: DAY0 + DAY, reports: 120, counts: None, failed: Some(why.into()) };
        let releases = [released(DAY0, vec![40; 8]), failed];
        let j = json(&t, "id", &releases);
        let p = &j["periods"][1];
        assert_eq!((&p["released"], &p["failed"]), (&json!(false), &json!(why)));
        assert!(p.get("withheld").is_none() && p.get("cells").is_none() && p.get("reports").is_none());
        assert_eq!(rows(&csv(&t, &releases))[9], "2025-01-02T00:00:00Z,2025-01-03T00:00:00Z,failed,campaign,a,impression,,,");
        let page = html(&t, &releases);
        assert!(page.contains("Periods: 1 released, 0 withheld, 1 failed, from 2025-01-01 to 2025-01-03."), "{page}");
        assert!(page.contains(
            "<p class=\"note\">collection failed, not released: the helper refused its collection 5 times; the last: &lt;period_too_short&gt;.</p>"
        ));
    }

    #[test]
    fn every_cell_is_reported_with_its_own_count() {
        let t = task(&["c1", "c2", "c3"], &["in-article", "sidebar"]);
        let counts = |offset: i64| (0..t.length() as i64).map(|i| 1000 + 10 * i + offset).collect::<Vec<_>>();
        let releases = [released(DAY0 + DAY, counts(1)), released(DAY0, counts(0))];
        let j = json(&t, "id", &releases);
        let periods = j["periods"].as_array().unwrap();
        assert_eq!(periods[0]["start"], DAY0, "periods in time order");
        for (p, offset) in periods.iter().zip([0, 1]) {
            let cells = p["cells"].as_array().unwrap();
            assert_eq!(cells.len(), t.length());
            for c in cells {
                let target = match c["target"].as_str().unwrap() {
                    "campaign" => TargetKind::Campaign,
                    _ => TargetKind::Slot,
                };
                let i = t.index(target, c["name"].as_str().unwrap(), Kind::parse(c["kind"].as_str().unwrap()).unwrap()).unwrap();
                assert_eq!(c["count"].as_i64().unwrap(), 1000 + 10 * i as i64 + offset);
            }
        }
        let out = csv(&t, &releases);
        let csv_rows = rows(&out);
        for (row, (i, cell)) in csv_rows[1..].iter().zip(t.cells().into_iter().enumerate().cycle()) {
            let f: Vec<&str> = row.split(',').collect();
            assert_eq!((f[3], f[4], f[5]), (cell.target.as_str(), cell.name.as_str(), cell.kind.as_str()));
            let offset = if f[0].starts_with("2025-01-01") { 0 } else { 1 };
            assert_eq!(f[6], (1000 + 10 * i as i64 + offset).to_string());
        }
        assert_eq!(csv_rows.len(), 1 + 2 * t.length());

        let page = html(&t, &releases);
        for offset in [0, 1] {
            for count in counts(offset) {
                assert!(page.contains(&format!("<td>{count}<span")), "{count}");
            }
        }
        for name in ["c1", "c2", "c3", "in-article", "sidebar"] {
            // Two periods and the totals.
            assert_eq!(page.matches(&format!("<th scope=\"row\">{name}</th>")).count(), 3, "{name}");
        }
    }

    #[test]
    fn plots_show_the_twelve_busiest_campaigns_and_every_slot() {
        let names: Vec<String> = (0..14).map(|i| format!("c{i:02}")).collect();
        let t = task(&names.iter().map(String::as_str).collect::<Vec<_>>(), &["s"]);
        let mut counts = vec![0; t.length()];
        for (i, name) in names.iter().enumerate() {
            counts[t.index(TargetKind::Campaign, name, Kind::Impression).unwrap()] = 100 * i as i64;
        }
        let page = html(&t, &[released(DAY0, counts)]);
        let captions: Vec<&str> =
            page.match_indices("<figcaption>").map(|(i, _)| &page[i + 12..i + 12 + page[i + 12..].find('<').unwrap()]).collect();
        let expected: Vec<String> = (2..14).rev().map(|i| format!("Campaign c{i:02}")).chain(["Slot s".to_string()]).collect();
        assert_eq!(captions, expected);
        assert_eq!(page.matches("<svg").count(), 13);
        assert_eq!(page.matches("<title id=").count(), 13, "every plot has a title");
    }

    #[test]
    fn every_colour_meets_the_contrast_minimum() {
        fn luminance(hex: &str) -> f64 {
            let channel = |i: usize| {
                let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
                if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
            };
            0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
        }
        for fg in FOREGROUNDS {
            for bg in BACKGROUNDS {
                let (a, b) = (luminance(fg), luminance(bg));
                let ratio = (a.max(b) + 0.05) / (a.min(b) + 0.05);
                assert!(ratio >= 4.5, "{fg} on {bg}: {ratio:.2}");
            }
        }
        // And the page uses no other colour.
        let t = task(&["a"], &["s"]);
        let page = html(&t, &[released(DAY0, vec![9; 8])]);
        for (i, _) in page.match_indices('#') {
            let code = &page[i..i + 7];
            if code[1..].chars().all(|c| c.is_ascii_hexdigit()) {
                assert!(FOREGROUNDS.contains(&code) || BACKGROUNDS.contains(&code), "{code}");
            }
        }
    }

    #[test]
    fn the_privacy_statement_carries_the_core_numbers() {
        let t = task(&["a"], &["s"]);
        let j = json(&t, "id", &[]);
        let statements = t.privacy();
        assert_eq!(j["privacy"][1]["epsilon_per_period"].as_f64(), Some(statements[1].epsilon_per_period));
        assert!(j["privacy"][2]["epsilon_per_period"].is_null(), "colluding servers: unbounded");
        assert_eq!(j["max_count"], 3);
        let page = html(&t, &[]);
        for s in &statements {
            assert!(page.contains(&format!("<td>{}</td><td>{}</td></tr>", num(s.epsilon_per_period), num(s.epsilon_per_year))));
        }
        for fact in [
            "M = 3 times",
            "at most 16 cells",
            "K = 100 reports",
            "Δ = 12 ",
            "σ = 50 at the leader",
            "periods of 365 days",
            "(δ = 1e-9;",
        ] {
            assert!(page.contains(fact), "{fact}");
        }
    }

    #[test]
    fn a_release_of_another_layout_is_left_out() {
        let t = task(&["a"], &[]);
        let j = json(&t, "id", &[released(DAY0, vec![1, 2, 3]), released(DAY0 + DAY, vec![1, 2, 3, 4])]);
        assert_eq!(j["periods"].as_array().unwrap().len(), 1);
        assert_eq!(j["periods"][0]["start"], DAY0 + DAY);
    }

    #[test]
    fn dates_numbers_and_scales() {
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00:00".into()));
        assert_eq!(utc(951_782_400), ("2000-02-29".into(), "00:00:00".into()));
        assert_eq!(rfc3339(DAY0 + 3_723), "2025-01-01T01:02:03Z");
        assert_eq!(when(DAY0, DAY), "2025-01-01");
        assert_eq!(when(DAY0 + 60, 60), "2025-01-01 00:01:00 UTC");
        assert_eq!(
            (duration(DAY), duration(7 * DAY), duration(3600), duration(90)),
            ("1 day".into(), "7 days".into(), "1 hour".into(), "90 seconds".into())
        );
        assert_eq!(
            (num(138.5904), num(0.02037), num(2.5), num(f64::INFINITY)),
            ("139".into(), "0.0204".into(), "2.5".into(), "∞".into())
        );
        assert_eq!(
            (round_up(1), round_up(3), round_up(7), round_up(1138), round_up(5139), round_up(81)),
            (1, 3, 8, 2000, 6000, 100)
        );
    }
}
