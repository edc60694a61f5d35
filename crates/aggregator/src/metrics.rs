//! Prometheus metrics, rendered by hand in the text exposition format: a few counters, gauges
//! and one latency histogram need no registry.

use crate::reason::Reason;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the upload latency histogram.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0];

#[derive(Debug, Default)]
pub struct Metrics {
    /// The `replica` label of every sample (the `replica` setting).
    replica: String,
    accepted_total: AtomicU64,
    /// By [`Reason::ALL`] index; only upload reasons are ever counted.
    rejected: [AtomicU64; Reason::ALL.len()],
    rounds_closed: AtomicU64,
    rounds_abandoned: AtomicU64,
    round_updates: AtomicU64,
    model_version: AtomicU64,
    rounds_released: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_micros: AtomicU64,
    /// Whether this leader measures (its `hearth_measure_*` series are rendered).
    measuring: AtomicBool,
    measure: MeasureCounters,
}

/// A leader's measurement counters (`src/measure/`).
#[derive(Debug, Default)]
struct MeasureCounters {
    accepted: AtomicU64,
    /// Uploads refused, by their problem's `reason`.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// Reports dropped at aggregation, by DAP's prepare error (or the leader's own step).
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    released: AtomicU64,
    withheld: AtomicU64,
    /// Periods given up: the helper refused their collection `collect::MAX_REFUSALS` times.
    given_up: AtomicU64,
    failures: AtomicU64,
}

impl Metrics {
    /// Metrics of the replica named `replica`.
    pub fn new(replica: &str) -> Metrics {
        Metrics { replica: replica.into(), ..Metrics::default() }
    }

    /// An update was stored; the open round now holds `in_round`.
    pub fn accepted(&self, in_round: u64) {
        self.accepted_total.fetch_add(1, Relaxed);
        self.round_updates.store(in_round, Relaxed);
    }

    /// The open round holds `n` updates (after a restart, or 0 for a new round).
    pub fn round_holds(&self, n: u64) {
        self.round_updates.store(n, Relaxed);
    }

