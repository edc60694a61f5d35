//! The device's report: its measurement sharded by Prio3SumVec (with the proof that every cell
//! is in [0, 2^bits)), each aggregator's input share sealed to that aggregator alone, in DAP's
//! upload format. Nothing in it names the device: the report id is random and its time is the
//! period's start.

use super::hpke_dap::{input_share_info, seal};
use super::task::TaskParams;
use super::{MeasureError, NONCE_LEN, Result, dap};
use crate::privacy::noise::{ByteSource, OsRandom};
use prio::codec::Encode;
use prio::vdaf::Client;

/// Builds the encoded `dap::Report` of `measurement` (one value per cell, at most M) for the
/// period holding `time_secs`, sealed to the leader's and the helper's configurations.
pub fn build_report(
    task: &TaskParams,
    measurement: &[u128],
    time_secs: u64,
    leader: &dap::HpkeConfig,
    helper: &dap::HpkeConfig,
) -> Result<Vec<u8>> {
    if measurement.len() != task.length() {
        return Err(MeasureError::Mismatch(format!("{} cells, the task has {}", measurement.len(), task.length())));
    }
    if let Some(v) = measurement.iter().find(|&&v| v > u128::from(task.max_count())) {
        return Err(MeasureError::Mismatch(format!("a cell of {v} is above M = {}", task.max_count())));
    }
    let mut report_id = [0u8; NONCE_LEN];
    OsRandom.fill(&mut report_id).map_err(|e| MeasureError::Random(e.to_string()))?;
    let (public, shares) =
        task.vdaf()?.shard(&measurement.to_vec(), &report_id).map_err(|e| MeasureError::Prepare(e.to_string()))?;
    let [leader_share, helper_share] =
        <[_; 2]>::try_from(shares).map_err(|_| MeasureError::Prepare("not two input shares".into()))?;
    seal_report(
        task,
        &report_id,
        time_secs,
        &encoded(&public)?,
        [&encoded(&leader_share)?, &encoded(&helper_share)?],
        leader,
        helper,
    )
}

/// Wraps already sharded shares into a sealed DAP report: [`build_report`]'s second half, also
/// what a test uses to send shares no honest device would (a cell above M, a forged proof).
pub fn seal_report(
    task: &TaskParams,
    report_id: &[u8; NONCE_LEN],
    time_secs: u64,
    public_share: &[u8],
    [leader_share, helper_share]: [&[u8]; 2],
    leader: &dap::HpkeConfig,
    helper: &dap::HpkeConfig,
) -> Result<Vec<u8>> {
    let metadata =
        dap::ReportMetadata::new(dap::ReportId::from(*report_id), dap::Time::from_seconds_since_epoch(task.period_of(time_secs)));
    let aad = encoded(&dap::InputShareAad::new(task.task_id(), metadata.clone(), public_share.to_vec()))?;
    let sealed = |role, share: &[u8], config| {
        let plaintext = encoded(&dap::PlaintextInputShare::new(Vec::new(), share.to_vec()))?;
        seal(config, &input_share_info(role), &plaintext, &aad)
    };
    let report = dap::Report::new(
        metadata,
        public_share.to_vec(),
        sealed(dap::Role::Leader, leader_share, leader)?,
        sealed(dap::Role::Helper, helper_share, helper)?,
    );
    encoded(&report)
}

/// DAP/VDAF encoding, its (never expected) failure typed.
pub(crate) fn encoded(value: &impl Encode) -> Result<Vec<u8>> {
    value.get_encoded().map_err(|e| MeasureError::Malformed(format!("encoding: {e}")))
}
