//! The aggregators' side of a report: open one's own input share, run Prio3's preparation (the
//! leader starts, the helper checks the proof and answers, the leader finishes), sum the output
//! shares, add each server's own noise to its aggregate share, and combine the two shares.
//!
//! One report's shares are useless alone; a share that passes preparation is a share of a
//! measurement with every cell in [0, 2^bits). Preparation is prio's (`PingPongTopology`), not
//! ours.

use super::hpke_dap::{DapKeyPair, input_share_info};
use super::report::encoded;
use super::task::TaskParams;
use super::{MeasureError, Result, VERIFY_KEY_LEN, Vdaf, dap};
use crate::privacy::discrete;
use crate::privacy::noise::{ByteSource, Sampler};
use prio::codec::{Decode, ParameterizedDecode};
use prio::field::{Field128, FieldElement, FieldElementWithInteger};
use prio::topology::ping_pong::{PingPongContinuedValue, PingPongMessage, PingPongState, PingPongTopology};
use prio::vdaf::Aggregatable;
use prio::vdaf::Aggregator;
use sha2::{Digest, Sha256};

/// Domain separation of the verification key's derivation.
const VERIFY_KEY_SALT: &[u8] = b"hearth measurement verify key v1";

type PublicShare = <Vdaf as prio::vdaf::Vdaf>::PublicShare;
type InputShare = <Vdaf as prio::vdaf::Vdaf>::InputShare;

/// The VDAF verification key both aggregators use for `task_id`, derived (HKDF-SHA256) from the
/// secret they already share (the leader's bearer token for the helper). Clients never learn it.
pub fn verify_key(secret: &[u8], task_id: &dap::TaskId) -> [u8; VERIFY_KEY_LEN] {
    let mut key = [0u8; VERIFY_KEY_LEN];
    hkdf::Hkdf::<Sha256>::new(Some(VERIFY_KEY_SALT), secret)
        .expand(task_id.as_ref(), &mut key)
        .expect("16 bytes is a valid HKDF-SHA256 output length");
    key
}

/// Opens the input share sealed to `key` (as `receiver`) in a report of `task_id`: the VDAF
/// input share's bytes. Fails if the share was sealed to another key or for another task,
/// report or public share, or carries DAP extensions (none are supported).
pub fn open_input_share(
    task_id: &dap::TaskId,
    key: &DapKeyPair,
    receiver: dap::Role,
    metadata: &dap::ReportMetadata,
    public_share: &[u8],
    ct: &dap::HpkeCiphertext,
) -> Result<Vec<u8>> {
    let aad = encoded(&dap::InputShareAad::new(*task_id, metadata.clone(), public_share.to_vec()))?;
    let plaintext = key.open(ct, &input_share_info(receiver), &aad)?;
    let share =
        dap::PlaintextInputShare::get_decoded(&plaintext).map_err(|e| MeasureError::Malformed(format!("input share: {e}")))?;
    if !share.extensions().is_empty() {
        return Err(MeasureError::Malformed("report extensions are not supported".into()));
    }
    Ok(share.payload().to_vec())
}

/// The leader's preparation state of one report, between its start and the helper's answer.
#[derive(Debug)]
pub struct LeaderState(PingPongState<VERIFY_KEY_LEN, 16, Vdaf>);

/// One report's share of the measurement, after a successful preparation.
#[derive(Debug, Clone)]
pub struct OutputShare(prio::vdaf::OutputShare<Field128>);

/// Decodes the public share and an aggregator's input share for `task`'s VDAF.
fn decode_shares(vdaf: &Vdaf, aggregator: usize, public_share: &[u8], input_share: &[u8]) -> Result<(PublicShare, InputShare)> {
    let public = PublicShare::get_decoded_with_param(vdaf, public_share)
        .map_err(|e| MeasureError::Malformed(format!("public share: {e}")))?;
    let input = InputShare::get_decoded_with_param(&(vdaf, aggregator), input_share)
        .map_err(|e| MeasureError::Malformed(format!("input share: {e}")))?;
    Ok((public, input))
}

