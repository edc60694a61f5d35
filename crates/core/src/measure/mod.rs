//! Private measurement: per-period counts of what each browser saw and did (impressions, clicks,
//! conversions, dismissals per campaign and per slot), reported through the IETF Distributed
//! Aggregation Protocol with the Prio3 VDAF, so that the leader and the helper each hold only a
//! share of every report and release only noised sums of at least K reports.
//!
//! # Map
//!
//! | module | for | main items |
//! |---|---|---|
//! | [`layout`] | everyone | [`Kind`](layout::Kind), [`TargetKind`](layout::TargetKind), [`Cell`](layout::Cell) |
//! | [`task`] | everyone | [`TaskParams`](task::TaskParams) (the task, its id, its ε per observer) |
//! | [`tally`] | device | [`Tally`](tally::Tally): one period's bounded counts |
//! | [`report`] | device | [`build_report`](report::build_report): Prio3 shards sealed to both servers |
//! | [`hpke_dap`] | everyone | DAP's HPKE: [`DapKeyPair`](hpke_dap::DapKeyPair), [`seal`](hpke_dap::seal) |
//! | [`prepare`] | servers | open a share, the proof check, aggregate, noise, unshard |
//!
//! # Flow
//!
//! ```text
//! device:  ad events ─► Tally ─► measurement (≤ M per cell, ≤ max_cells cells)
//!          ─► build_report: Prio3SumVec shard ─► HPKE to leader and to helper ─► dap::Report
//! leader:  open its share ─► leader_init ─(aggregation job)─► helper: open, helper_prepare
//!          (the proof is checked) ─► leader_finish ─► AggregateShare (+ each server's noise)
//! collector: unshard(leader share, helper share) ─► noised counts per cell
//! ```
//!
//! Versions are pinned as a pair: prio 0.16.8 implements draft-irtf-cfrg-vdaf-08 and
//! janus_messages 0.7.145 draft-ietf-ppm-dap-09, the drafts of the independent TypeScript client
//! `@divviup/dap` 0.9. Both are re-exported so that every caller uses exactly these.

pub mod hpke_dap;
pub mod layout;
pub mod prepare;
pub mod report;
pub mod tally;
pub mod task;

pub use janus_messages as dap;
pub use prio;

pub use layout::{Cell, Kind, TargetKind};
pub use prepare::{AggregateShare, LeaderState, OutputShare};
pub use report::build_report;
pub use tally::Tally;
pub use task::{Statement, TaskParams};

/// The VDAF: a vector of bounded integers, each checked in [0, 2^bits) by the proof.
pub type Vdaf = prio::vdaf::prio3::Prio3SumVec;
/// Bytes of the aggregators' shared verification key (Prio3 with TurboSHAKE128, VDAF-08).
pub const VERIFY_KEY_LEN: usize = 16;
/// Bytes of a report id, which is also the VDAF nonce.
pub const NONCE_LEN: usize = 16;

/// Why a measurement task, report or share was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeasureError {
    /// Task parameters out of range, or a task the device will not report to.
    #[error("measurement task: {0}")]
    Task(String),
    /// An HPKE configuration of another suite or a malformed key.
    #[error("HPKE key: {0}")]
    Key(String),
    /// A ciphertext that does not open: another key, task, report or tampered bytes.
    #[error("does not open: {0}")]
    Open(String),
    /// Bytes that are not the expected encoding.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The VDAF's preparation failed: a forged proof or a measurement out of range.
    #[error("preparation failed: {0}")]
    Prepare(String),
    /// Shares or measurements that do not fit the task (lengths, counts).
    #[error("does not match the task: {0}")]
    Mismatch(String),
    /// The platform's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// Results of this module.
pub type Result<T> = std::result::Result<T, MeasureError>;
