//! Checks an uploaded update against the open round before anything is stored. Pure: the
//! HTTP layer reads the body, this decides, the store only ever sees accepted updates.

use crate::reason::{Reason, Reject};
use hearth_core::HearthError;
use hearth_core::UpdateError;
use hearth_core::learning::round::RoundTask;
use hearth_core::privacy::privatize::{grid_step, rounding_bound};
use hearth_core::privacy::shares::Report;
use hearth_core::privacy::wire::{Encoding, Payload, Update};

/// Noise norms farther than this many standard deviations from their mean are treated as
/// not noised as declared. ‖noise‖ is 1-Lipschitz in the Gaussian, so an honest update
/// falls outside with probability at most 2·exp(−t²/2) ≈ 2.5e-14 at t = 8.
pub const NORM_TAIL_SIGMAS: f64 = 8.0;

/// Why no update can be taken now: between rounds (retry), or for good once the budget is spent.
pub fn no_round(training: bool) -> Reject {
    if training {
        Reject::new(Reason::NoOpenRound, "no round is open; retry later")
    } else {
        Reject::new(Reason::PrivacyBudgetSpent, "the privacy budget is spent; training has stopped")
    }
}

/// An upload whose id (nonce or report id) was accepted before: counted once, whatever round it
/// names now. Also the answer to a retry that arrives after its round ended, as the store keeps
/// every accepted id; the round checks below refuse only uploads never accepted.
pub fn duplicate_nonce() -> Reject {
    Reject::new(Reason::DuplicateNonce, "an update with this nonce was already accepted")
}

/// An accepted upload: a plaintext update (`single`) or a report (`leader`).
#[derive(Debug, Clone)]
pub enum Upload {
    Plain(Update),
    Report(Report),
}

impl Upload {
    /// The upload's own id: the update's nonce or the report id. Replays are refused by it.
    pub fn id(&self) -> &[u8; 16] {
        match self {
            Upload::Plain(u) => &u.nonce,
            Upload::Report(r) => &r.report_id,
        }
    }

    pub fn round_id(&self) -> u64 {
        match self {
            Upload::Plain(u) => u.round_id,
            Upload::Report(r) => r.round_id,
        }
    }
}

/// What the open round expects of an update.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub round_id: u64,
    pub model_version: u64,
    pub clip_norm: f32,
    pub noise_multiplier: f32,
    pub encoding: Encoding,
    pub params: usize,
    /// A leader's round: the helper key reports must be sealed to.
    pub helper_key_id: Option<u8>,
}

impl Expect {
    /// What `task` asks of an update to a model of `params` parameters.
    pub fn of(task: &RoundTask, params: usize) -> Expect {
        Expect {
            round_id: task.round_id,
            model_version: task.model_version,
            clip_norm: task.clip_norm,
            noise_multiplier: task.noise_multiplier,
            encoding: task.encoding,
            params,
            helper_key_id: None,
        }
    }

    /// Exact byte size of a well-formed upload, which is also the body limit.
    pub fn body_len(&self) -> usize {
        match self.helper_key_id {
            Some(_) => Report::encoded_len(self.params),
            None => self.encoding.encoded_len(self.params),
        }
    }
}

/// Decodes a report; format defects become 400s.
pub fn decode_report(body: &[u8]) -> Result<Report, Reject> {
    Report::decode(body).map_err(|e| match e {
        HearthError::Update(UpdateError::UnknownVersion { .. }) => Reject::new(Reason::UnsupportedFormatVersion, e.to_string()),
        _ => Reject::new(Reason::MalformedUpdate, e.to_string()),
    })
}

/// Round, model, size and helper key of a report. Its values are masked: nothing about them
/// can be checked until the round's sum is unmasked (`Plan::implausible_block`).
pub fn check_report(report: &Report, expect: &Expect) -> Result<(), Reject> {
    check_round(report.model_version, report.round_id, expect)?;
    if report.share.len() != expect.params {
        return Err(Reject::new(
            Reason::WrongParameterCount,
            format!("{} parameters, the model has {}", report.share.len(), expect.params),
        ));
    }
    if Some(report.key_id) != expect.helper_key_id {
        return Err(Reject::new(
            Reason::WrongHelperKey,
            format!("the seed is sealed to key {}, the helper's key is {:?}", report.key_id, expect.helper_key_id),
        ));
    }
    Ok(())
}