/// Whether the public share and an aggregator's input share (0 the leader, 1 the helper) decode
/// for `task`'s VDAF: what the leader checks at upload; the proof is checked at preparation.
pub fn check_shares(task: &TaskParams, aggregator: usize, public_share: &[u8], input_share: &[u8]) -> Result<()> {
    decode_shares(&task.vdaf()?, aggregator, public_share, input_share).map(|_| ())
}

fn prepare_error(e: impl std::fmt::Display) -> MeasureError {
    MeasureError::Prepare(e.to_string())
}

/// The leader starts preparing one report: its state and the message (its prepare share) for
/// the helper.
pub fn leader_init(
    task: &TaskParams,
    verify_key: &[u8; VERIFY_KEY_LEN],
    metadata: &dap::ReportMetadata,
    public_share: &[u8],
    input_share: &[u8],
) -> Result<(LeaderState, PingPongMessage)> {
    let vdaf = task.vdaf()?;
    let (public, input) = decode_shares(&vdaf, 0, public_share, input_share)?;
    let (state, message) =
        vdaf.leader_initialized(verify_key, &(), metadata.id().as_ref(), &public, &input).map_err(prepare_error)?;
    Ok((LeaderState(state), message))
}

/// Bytes of one aggregator's joint-randomness part (a TurboSHAKE128 seed in VDAF-08's Prio3).
const JOINT_RAND_PART: usize = 16;

/// The helper prepares one report given the leader's message: this is where the proof is
/// checked. Its output share and the message that finishes the leader's side.
///
/// Besides prio's checks, the helper checks that the public share states both aggregators'
/// joint-randomness parts as they really are (the tails of the two prepare shares). Prio3 has
/// each aggregator check only the part it did not compute, so a client that wrote a false part
/// for the helper into the public share (and a proof that verifies for it, possible for
/// measurements whose circuit is zero under any randomness) would be accepted here and fail at
/// the leader: counted by one server and not the other, the batch could never be released.
pub fn helper_prepare(
    task: &TaskParams,
    verify_key: &[u8; VERIFY_KEY_LEN],
    metadata: &dap::ReportMetadata,
    public_share: &[u8],
    input_share: &[u8],
    inbound: &PingPongMessage,
) -> Result<(OutputShare, PingPongMessage)> {
    let vdaf = task.vdaf()?;
    let (public, input) = decode_shares(&vdaf, 1, public_share, input_share)?;
    let PingPongMessage::Initialize { prep_share: leader_bytes } = inbound else {
        return Err(MeasureError::Prepare("the leader's message does not start preparation".into()));
    };
    let (state, own_share) =
        vdaf.prepare_init(verify_key, 1, &(), metadata.id().as_ref(), &public, &input).map_err(prepare_error)?;
    let own_bytes = encoded(&own_share)?;
    let parts_match = public_share.len() == 2 * JOINT_RAND_PART
        && [leader_bytes.as_slice(), own_bytes.as_slice()]
            .iter()
            .zip(public_share.chunks(JOINT_RAND_PART))
            .all(|(share, part)| share.len() >= JOINT_RAND_PART && share[share.len() - JOINT_RAND_PART..] == *part);
    if !parts_match {
        return Err(MeasureError::Prepare("the public share's joint-randomness parts are not the aggregators' own".into()));
    }
    let leader_share = <Vdaf as Aggregator<VERIFY_KEY_LEN, 16>>::PrepareShare::get_decoded_with_param(&state, leader_bytes)
        .map_err(|e| MeasureError::Malformed(format!("the leader's prepare share: {e}")))?;
    let message = vdaf.prepare_shares_to_prepare_message(&(), [leader_share, own_share]).map_err(prepare_error)?;
    let message_bytes = encoded(&message)?;
    match vdaf.prepare_next(state, message).map_err(prepare_error)? {
        prio::vdaf::PrepareTransition::Finish(output) => {
            Ok((OutputShare(output), PingPongMessage::Finish { prep_msg: message_bytes }))
        }
        prio::vdaf::PrepareTransition::Continue(..) => {
            Err(MeasureError::Prepare("Prio3 finishes in one round; the helper did not".into()))
        }
    }
}