    pub fn rejected(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    pub fn round_closed(&self) {
        self.rounds_closed.fetch_add(1, Relaxed);
    }

    pub fn round_abandoned(&self) {
        self.rounds_abandoned.fetch_add(1, Relaxed);
    }

    pub fn published(&self, model_version: u64, rounds_released: u64) {
        self.model_version.store(model_version, Relaxed);
        self.rounds_released.store(rounds_released, Relaxed);
    }

    /// Renders the `hearth_measure_*` series from now on.
    pub fn measuring(&self) {
        self.measuring.store(true, Relaxed);
    }

    /// A measurement report was stored.
    pub fn measure_accepted(&self) {
        self.measure.accepted.fetch_add(1, Relaxed);
    }

    /// A measurement report upload was refused for `reason`.
    pub fn measure_refused(&self, reason: &'static str) {
        *self.measure.refused.lock().unwrap_or_else(|e| e.into_inner()).entry(reason).or_default() += 1;
    }

    /// A report was dropped at aggregation, uncounted, for `error`.
    pub fn measure_rejected(&self, error: &'static str) {
        *self.measure.rejected.lock().unwrap_or_else(|e| e.into_inner()).entry(error).or_default() += 1;
    }

    /// A period was released with counts, or withheld (fewer than K).
    pub fn measure_released(&self, withheld: bool) {
        let counter = if withheld { &self.measure.withheld } else { &self.measure.released };
        counter.fetch_add(1, Relaxed);
    }

    /// A period's collection was given up (recorded failed, its reports deleted).
    pub fn measure_given_up(&self) {
        self.measure.given_up.fetch_add(1, Relaxed);
    }

    /// A collection attempt failed and will be retried.
    pub fn measure_failed(&self) {
        self.measure.failures.fetch_add(1, Relaxed);
    }

    pub fn upload_took(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.latency_buckets) {
            if s <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_micros.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// The exposition text; `epsilon_spent` comes from the current snapshot.
    pub fn render(&self, epsilon_spent: f64) -> String {
        let mut out = String::new();
        // Samples as (name suffix, labels other than replica, value).
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (suffix, labels, v) in samples {
                let sep = if labels.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{name}{suffix}{{replica=\"{}\"{sep}{labels}}} {v}", self.replica);
            }
        };
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        let one = |a: &AtomicU64| vec![("", String::new(), get(a))];
        metric("hearth_updates_accepted_total", "counter", "Updates stored and counted in a round.", &one(&self.accepted_total));
        let rejected: Vec<_> = Reason::ALL
            .iter()
            .zip(&self.rejected)
            .filter(|(r, _)| r.is_upload())
            .map(|(r, c)| ("", format!("reason=\"{}\"", r.code()), get(c)))
            .collect();
        metric("hearth_updates_rejected_total", "counter", "Uploads refused, by reason.", &rejected);
        metric("hearth_rounds_closed_total", "counter", "Rounds released as a new model.", &one(&self.rounds_closed));
        metric(
            "hearth_rounds_abandoned_total",
            "counter",
            "Rounds ended with nothing released: at their deadline, or (leader) refused by the helper or failing the poisoning check.",
            &one(&self.rounds_abandoned),
        );
        metric("hearth_round_updates", "gauge", "Updates held by the open round.", &one(&self.round_updates));
        metric("hearth_model_version", "gauge", "Version of the published model.", &one(&self.model_version));
        metric("hearth_rounds_released", "gauge", "Rounds whose aggregate was released.", &one(&self.rounds_released));
        metric("hearth_epsilon_spent", "gauge", "Central epsilon of the released models.", &[("", String::new(), epsilon_spent)]);
        let mut latency: Vec<_> =
            BUCKETS.iter().zip(&self.latency_buckets).map(|(b, c)| ("_bucket", format!("le=\"{b}\""), get(c))).collect();
        latency.push(("_bucket", "le=\"+Inf\"".into(), get(&self.latency_count)));
        latency.push(("_sum", String::new(), get(&self.latency_micros) / 1e6));
        latency.push(("_count", String::new(), get(&self.latency_count)));
        metric("hearth_upload_seconds", "histogram", "Time from request to verdict for uploads.", &latency);
        if self.measuring.load(Relaxed) {
            let m = &self.measure;
            let by = |label: &str, counts: &Mutex<BTreeMap<&'static str, u64>>| -> Vec<(&str, String, f64)> {
                let counts = counts.lock().unwrap_or_else(|e| e.into_inner());
                counts.iter().map(|(k, v)| ("", format!("{label}=\"{k}\""), *v as f64)).collect()
            };
            metric("hearth_measure_reports_accepted_total", "counter", "Measurement reports stored.", &one(&m.accepted));
            metric(
                "hearth_measure_reports_refused_total",
                "counter",
                "Measurement report uploads refused, by reason.",
                &by("reason", &m.refused),
            );
            metric(
                "hearth_measure_reports_rejected_total",
                "counter",
                "Stored reports dropped uncounted at aggregation (the proof failed, the helper refused them), by error.",
                &by("error", &m.rejected),
            );
            metric("hearth_measure_periods_released_total", "counter", "Periods released with noised counts.", &one(&m.released));
            metric(
                "hearth_measure_periods_withheld_total",
                "counter",
                "Periods withheld: fewer than K reports.",
                &one(&m.withheld),
            );
            metric(
                "hearth_measure_periods_failed_total",
                "counter",
                "Periods whose collection the helper kept refusing: recorded failed, not released, reports deleted.",
                &one(&m.given_up),
            );
            metric(
                "hearth_measure_collection_failures_total",
                "counter",
                "Collection attempts that failed (helper unreachable or refusing, storage) and are retried.",
                &one(&m.failures),
            );
        }
        out
    }
}