fn check_round(model_version: u64, round_id: u64, expect: &Expect) -> Result<(), Reject> {
    // A later round than this replica's: another replica of the store opened it moments ago
    // (each sees the others' rounds within the keeper's TICK). A 409 would make the device drop
    // its update; it retries a 503.
    if round_id > expect.round_id {
        return Err(Reject::new(
            Reason::Busy,
            format!("round {round_id} is not open on this replica yet (round {} is); retry in a moment", expect.round_id),
        ));
    }
    if model_version != expect.model_version {
        return Err(Reject::new(
            Reason::StaleModel,
            format!("update is for model {model_version}, the open round trains model {}", expect.model_version),
        ));
    }
    if round_id != expect.round_id {
        return Err(Reject::new(
            Reason::WrongRound,
            format!("update is for round {round_id}, round {} is open", expect.round_id),
        ));
    }
    Ok(())
}

/// Decodes the body; wire-format defects become 400s.
pub fn decode(body: &[u8]) -> Result<Update, Reject> {
    Update::decode(body).map_err(|e| match e {
        HearthError::Update(UpdateError::UnknownVersion { .. }) => Reject::new(Reason::UnsupportedFormatVersion, e.to_string()),
        HearthError::NonFinite { .. } => Reject::new(Reason::NonFinite, e.to_string()),
        _ => Reject::new(Reason::MalformedUpdate, e.to_string()),
    })
}

/// Round, model, privacy parameters, encoding, size and norm, in that order.
pub fn check(update: &Update, expect: &Expect) -> Result<(), Reject> {
    check_round(update.model_version, update.round_id, expect)?;
    if update.clip_norm != expect.clip_norm || update.noise_multiplier != expect.noise_multiplier {
        return Err(Reject::new(
            Reason::PrivacyParametersMismatch,
            format!(
                "update declares C = {}, z = {}; the round asks C = {}, z = {}",
                update.clip_norm, update.noise_multiplier, expect.clip_norm, expect.noise_multiplier
            ),
        ));
    }
    let wanted = expect.encoding;
    if update.encoding() != wanted {
        return Err(Reject::new(Reason::WrongEncoding, format!("update is {:?}, the round asks {wanted:?}", update.encoding())));
    }
    if update.len() != expect.params {
        return Err(Reject::new(
            Reason::WrongParameterCount,
            format!("{} parameters, the model has {}", update.len(), expect.params),
        ));
    }
    let (low, high) = plausible_norm(update, expect)?;
    let norm = update.iter_values().map(|x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if !(low..=high).contains(&norm) {
        return Err(Reject::new(
            Reason::ImplausibleNorm,
            format!(
                "‖update‖ = {norm:.4} is outside [{low:.4}, {high:.4}], the range of a clipped update noised with the declared C and z"
            ),
        ));
    }
    Ok(())
}

/// The norms an honest update can have: signal s with ‖s‖ ≤ C plus Gaussian noise n of
/// standard deviation σ per coordinate, ‖n‖ within NORM_TAIL_SIGMAS·σ of σ√d. The quantized
/// encoding noises a conditionally rounded signal of norm ≤ C̃γ with σ = zC̃γ and rounds the
/// result to the grid, which moves the norm by at most γ√d/2.
fn plausible_norm(update: &Update, expect: &Expect) -> Result<(f64, f64), Reject> {
    let d = expect.params as f64;
    let z = f64::from(expect.noise_multiplier);
    let (signal, sigma, rounding) = match &update.payload {
        Payload::F32(_) => (f64::from(expect.clip_norm), z * f64::from(expect.clip_norm), 0.0),
        Payload::QuantizedI16 { step, .. } => {
            let expected_step = grid_step(expect.clip_norm, expect.noise_multiplier)
                .map_err(|e| Reject::new(Reason::MalformedUpdate, e.to_string()))?;
            if *step != expected_step {
                return Err(Reject::new(
                    Reason::MalformedUpdate,
                    format!("grid step {step} is not {expected_step}, the step C and z give"),
                ));
            }
            let gamma = f64::from(*step);
            let bound = rounding_bound(f64::from(expect.clip_norm) / gamma, expect.params) * gamma;
            (bound, z * bound, gamma * d.sqrt() / 2.0)
        }
    };
    let low = sigma * ((d - 1.0).max(0.0).sqrt() - NORM_TAIL_SIGMAS) - signal - rounding;
    let high = sigma * (d.sqrt() + NORM_TAIL_SIGMAS) + signal + rounding;
    Ok((low.max(0.0), high))
}