/// The leader finishes one report with the helper's message: its output share.
pub fn leader_finish(task: &TaskParams, state: LeaderState, inbound: &PingPongMessage) -> Result<OutputShare> {
    match task.vdaf()?.leader_continued(state.0, &(), inbound).map_err(prepare_error)? {
        PingPongContinuedValue::FinishedNoMessage { output_share } => Ok(OutputShare(output_share)),
        PingPongContinuedValue::WithMessage { .. } => {
            Err(MeasureError::Prepare("Prio3 finishes in one round; the leader did not".into()))
        }
    }
}

/// One aggregator's sum of output shares (and, once released, its noise).
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateShare(prio::vdaf::AggregateShare<Field128>);

impl AggregateShare {
    /// The empty sum for `task`.
    pub fn zero(task: &TaskParams) -> AggregateShare {
        AggregateShare(vec![Field128::zero(); task.length()].into())
    }

    /// Adds one report's output share.
    pub fn add(&mut self, share: &OutputShare) -> Result<()> {
        self.0.accumulate(&share.0).map_err(|e| MeasureError::Mismatch(e.to_string()))
    }

    /// Adds another aggregate share of the same task (a batch's partial sums).
    pub fn merge(&mut self, other: &AggregateShare) -> Result<()> {
        self.0.merge(&other.0).map_err(|e| MeasureError::Mismatch(e.to_string()))
    }

    /// Adds an independent discrete Gaussian N_Z(0, σ²) to every cell, in the field: the
    /// server's own noise, so that the released counts are DP against the other server too.
    pub fn add_noise<S: ByteSource>(&mut self, sigma: f64, rng: &mut Sampler<S>) -> Result<()> {
        let mut cells = self.0.as_ref().to_vec();
        for cell in &mut cells {
            let noise = discrete::sample(sigma, rng).map_err(|e| MeasureError::Random(e.to_string()))?;
            *cell += signed(noise);
        }
        self.0 = cells.into();
        Ok(())
    }

    /// DAP's encoding of an aggregate share (the VDAF's).
    pub fn encode(&self) -> Result<Vec<u8>> {
        encoded(&self.0)
    }

    /// Decodes an aggregate share of `task`.
    pub fn decode(task: &TaskParams, bytes: &[u8]) -> Result<AggregateShare> {
        let vdaf = task.vdaf()?;
        prio::vdaf::AggregateShare::get_decoded_with_param(&(&vdaf, &()), bytes)
            .map(AggregateShare)
            .map_err(|e| MeasureError::Malformed(format!("aggregate share: {e}")))
    }
}

/// The field element of a signed integer.
fn signed(v: i64) -> Field128 {
    let magnitude = Field128::from(u128::from(v.unsigned_abs()));
    if v < 0 { -magnitude } else { magnitude }
}

/// The released counts: the two aggregate shares summed, read as signed integers (noise can
/// take a small count below zero; the field is far larger than any count).
pub fn unshard(leader: &AggregateShare, helper: &AggregateShare) -> Result<Vec<i64>> {
    let (l, h) = (leader.0.as_ref(), helper.0.as_ref());
    if l.len() != h.len() {
        return Err(MeasureError::Mismatch(format!("aggregate shares of {} and {} cells", l.len(), h.len())));
    }
    let half = Field128::modulus() / 2;
    Ok(l.iter()
        .zip(h)
        .map(|(&a, &b)| {
            let v = u128::from(a + b);
            let value = if v > half { -((Field128::modulus() - v) as i128) } else { v as i128 };
            value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
        })
        .collect())
}

