//! The device's counts for one period, kept by name (not by task index) so that they survive a
//! change of catalog, and bounded so that a page cannot grow them: at most [`TALLY_MAX_CELLS`]
//! cells, each saturating at [`TALLY_MAX_COUNT`]. The task's own bounds (M, max_cells) apply
//! when the measurement is built.

use super::layout::{Kind, TargetKind};
use super::task::{MAX_BITS, TaskParams};
use crate::device::event::MAX_TEXT;
use serde::{Deserialize, Serialize};

/// Most distinct cells a tally keeps; later new cells are not recorded.
pub const TALLY_MAX_CELLS: usize = 256;
/// A cell's count saturates here: the largest M any task may ask for.
pub const TALLY_MAX_COUNT: u32 = (1 << MAX_BITS) - 1;

/// One period's counts, in the order their cells were first recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tally {
    /// The period's start, in seconds since the Unix epoch.
    pub period_start: u64,
    /// Cells in first-recorded order.
    pub cells: Vec<TallyCell>,
}

/// One counted cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TallyCell {
    /// Campaign or slot.
    pub target: TargetKind,
    /// Its name.
    pub name: String,
    /// The event kind.
    pub kind: Kind,
    /// How many, saturating at [`TALLY_MAX_COUNT`].
    pub count: u32,
}

impl Tally {
    /// An empty tally for the period starting at `period_start`.
    pub fn new(period_start: u64) -> Tally {
        Tally { period_start, cells: Vec::new() }
    }

    /// Counts one event of `kind` for its campaign and for its slot (either may be unknown).
    /// Names longer than an event may carry are ignored.
    pub fn record(&mut self, kind: Kind, campaign: Option<&str>, slot: Option<&str>) {
        let targets = [(TargetKind::Campaign, campaign), (TargetKind::Slot, slot)];
        for (target, name) in targets.into_iter().filter_map(|(t, n)| Some((t, n?))) {
            if name.is_empty() || name.len() > MAX_TEXT {
                continue;
            }
            let full = self.cells.len() >= TALLY_MAX_CELLS;
            match self.cells.iter_mut().find(|c| c.target == target && c.kind == kind && c.name == name) {
                Some(cell) => cell.count = (cell.count + 1).min(TALLY_MAX_COUNT),
                None if !full => self.cells.push(TallyCell { target, name: name.to_string(), kind, count: 1 }),
                None => {}
            }
        }
    }

    /// The measurement for `task`: each known cell's count clipped at M, keeping the first
    /// `max_cells` cells the task knows and dropping the rest, so that the report's L2 norm is
    /// at most the task's sensitivity whatever happened on the page.
    pub fn measurement(&self, task: &TaskParams) -> Vec<u128> {
        let mut out = vec![0u128; task.length()];
        let known =
            self.cells.iter().filter(|c| c.count > 0).filter_map(|c| Some((task.index(c.target, &c.name, c.kind)?, c.count)));
        for (index, count) in known.take(task.max_cells as usize) {
            out[index] = u128::from(u64::from(count).min(task.max_count()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::hpke_dap::DapKeyPair;

    fn task(max_cells: u32) -> TaskParams {
        let collector = DapKeyPair::from_secret(0, &[9; 32]).config();
        let campaigns = ["c1", "c2", "c3"].map(String::from);
        TaskParams::new(campaigns, ["top".to_string()], 2, 86_400, 10, max_cells, 4.0, 4.0, 1e-9, &collector).unwrap()
    }

    #[test]
    fn counts_clip_at_m_and_the_first_cells_are_kept() {
        let mut t = Tally::new(0);
        for _ in 0..20 {
            t.record(Kind::Impression, Some("c1"), Some("top"));
        }
        t.record(Kind::Click, Some("c2"), None);
        t.record(Kind::Click, Some("unknown"), None);
        t.record(Kind::Dismissal, Some("c3"), None);
        assert_eq!(t.cells[0].count, TALLY_MAX_COUNT);
        let task3 = task(3);
        let m = t.measurement(&task3);
        let at = |target, name, kind| m[task3.index(target, name, kind).unwrap()];
        assert_eq!(at(TargetKind::Campaign, "c1", Kind::Impression), 3);
        assert_eq!(at(TargetKind::Slot, "top", Kind::Impression), 3);
        assert_eq!(at(TargetKind::Campaign, "c2", Kind::Click), 1);
        // The fourth known cell is past max_cells: dropped.
        assert_eq!(at(TargetKind::Campaign, "c3", Kind::Dismissal), 0);
        assert_eq!(m.iter().filter(|&&v| v > 0).count(), 3);
        assert_eq!(t.measurement(&task(16)).iter().filter(|&&v| v > 0).count(), 4);
    }

    #[test]
    fn a_tally_is_bounded() {
        let mut t = Tally::new(0);
        for i in 0..1000 {
            t.record(Kind::Impression, Some(&format!("c{i}")), None);
        }
        t.record(Kind::Impression, Some(&"x".repeat(MAX_TEXT + 1)), Some(""));
        assert_eq!(t.cells.len(), TALLY_MAX_CELLS);
    }
}
