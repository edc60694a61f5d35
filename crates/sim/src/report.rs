//! target/sim/report.json (the format of ../shared/BENCH_FORMAT.md, plus each run's history and
//! the configuration) and the table printed at the end.

use crate::metrics::Metrics;
use crate::runs::Point;
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
    /// Per-device and release noise multipliers of a DP run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<serde_json::Value>,
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
            noise: None,
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
    out
}
