//! The measurement task: what is counted, how it is bounded and noised, and what that promises
//! to whom. The leader serves it as JSON; its id is a hash of every parameter, so a device, the
//! helper and the collector that recompute it agree on exactly one task, and any change of
//! layout, bound or noise is a new task whose reports cannot be mixed with the old one's.

use super::hpke_dap::check_suite;
use super::layout::{Cell, Kind, TargetKind};
use super::{MeasureError, Result, Vdaf, dap};
use crate::device::event::MAX_TEXT;
use crate::privacy::accountant;
use prio::codec::{Decode, Encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every released count comes from at least this many reports, whatever a task says.
pub const MIN_REPORTS_FLOOR: u64 = 10;
/// The device's ceiling on ε per period against one curious aggregator (at the task's δ): the
/// SDK refuses a task above it, and a page may only lower it.
pub const DEVICE_MAX_EPSILON: f64 = 4.0;
/// The device counts a period only if it starts at least this long after the last period it
/// counted: at most one report a day whatever the task's period, so that a leader serving short
/// periods cannot multiply what a day of browsing costs (the helper also refuses periods shorter
/// than its own).
pub const DEVICE_REPORT_GAP_SECS: u64 = 86_400;
/// Most campaigns a task may count.
pub const MAX_CAMPAIGNS: usize = 10_000;
/// Most slots a task may count.
pub const MAX_SLOTS: usize = 64;
/// Most bits per cell: M = 2^bits − 1 ≤ 15.
pub const MAX_BITS: u32 = 4;
/// Most nonzero cells one report may carry.
pub const MAX_CELLS: u32 = 64;
/// Shortest period (tests run short ones; deployments a day).
pub const MIN_PERIOD_SECS: u64 = 10;
/// Longest period.
pub const MAX_PERIOD_SECS: u64 = 31 * 86_400;
/// Largest δ a task may state.
pub const MAX_DELTA: f64 = 1e-5;
/// Seconds in the year over which `epsilon_per_year` composes the periods.
const YEAR_SECS: u64 = 365 * 86_400;
/// Domain separation of the task id.
const ID_DOMAIN: &[u8] = b"hearth measurement task v1";

/// A measurement task, as the leader serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskParams {
    /// The catalog's campaigns, sorted and distinct.
    pub campaigns: Vec<String>,
    /// The publisher's slots, sorted and distinct.
    pub slots: Vec<String>,
    /// Bits per cell: each cell is checked in [0, 2^bits), so M = 2^bits − 1.
    pub bits: u32,
    /// Prio3SumVec's chunk length (a proof-size trade-off; fixed by [`TaskParams::new`]).
    pub chunk_length: u32,
    /// The period, in seconds; also DAP's time precision, so a report's time names its period.
    pub period_secs: u64,
    /// K: no period is released from fewer reports.
    pub min_reports: u64,
    /// Most nonzero cells an honest report carries (the device enforces it).
    pub max_cells: u32,
    /// σ of the leader's discrete Gaussian on each cell of its aggregate share.
    pub leader_noise: f64,
    /// σ of the helper's.
    pub helper_noise: f64,
    /// δ of the ε statements.
    pub delta: f64,
    /// The collector's HPKE configuration (DAP encoding, hex): the helper seals its aggregate
    /// share to it.
    pub collector_hpke_config: String,
}

/// One privacy statement: ε against one observer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    /// Who is assumed to look.
    pub observer: &'static str,
    /// The neighbouring relation ε is stated for.
    pub neighbours: &'static str,
    /// The noise standard deviation that protects against this observer (0 when none does).
    pub sigma: f64,
    /// ε per period (infinite when nothing protects).
    pub epsilon_per_period: f64,
    /// ε over a year of periods, composed.
    pub epsilon_per_year: f64,
    /// δ of both.
    pub delta: f64,
}

