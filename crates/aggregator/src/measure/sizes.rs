//! The exact sizes of an honest report's parts for a task, measured once on a report of zeros
//! built as devices build theirs. Prio3SumVec's shares, HPKE's encapsulated key (X25519: 32
//! bytes) and its payload (the sealed share plus its tag) have one size per task, whatever is
//! measured, so a part of any other size is not from an honest device: both servers refuse it
//! before opening anything, and the helper sizes a job's body from them.

use hearth_core::measure::hpke_dap::DapKeyPair;
use hearth_core::measure::prio::codec::{Decode, Encode};
use hearth_core::measure::prio::topology::ping_pong::PingPongMessage;
use hearth_core::measure::{MeasureError, TaskParams, VERIFY_KEY_LEN, build_report, dap, prepare};

/// An HPKE ciphertext's two sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub encapsulated_key: usize,
    pub payload: usize,
}

impl Sealed {
    fn of(ct: &dap::HpkeCiphertext) -> Sealed {
        Sealed { encapsulated_key: ct.encapsulated_key().len(), payload: ct.payload().len() }
    }

    /// Why `ct` is not of these sizes, if it is not.
    pub fn check(&self, ct: &dap::HpkeCiphertext, whose: &str) -> Result<(), String> {
        let got = Sealed::of(ct);
        if got == *self {
            return Ok(());
        }
        Err(format!(
            "the {whose} ciphertext has a {}-byte encapsulated key and a {}-byte payload; this task's are {} and {}",
            got.encapsulated_key, got.payload, self.encapsulated_key, self.payload
        ))
    }
}

/// The sizes of one honest report of a task, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareSizes {
    /// The whole encoded `dap::Report` (an upload's body).
    pub report: usize,
    pub public_share: usize,
    pub leader: Sealed,
    pub helper: Sealed,
    /// The leader's prepare share in its first ping-pong message.
    pub prep_share: usize,
    /// One encoded `dap::PrepareInit`: what a report adds to an aggregation job.
    pub prepare_init: usize,
}

impl ShareSizes {
    /// Measures a report of zeros for `task`, sealed to a throwaway key for both roles (the sizes
    /// do not depend on the key) and prepared by the leader's side as collection does.
    pub fn of(task: &TaskParams) -> Result<ShareSizes, MeasureError> {
        let key = DapKeyPair::generate(0)?;
        let encoded = build_report(task, &vec![0; task.length()], 0, &key.config(), &key.config())?;
        let report = dap::Report::get_decoded(&encoded).map_err(|e| MeasureError::Malformed(e.to_string()))?;
        let (metadata, public_share) = (report.metadata(), report.public_share());
        let input = prepare::open_input_share(
            &task.task_id(),
            &key,
            dap::Role::Leader,
            metadata,
            public_share,
            report.leader_encrypted_input_share(),
        )?;
        let (_, message) = prepare::leader_init(task, &[0; VERIFY_KEY_LEN], metadata, public_share, &input)?;
        let prep_share = match &message {
            PingPongMessage::Initialize { prep_share } => prep_share.len(),
            _ => return Err(MeasureError::Prepare("the leader's first message is not Initialize".into())),
        };
        let share = dap::ReportShare::new(metadata.clone(), public_share.to_vec(), report.helper_encrypted_input_share().clone());
        let init = dap::PrepareInit::new(share, message).get_encoded().map_err(|e| MeasureError::Malformed(e.to_string()))?;
        Ok(ShareSizes {
            report: encoded.len(),
            public_share: public_share.len(),
            leader: Sealed::of(report.leader_encrypted_input_share()),
            helper: Sealed::of(report.helper_encrypted_input_share()),
            prep_share,
            prepare_init: init.len(),
        })
    }

    /// Why the public share is not this task's size, if it is not.
    pub fn check_public_share(&self, public_share: &[u8]) -> Result<(), String> {
        if public_share.len() == self.public_share {
            return Ok(());
        }
        Err(format!("the public share is {} bytes; this task's is {}", public_share.len(), self.public_share))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::measure::hpke_dap::DapKeyPair;

    #[test]
    fn every_honest_report_of_a_task_has_the_measured_sizes() {
        let collector = DapKeyPair::from_secret(0, &[9; 32]).config();
        let task = TaskParams::new(
            ["a".to_string(), "b".to_string()],
            ["s".to_string()],
            2,
            3600,
            100,
            16,
            50.0,
            50.0,
            1e-9,
            &collector,
        )
        .unwrap();
        let sizes = ShareSizes::of(&task).unwrap();
        assert_eq!(sizes.leader.encapsulated_key, 32, "X25519");
        let (leader, helper) = (DapKeyPair::generate(1).unwrap(), DapKeyPair::generate(2).unwrap());
        let mut m = vec![0u128; task.length()];
        m[0] = 3;
        m[5] = 1;
        let encoded = build_report(&task, &m, 7200, &leader.config(), &helper.config()).unwrap();
        let report = dap::Report::get_decoded(&encoded).unwrap();
        assert_eq!(encoded.len(), sizes.report);
        sizes.check_public_share(report.public_share()).unwrap();
        sizes.leader.check(report.leader_encrypted_input_share(), "leader's").unwrap();
        sizes.helper.check(report.helper_encrypted_input_share(), "helper's").unwrap();
        assert!(sizes.check_public_share(&[0; 3]).is_err());
    }
}
