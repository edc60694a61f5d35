//! One period's outcome as the collector stores and shows it.

/// A period's release: the noised counts in the task's cell order, or `None` when fewer than K
/// browsers reported and the period was withheld (its reports deleted unopened), or when its
/// collection failed (`failed`: the helper refused it too often; its reports deleted).
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// Start of the period, Unix seconds.
    pub period_start: u64,
    /// Reports that passed verification and were aggregated (for a withheld period: those received).
    pub reports: u64,
    /// Noised counts, one per cell in `TaskParams::cells()` order; `None` = withheld (< K) or failed.
    pub counts: Option<Vec<i64>>,
    /// Why the period's collection failed for good; `None` when released or withheld.
    pub failed: Option<String>,
}