/// Who each statement is about, in the order [`TaskParams::privacy`] lists them.
pub const OBSERVERS: [&str; 3] =
    ["anyone who sees the released counts", "one curious aggregator, or a Sybil filling the batch", "both aggregators colluding"];
/// The neighbouring relation of every statement.
pub const NEIGHBOURS: &str = "add or remove one browser's report for a period (at most M per cell, at most max_cells cells)";

impl TaskParams {
    /// A task over these campaigns and slots (sorted and deduplicated here), with the chunk
    /// length that minimises the proof, checked.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        campaigns: impl IntoIterator<Item = String>,
        slots: impl IntoIterator<Item = String>,
        bits: u32,
        period_secs: u64,
        min_reports: u64,
        max_cells: u32,
        leader_noise: f64,
        helper_noise: f64,
        delta: f64,
        collector: &dap::HpkeConfig,
    ) -> Result<TaskParams> {
        let sorted = |names: &mut Vec<String>| {
            names.sort();
            names.dedup();
        };
        let (mut campaigns, mut slots): (Vec<String>, Vec<String>) =
            (campaigns.into_iter().collect(), slots.into_iter().collect());
        sorted(&mut campaigns);
        sorted(&mut slots);
        let cells = (campaigns.len() + slots.len()) * Kind::ALL.len();
        let chunk_length = prio::vdaf::prio3::optimal_chunk_length(cells * bits.clamp(1, MAX_BITS) as usize) as u32;
        let task = TaskParams {
            campaigns,
            slots,
            bits,
            chunk_length,
            period_secs,
            min_reports,
            max_cells,
            leader_noise,
            helper_noise,
            delta,
            collector_hpke_config: crate::privacy::seal::hex(
                &collector.get_encoded().map_err(|e| MeasureError::Key(e.to_string()))?,
            ),
        };
        task.validate()?;
        Ok(task)
    }

    /// Checks every parameter's range; the servers check a task at start, the device before
    /// it reports.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(MeasureError::Task(m));
        for (what, names, max) in [("campaigns", &self.campaigns, MAX_CAMPAIGNS), ("slots", &self.slots, MAX_SLOTS)] {
            if names.len() > max {
                return fail(format!("{} {what}, at most {max}", names.len()));
            }
            if let Some(bad) = names.iter().find(|n| n.is_empty() || n.len() > MAX_TEXT) {
                return fail(format!("{what}: {bad:?} must be 1 to {MAX_TEXT} bytes"));
            }
            if names.windows(2).any(|w| w[0] >= w[1]) {
                return fail(format!("{what} must be sorted and distinct"));
            }
        }
        if self.campaigns.is_empty() && self.slots.is_empty() {
            return fail("no campaign and no slot to count".into());
        }
        if !(1..=MAX_BITS).contains(&self.bits) {
            return fail(format!("bits {} must be 1 to {MAX_BITS}", self.bits));
        }
        if !(1..=MAX_CELLS).contains(&self.max_cells) {
            return fail(format!("max_cells {} must be 1 to {MAX_CELLS}", self.max_cells));
        }
        if self.chunk_length == 0 || self.chunk_length as usize > self.length() * self.bits as usize {
            return fail(format!("chunk_length {} out of range", self.chunk_length));
        }
        if !(MIN_PERIOD_SECS..=MAX_PERIOD_SECS).contains(&self.period_secs) {
            return fail(format!("period_secs {} must be {MIN_PERIOD_SECS} to {MAX_PERIOD_SECS}", self.period_secs));
        }
        if self.min_reports < MIN_REPORTS_FLOOR {
            return fail(format!("min_reports {} is below the floor of {MIN_REPORTS_FLOOR}", self.min_reports));
        }
        for (who, sigma) in [("leader_noise", self.leader_noise), ("helper_noise", self.helper_noise)] {
            if !(sigma.is_finite() && sigma > 0.0) {
                return fail(format!("{who} {sigma} must be finite and positive"));
            }
        }
        if !(self.delta > 0.0 && self.delta <= MAX_DELTA) {
            return fail(format!("delta {} must be in (0, {MAX_DELTA}]", self.delta));
        }
        self.collector_config()?;
        Ok(())
    }

    /// The task id: SHA-256 over every parameter, length-prefixed.
    pub fn task_id(&self) -> dap::TaskId {
        let mut h = Sha256::new();
        h.update(ID_DOMAIN);
        let names = |h: &mut Sha256, names: &[String]| {
            h.update((names.len() as u64).to_be_bytes());
            for n in names {
                h.update((n.len() as u64).to_be_bytes());
                h.update(n.as_bytes());
            }
        };
        names(&mut h, &self.campaigns);
        names(&mut h, &self.slots);
        for v in
            [u64::from(self.bits), u64::from(self.chunk_length), self.period_secs, self.min_reports, u64::from(self.max_cells)]
        {
            h.update(v.to_be_bytes());
        }
        for v in [self.leader_noise, self.helper_noise, self.delta] {
            h.update(v.to_bits().to_be_bytes());
        }
        h.update((self.collector_hpke_config.len() as u64).to_be_bytes());
        h.update(self.collector_hpke_config.as_bytes());
        dap::TaskId::from(<[u8; 32]>::from(h.finalize()))
    }

    /// Cells per report.
    pub fn length(&self) -> usize {
        (self.campaigns.len() + self.slots.len()) * Kind::ALL.len()
    }

    /// M: the most one report counts in a cell.
    pub fn max_count(&self) -> u64 {
        (1u64 << self.bits) - 1
    }

    /// The VDAF instance of this task.
    pub fn vdaf(&self) -> Result<Vdaf> {
        Vdaf::new_sum_vec(2, self.bits as usize, self.length(), self.chunk_length as usize)
            .map_err(|e| MeasureError::Task(format!("Prio3SumVec: {e}")))
    }

    /// Every cell, in vector order: each campaign's four kinds, then each slot's.
    pub fn cells(&self) -> Vec<Cell> {
        let targets =
            self.campaigns.iter().map(|n| (TargetKind::Campaign, n)).chain(self.slots.iter().map(|n| (TargetKind::Slot, n)));
        targets.flat_map(|(target, name)| Kind::ALL.map(|kind| Cell { target, name: name.clone(), kind })).collect()
    }

    /// The index of a cell, if the task counts it.
    pub fn index(&self, target: TargetKind, name: &str, kind: Kind) -> Option<usize> {
        let position = match target {
            TargetKind::Campaign => self.campaigns.binary_search_by(|n| n.as_str().cmp(name)).ok()?,
            TargetKind::Slot => self.campaigns.len() + self.slots.binary_search_by(|n| n.as_str().cmp(name)).ok()?,
        };
        Some(position * Kind::ALL.len() + kind.offset())
    }

    /// Δ: the largest L2 distance one honest report makes, M·√max_cells.
    pub fn sensitivity(&self) -> f64 {
        self.max_count() as f64 * f64::from(self.max_cells).sqrt()
    }

    /// Standard deviation of a released count's noise: both servers' draws.
    pub fn noise_std(&self) -> f64 {
        self.leader_noise.hypot(self.helper_noise)
    }

    /// Half-width of the interval that holds a released count's noise with probability
    /// `confidence` (normal approximation of the sum of two discrete Gaussians).
    pub fn half_width(&self, confidence: f64) -> f64 {
        normal_quantile(confidence) * self.noise_std()
    }

    /// Half-width of the interval that holds every cell of one period's release at once with
    /// probability `confidence` (a union bound over the cells: each at 1 − (1 − confidence)/cells).
    /// The per-cell interval misses a few of hundreds of cells in most periods; this one is the
    /// statement "all of this table is this close".
    pub fn simultaneous_half_width(&self, confidence: f64) -> f64 {
        self.half_width(1.0 - (1.0 - confidence) / self.length() as f64)
    }

    /// ε per observer, per period and per year of periods (a device reports at most one period
    /// per [`DEVICE_REPORT_GAP_SECS`], so a year holds at most that many of its reports).
    pub fn privacy(&self) -> Vec<Statement> {
        let periods = YEAR_SECS.div_ceil(self.period_secs.max(DEVICE_REPORT_GAP_SECS)) as f64;
        let statement = |observer, sigma: f64| {
            let (per_period, per_year) = match accountant::gaussian_rho(self.sensitivity(), sigma) {
                Ok(rho) => (
                    accountant::zcdp_epsilon(rho, self.delta).unwrap_or(f64::INFINITY),
                    accountant::zcdp_epsilon(rho * periods, self.delta).unwrap_or(f64::INFINITY),
                ),
                Err(_) => (f64::INFINITY, f64::INFINITY),
            };
            Statement {
                observer,
                neighbours: NEIGHBOURS,
                sigma,
                epsilon_per_period: per_period,
                epsilon_per_year: per_year,
                delta: self.delta,
            }
        };
        let [public, one, both] = OBSERVERS;
        vec![
            statement(public, self.noise_std()),
            statement(one, self.leader_noise.min(self.helper_noise)),
            Statement {
                observer: both,
                neighbours: NEIGHBOURS,
                sigma: 0.0,
                epsilon_per_period: f64::INFINITY,
                epsilon_per_year: f64::INFINITY,
                delta: self.delta,
            },
        ]
    }

    /// ε per period against one curious aggregator: what the device bounds.
    pub fn epsilon_one_aggregator(&self) -> f64 {
        self.privacy()[1].epsilon_per_period
    }

    /// What the device checks before it reports: a valid task whose ε per period against one
    /// curious aggregator is within `max_epsilon` and [`DEVICE_MAX_EPSILON`].
    pub fn device_check(&self, max_epsilon: f64) -> Result<()> {
        self.validate()?;
        let ceiling = max_epsilon.min(DEVICE_MAX_EPSILON);
        let epsilon = self.epsilon_one_aggregator();
        // NaN (no valid ε) is refused too.
        if epsilon.is_nan() || epsilon > ceiling {
            return Err(MeasureError::Task(format!(
                "ε {epsilon:.3} per period against one curious aggregator exceeds this device's ceiling of {ceiling}"
            )));
        }
        Ok(())
    }

    /// The collector's HPKE configuration, decoded and checked for the suite.
    pub fn collector_config(&self) -> Result<dap::HpkeConfig> {
        let bytes = hex_decode(&self.collector_hpke_config)
            .ok_or_else(|| MeasureError::Key("collector_hpke_config is not hex".into()))?;
        let config =
            dap::HpkeConfig::get_decoded(&bytes).map_err(|e| MeasureError::Key(format!("collector_hpke_config: {e}")))?;
        check_suite(&config)?;
        Ok(config)
    }

    /// The period a time (seconds) falls in, as its start.
    pub fn period_of(&self, time_secs: u64) -> u64 {
        time_secs - time_secs % self.period_secs
    }
}

