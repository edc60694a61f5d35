//! target/sim/report.json (the format of ../shared/BENCH_FORMAT.md, plus each run's history and
//! the configuration) and the table printed at the end.

use crate::metrics::Metrics;
use crate::runs::{Participation, Point, Timing};
use crate::secagg::Dp;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub name: String,
    pub auc: f64,
    pub logloss: f64,
    pub hr10: f64,
    pub ndcg10: f64,
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    pub rounds: usize,
    pub wall_s: f64,
    pub history: Vec<Point>,
    /// Which observer `epsilon` covers (DP runs): "published models", i.e. anyone who sees the
    /// released models, add/remove one device, amplified by sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threat: Option<&'static str>,
    /// ε against one curious server (leader or helper): replace one device, per device over
    /// the rounds an average device joined, protected by the other server's noise (DP runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curious_server_epsilon: Option<f64>,
    /// ε if both servers colluded: only the devices' own noise protects, over the same rounds;
    /// infinite without it, which JSON writes as null (DP runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collusion_epsilon: Option<f64>,
    /// The DP mechanism's parameters and the figures behind the ε (DP runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<DpRecord>,
    /// Who took part, round by round (federated runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participation: Option<Participation>,
    /// Where the time went (federated runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
}

/// A DP run's mechanism and the accounting behind its three ε.
#[derive(Debug, Clone, Serialize)]
pub struct DpRecord {
    #[serde(flatten)]
    pub mechanism: Dp,
    /// The published-model ε at the server noise used: at most the run's target `epsilon`.
    pub published_epsilon: f64,
    /// Rounds an average device uploaded in.
    pub rounds_joined_mean: f64,
    /// The most rounds any device uploaded in.
    pub rounds_joined_max: u32,
    /// ε against one curious server for that device.
    pub curious_server_epsilon_max: f64,
    /// Why the shipped SDK's floor (`DevicePolicy::RELEASE`) would refuse this round task;
    /// absent when it accepts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_by_device_floor: Option<String>,
}

impl Run {
    pub fn new(name: &str, m: Metrics, rounds: usize, wall_s: f64, history: Vec<Point>) -> Run {
        Run {
            name: name.into(),
            auc: m.auc,
            logloss: m.logloss,
            hr10: m.hr10,
            ndcg10: m.ndcg10,
            epsilon: None,
            delta: None,
            rounds,
            wall_s,
            history,
            threat: None,
            curious_server_epsilon: None,
            collusion_epsilon: None,
            noise: None,
            participation: None,
            timing: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub dataset: String,
    pub seed: u64,
    pub config: serde_json::Value,
    pub runs: Vec<Run>,
}

pub fn table(runs: &[Run]) -> String {
    let mut out = format!(
        "{:<22} {:>7} {:>8} {:>7} {:>8} {:>8} {:>7} {:>8}\n",
        "run", "AUC", "logloss", "HR@10", "NDCG@10", "epsilon", "rounds", "wall s"
    );
    for r in runs {
        let eps = r.epsilon.map_or("-".to_string(), |e| format!("{e}"));
        out += &format!(
            "{:<22} {:>7.4} {:>8.4} {:>7.4} {:>8.4} {:>8} {:>7} {:>8.1}\n",
            r.name, r.auc, r.logloss, r.hr10, r.ndcg10, eps, r.rounds, r.wall_s
        );
    }
    let fed: Vec<(&Run, &Participation, &Timing)> =
        runs.iter().filter_map(|r| Some((r, r.participation.as_ref()?, r.timing.as_ref()?))).collect();
    if !fed.is_empty() {
        out += &format!(
            "\n{:<22} {:>6} {:>8} {:>9} {:>11} {:>10} {:>11}\n",
            "federated run", "q", "mean n", "skip/drop", "round s p50", "report ms", "servers s/r"
        );
        for (r, p, t) in fed {
            let reports: usize = p.joined.iter().map(|&j| j as usize).sum();
            let released = (p.per_round.len() - p.skipped).max(1) as f64;
            out += &format!(
                "{:<22} {:>6.3} {:>8.1} {:>9} {:>11.2} {:>10.2} {:>11.2}\n",
                r.name,
                p.sampling_rate,
                p.per_round.iter().sum::<usize>() as f64 / p.per_round.len().max(1) as f64,
                format!("{}/{}", p.skipped, p.abandoned),
                median(&t.round_s),
                1e3 * t.reports_s / reports.max(1) as f64,
                t.servers_s / released
            );
        }
    }
    let dp: Vec<(&Run, &DpRecord)> = runs.iter().filter_map(|r| Some((r, r.noise.as_ref()?))).collect();
    if !dp.is_empty() {
        out += &format!(
            "\n{:<22} {:>8} {:>10} {:>10} {:>14} {:>10}\n",
            "DP run", "z/server", "published", "1 server", "1 server, max", "collusion"
        );
        for (r, d) in dp {
            out += &format!(
                "{:<22} {:>8.3} {:>10.3} {:>10.3} {:>14.3} {:>10.3}\n",
                r.name,
                d.mechanism.server_noise,
                d.published_epsilon,
                r.curious_server_epsilon.unwrap_or(f64::NAN),
                d.curious_server_epsilon_max,
                r.collusion_epsilon.unwrap_or(f64::NAN)
            );
        }
    }
    out
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}