/// DAP-09's checksum of a batch: the XOR of SHA-256 of each report id, so that the two
/// aggregators can check they aggregated the same reports without listing them.
pub fn checksum(ids: impl IntoIterator<Item = dap::ReportId>) -> dap::ReportIdChecksum {
    let mut sum = [0u8; 32];
    for id in ids {
        for (s, d) in sum.iter_mut().zip(Sha256::digest(id.as_ref())) {
            *s ^= d;
        }
    }
    dap::ReportIdChecksum::from(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::hpke_dap::DapKeyPair;
    use crate::measure::report::{build_report, seal_report};
    use crate::privacy::noise::SeededRandom;
    use prio::codec::Encode;
    use prio::vdaf::Client;

    struct Setup {
        task: TaskParams,
        leader: DapKeyPair,
        helper: DapKeyPair,
        vk: [u8; VERIFY_KEY_LEN],
    }

    fn setup() -> Setup {
        let collector = DapKeyPair::from_secret(0, &[9; 32]).config();
        let campaigns = ["a", "b", "c"].map(String::from);
        let task = TaskParams::new(campaigns, ["top".to_string()], 2, 86_400, 10, 16, 3.0, 3.0, 1e-9, &collector).unwrap();
        let vk = verify_key(b"a shared secret", &task.task_id());
        Setup { task, leader: DapKeyPair::generate(1).unwrap(), helper: DapKeyPair::generate(2).unwrap(), vk }
    }

    /// Both servers' preparation of one encoded report; the output shares or the first error.
    fn prepare(s: &Setup, bytes: &[u8]) -> Result<(OutputShare, OutputShare)> {
        let report = dap::Report::get_decoded(bytes).map_err(|e| MeasureError::Malformed(e.to_string()))?;
        let id = s.task.task_id();
        let (m, p) = (report.metadata(), report.public_share());
        let l = open_input_share(&id, &s.leader, dap::Role::Leader, m, p, report.leader_encrypted_input_share())?;
        let h = open_input_share(&id, &s.helper, dap::Role::Helper, m, p, report.helper_encrypted_input_share())?;
        let (state, to_helper) = leader_init(&s.task, &s.vk, m, p, &l)?;
        let (helper_out, to_leader) = helper_prepare(&s.task, &s.vk, m, p, &h, &to_helper)?;
        Ok((leader_finish(&s.task, state, &to_leader)?, helper_out))
    }

    #[test]
    fn reports_aggregate_to_the_sum_of_their_measurements_plus_the_noise() {
        let s = setup();
        let (mut l, mut h) = (AggregateShare::zero(&s.task), AggregateShare::zero(&s.task));
        let mut truth = vec![0i64; s.task.length()];
        for i in 0..12u128 {
            let m: Vec<u128> = (0..s.task.length() as u128).map(|c| (c * 7 + i) % 4).collect();
            truth.iter_mut().zip(&m).for_each(|(t, &v)| *t += v as i64);
            let bytes = build_report(&s.task, &m, 1_000_000 + i as u64, &s.leader.config(), &s.helper.config()).unwrap();
            let (lo, ho) = prepare(&s, &bytes).unwrap();
            l.add(&lo).unwrap();
            h.add(&ho).unwrap();
        }
        assert_eq!(unshard(&l, &h).unwrap(), truth);
        let h = AggregateShare::decode(&s.task, &h.encode().unwrap()).unwrap();
        let mut noised = l.clone();
        noised.add_noise(3.0, &mut Sampler::from_source(SeededRandom::new(5))).unwrap();
        let mut rng = Sampler::from_source(SeededRandom::new(5));
        let expected: Vec<i64> = truth.iter().map(|t| t + discrete::sample(3.0, &mut rng).unwrap()).collect();
        assert_eq!(unshard(&noised, &h).unwrap(), expected);
        assert!(expected != truth, "the noise is there");
    }

    #[test]
    fn a_forged_or_out_of_range_report_fails_preparation() {
        let s = setup();
        let vdaf = s.task.vdaf().unwrap();
        let measurement = vec![1u128; s.task.length()];
        let nonce = [4u8; 16];
        let (public, shares) = vdaf.shard(&measurement, &nonce).unwrap();
        let public = public.get_encoded().unwrap();
        let (leader_share, helper_share) = (shares[0].get_encoded().unwrap(), shares[1].get_encoded().unwrap());
        let seal = |leader_share: &[u8]| {
            seal_report(&s.task, &nonce, 5, &public, [leader_share, &helper_share], &s.leader.config(), &s.helper.config())
                .unwrap()
        };
        assert!(prepare(&s, &seal(&leader_share)).is_ok());
        // The leader's share starts with the measurement share: adding 1 to the first cell's low
        // bit makes that bit 2 (a cell above M) in the shared measurement.
        let mut above_m = leader_share.clone();
        let mut first = Field128::get_decoded(&above_m[..16]).unwrap();
        first += Field128::one();
        above_m[..16].copy_from_slice(&first.get_encoded().unwrap());
        assert!(matches!(prepare(&s, &seal(&above_m)), Err(MeasureError::Prepare(_))));
        // A flipped byte in the proof share near its end.
        let mut forged = leader_share.clone();
        let at = forged.len() - 20;
        forged[at] ^= 1;
        assert!(prepare(&s, &seal(&forged)).is_err());
        // A public share that misstates the helper's joint-randomness part: refused by the
        // helper's own check, before the proof (which for a crafted proof might still pass there
        // and fail only at the leader).
        let mut misstated = public.clone();
        misstated[20] ^= 1;
        let bytes =
            seal_report(&s.task, &nonce, 5, &misstated, [&leader_share, &helper_share], &s.leader.config(), &s.helper.config())
                .unwrap();
        match prepare(&s, &bytes) {
            Err(MeasureError::Prepare(m)) => assert!(m.contains("joint-randomness"), "{m}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Servers with different verification keys: the joint randomness and queries disagree.
        let report = dap::Report::get_decoded(&seal(&leader_share)).unwrap();
        let (m, p, id) = (report.metadata(), report.public_share(), s.task.task_id());
        let h = open_input_share(&id, &s.helper, dap::Role::Helper, m, p, report.helper_encrypted_input_share()).unwrap();
        let (_, to_helper) = leader_init(&s.task, &s.vk, m, p, &leader_share).unwrap();
        let other_key = verify_key(b"another secret", &id);
        assert!(matches!(helper_prepare(&s.task, &other_key, m, p, &h, &to_helper), Err(MeasureError::Prepare(_))));
    }

    #[test]
    fn a_share_sealed_for_another_task_does_not_open() {
        let s = setup();
        let m = vec![0u128; s.task.length()];
        let bytes = build_report(&s.task, &m, 5, &s.leader.config(), &s.helper.config()).unwrap();
        let report = dap::Report::get_decoded(&bytes).unwrap();
        let other = TaskParams { min_reports: 11, ..s.task.clone() }.task_id();
        let r = open_input_share(
            &other,
            &s.leader,
            dap::Role::Leader,
            report.metadata(),
            report.public_share(),
            report.leader_encrypted_input_share(),
        );
        assert!(matches!(r, Err(MeasureError::Open(_))));
        let r = open_input_share(
            &s.task.task_id(),
            &s.leader,
            dap::Role::Helper,
            report.metadata(),
            report.public_share(),
            report.leader_encrypted_input_share(),
        );
        assert!(matches!(r, Err(MeasureError::Open(_))), "the helper's info string");
    }

    #[test]
    fn out_of_range_measurements_are_refused_by_the_device() {
        let s = setup();
        let mut m = vec![0u128; s.task.length()];
        m[0] = 4;
        assert!(matches!(build_report(&s.task, &m, 5, &s.leader.config(), &s.helper.config()), Err(MeasureError::Mismatch(_))));
        assert!(matches!(
            build_report(&s.task, &m[1..], 5, &s.leader.config(), &s.helper.config()),
            Err(MeasureError::Mismatch(_))
        ));
    }

    #[test]
    fn the_checksum_is_order_free() {
        let ids = [[1u8; 16], [2; 16], [3; 16]].map(dap::ReportId::from);
        let mut reversed = ids;
        reversed.reverse();
        assert_eq!(checksum(ids), checksum(reversed));
        assert_ne!(checksum(ids), checksum(ids[..2].iter().copied()));
    }
}