/// Lower-case hex of any length to bytes.
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// z with P(|N(0,1)| ≤ z) = `confidence`, by bisection on erfc.
fn normal_quantile(confidence: f64) -> f64 {
    let tail = 1.0 - confidence.clamp(0.0, 1.0 - 1e-15);
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if libm::erfc(mid / std::f64::consts::SQRT_2) > tail { lo = mid } else { hi = mid }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::hpke_dap::DapKeyPair;

    pub(crate) fn task(campaigns: &[&str], slots: &[&str]) -> TaskParams {
        let collector = DapKeyPair::from_secret(0, &[9; 32]).config();
        TaskParams::new(
            campaigns.iter().map(|s| s.to_string()),
            slots.iter().map(|s| s.to_string()),
            2,
            86_400,
            100,
            16,
            50.0,
            50.0,
            1e-9,
            &collector,
        )
        .unwrap()
    }

    #[test]
    fn cells_are_indexed_campaigns_then_slots_four_kinds_each() {
        let t = task(&["b", "a"], &["top"]);
        assert_eq!(t.campaigns, ["a", "b"]);
        assert_eq!(t.length(), 12);
        let cells = t.cells();
        for (i, c) in cells.iter().enumerate() {
            assert_eq!(t.index(c.target, &c.name, c.kind), Some(i));
        }
        assert_eq!(t.index(TargetKind::Slot, "top", Kind::Click), Some(9));
        assert_eq!(t.index(TargetKind::Campaign, "top", Kind::Click), None);
    }

    #[test]
    fn the_id_commits_to_every_parameter() {
        let t = task(&["a"], &["top"]);
        let id = t.task_id();
        assert_eq!(task(&["a"], &["top"]).task_id(), id);
        let mut changed = t.clone();
        changed.helper_noise = 49.0;
        assert_ne!(changed.task_id(), id);
        let mut changed = t.clone();
        changed.campaigns = vec!["b".into()];
        assert_ne!(changed.task_id(), id);
        let mut changed = t;
        changed.min_reports = 101;
        assert_ne!(changed.task_id(), id);
    }

    #[test]
    fn out_of_range_tasks_are_refused() {
        let t = task(&["a"], &["top"]);
        for bad in [
            TaskParams { bits: 5, ..t.clone() },
            TaskParams { min_reports: 9, ..t.clone() },
            TaskParams { campaigns: vec!["b".into(), "a".into()], ..t.clone() },
            TaskParams { helper_noise: 0.0, ..t.clone() },
            TaskParams { delta: 0.1, ..t.clone() },
            TaskParams { period_secs: 1, ..t.clone() },
            TaskParams { collector_hpke_config: "00".into(), ..t.clone() },
        ] {
            assert!(matches!(bad.validate(), Err(MeasureError::Task(_) | MeasureError::Key(_))), "{bad:?}");
        }
    }

    #[test]
    fn epsilon_matches_the_zcdp_conversion_and_the_device_ceiling_holds() {
        let t = task(&["a"], &["top"]);
        // Δ = 3·√16 = 12; ρ = 144 / (2·50²) = 0.0288.
        assert_eq!(t.sensitivity(), 12.0);
        let one = t.epsilon_one_aggregator();
        assert!((one - accountant::zcdp_epsilon(0.0288, 1e-9).unwrap()).abs() < 1e-12);
        assert!(t.privacy()[0].epsilon_per_period < one);
        assert!(t.privacy()[2].epsilon_per_period.is_infinite());
        assert!(t.privacy()[1].epsilon_per_year > one);
        // A year of daily periods, and no more for shorter ones: the device's one report a day.
        let year = accountant::zcdp_epsilon(0.0288 * 365.0, 1e-9).unwrap();
        assert!((t.privacy()[1].epsilon_per_year - year).abs() < 1e-9);
        let hourly = TaskParams { period_secs: 3600, ..t.clone() };
        assert!((hourly.privacy()[1].epsilon_per_year - year).abs() < 1e-9);
        assert!(t.device_check(4.0).is_ok());
        assert!(t.device_check(one * 0.99).is_err());
        let loud = TaskParams { helper_noise: 5.0, ..t };
        assert!(loud.device_check(100.0).is_err());
    }

    #[test]
    fn intervals_use_both_noises() {
        let t = task(&["a"], &[]);
        assert!((t.half_width(0.95) - 1.959964 * 50f64.hypot(50.0)).abs() < 1e-3);
        assert!((t.half_width(0.99) - 2.575829 * 50f64.hypot(50.0)).abs() < 1e-3);
        // One cell: the union bound is the interval itself; four: each at 1 − 0.01/4.
        assert!((t.simultaneous_half_width(0.99) - t.half_width(1.0 - 0.01 / 4.0)).abs() < 1e-9);
        assert!((t.half_width(1.0 - 0.0025) - 3.023341 * 50f64.hypot(50.0)).abs() < 1e-3);
    }
}
