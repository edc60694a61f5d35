//! One typed error for everything the core can reject.
//!
//! Each variant is one kind of failure, named by where the bad input came from, so a shell can
//! tell "the server sent a bad pack" from "the caller passed a bad argument" from "the stored
//! profile is damaged" without reading messages:
//!
//! - **model pack** (downloaded or read from disk): `OnnxDecode`, `HashMismatch`, `Manifest`,
//!   `Graph`, `Shape`, `NonFinite`;
//! - **events, ads and page context** (from the page or the catalog): `UnknownEventKind`,
//!   `InvalidEvent`, `InvalidAd`, `InvalidContext`;
//! - **caller's settings**: `InvalidRankOptions`, `InvalidProfileConfig`, `InvalidTraining`,
//!   `Privacy`;
//! - **stored profile** (from the device's storage): `ProfileVersion`, `ProfileCorrupt`;
//! - **round task** (from the aggregator): `WrongModel`, `TooFewEvents`;
//! - **bounds** on any input: `TooLarge`;
//! - **computation**: `Inference`, `NonFiniteLogit`;
//! - **update** wire format and privatisation: `Update`, with its own [`UpdateError`];
//! - **device policy** (the SDK's own floor and ledger): `BelowDeviceFloor`, `DeviceBudgetSpent`;
//! - **secure aggregation**: `SecAgg`, with its own [`SecAggError`].

use thiserror::Error;

/// Everything the core can reject, one variant per kind of failure and source of the bad input
/// (see the module doc for the grouping). The `String` payloads are human-readable detail for
/// logs; callers branch on the variant, never on the message.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum HearthError {
    /// Model pack: `model.onnx` is not an ONNX protobuf.
    #[error("model file is not valid ONNX: {0}")]
    OnnxDecode(String),
    /// Model pack: `model.onnx` is not the file the manifest names.
    #[error("model file sha256 is {actual}, manifest declares {expected}")]
    HashMismatch {
        /// The manifest's `onnx_sha256`, as written there.
        expected: String,
        /// Lower-case hex sha256 of the bytes received.
        actual: String,
    },
    /// Model pack: the manifest does not parse or describes another format or architecture.
    #[error("manifest is invalid: {0}")]
    Manifest(String),
    /// Model pack: the graph uses an operator, input or wiring the pack format does not have.
    #[error("model graph does not match the pack format: {0}")]
    Graph(String),
    /// A tensor (model input, parameter, local embedding, logits) of the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor: a graph input or output, a parameter name, `local_u`, `catalog logits`, ...
        name: String,
        /// Expected dimensions (for a graph input or output, the symbolic batch dimension shows
        /// as 0).
        expected: Vec<usize>,
        /// Dimensions found (for a graph input or output, a symbolic or unreadable one shows as 0).
        found: Vec<usize>,
    },
    /// A parameter, embedding or update value that is NaN or infinite.
    #[error("parameter `{name}` holds a non-finite value at index {index}")]
    NonFinite {
        /// The tensor or vector: a parameter name, `local_u`, `model delta`, `update payload`.
        name: String,
        /// Flat index of the first bad value within that tensor (not the whole parameter vector).
        index: usize,
    },
    /// Events: a kind this build does not know.
    #[error("unknown event kind {0:?}")]
    UnknownEventKind(String),
    /// Events: a known kind with missing, extra or out-of-range fields.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// Catalog: an ad with a missing or malformed field.
    #[error("invalid ad: {0}")]
    InvalidAd(String),
    /// The page context (slot, topics, hour) is malformed.
    #[error("invalid context: {0}")]
    InvalidContext(String),
    /// Caller's settings: ranking options that ask for nothing (k = 0) or an impossible rule.
    #[error("invalid ranking options: {0}")]
    InvalidRankOptions(String),
    /// Caller's settings: a profile configuration that cannot hold (non-positive half-life).
    #[error("invalid profile configuration: {0}")]
    InvalidProfileConfig(String),
    /// Any input past a documented bound.
    #[error("{what} has {found} entries; the limit is {limit}")]
    TooLarge {
        /// What overflowed, in words (`candidate list`, `event term list`, `update parameters`,
        /// ...).
        what: &'static str,
        /// Its size (entries, features, parameters).
        found: usize,
        /// The bound it exceeded: a constant such as `device::catalog::MAX_CATALOG`, or a configured
        /// cap.
        limit: usize,
    },
    /// Stored profile: written by a newer build.
    #[error("stored profile has format version {found}; this build reads up to {supported}")]
    ProfileVersion {
        /// The stored `version` (0 when missing or not a number, `u32::MAX` when too large).
        found: u32,
        /// The version this build writes and reads (`device::profile::VERSION`).
        supported: u32,
    },
    /// Stored profile: does not parse or breaks an invariant.
    #[error("stored profile is corrupt: {0}")]
    ProfileCorrupt(String),
    /// tract failed on inputs that passed every check (a bug, not bad input).
    #[error("inference failed: {0}")]
    Inference(String),
    /// Logits handed in by another scorer (the GPU) hold a NaN or infinity.
    #[error("precomputed logit {index} is not finite")]
    NonFiniteLogit {
        /// Position of the first bad logit, in catalog order.
        index: usize,
    },
    /// Caller's settings: training settings out of range.
    #[error("invalid training settings: {0}")]
    InvalidTraining(String),
    /// Round task: the round trains another model than the device holds.
    #[error("round {round} is for model version {wanted}, this device has {have}")]
    WrongModel {
        /// The round's `round_id`.
        round: u64,
        /// The model version the round task names.
        wanted: u64,
        /// The model version of the pack the device has loaded.
        have: u64,
    },
    /// Round task: the device has fewer labelled events than the round asks; it sits it out.
    #[error("{have} labelled local events; round {round} needs {needed}")]
    TooFewEvents {
        /// The round's `round_id`.
        round: u64,
        /// Labelled examples the device's events yield.
        have: usize,
        /// The round task's `min_events`.
        needed: usize,
    },
    /// The update's wire format or privatisation.
    #[error("model update: {0}")]
    Update(#[from] UpdateError),
    /// Caller's settings: privacy parameters (ε, δ, z, sampling) out of range.
    #[error("invalid privacy parameters: {0}")]
    Privacy(String),
    /// Round task: asks for less protection than this SDK release allows (noise below the
    /// device's floor, a clip above its ceiling, a sampling rate outside (0, 1]); refused before
    /// training, whatever the server says.
    #[error("round task refused by the device's privacy floor: {0}")]
    BelowDeviceFloor(String),
    /// The device's own privacy ledger: taking part once more would pass the device's ε budget
    /// or its ceiling on rounds; the device sits out every further round.
    #[error("the device's privacy budget is spent: {0}")]
    DeviceBudgetSpent(String),
    /// Secure aggregation: shares, sealed seeds, helper keys and their plan.
    #[error("secure aggregation: {0}")]
    SecAgg(#[from] SecAggError),
}

/// Why a secure-aggregation step failed. `Plan` and `Key` come from a round task or helper
/// configuration, `Open` and `Malformed` from received bytes, `Mismatch` from combining shares.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SecAggError {
    /// Parameters no share of `privacy::shares::SHARE_BITS` bits can carry with the wrap-around
    /// bound (too many clients for the precision, a zero clip, ...).
    #[error("cannot plan the shares: {0}")]
    Plan(String),
    /// The helper's HPKE configuration is malformed or of another suite.
    #[error("helper key: {0}")]
    Key(String),
    /// A sealed seed does not open: another key, another report, round or model in the
    /// associated data, or tampered bytes.
    #[error("sealed seed does not open: {0}")]
    Open(String),
    /// Report or aggregate-share bytes that are not the format (magic, version, length).
    #[error("malformed share: {0}")]
    Malformed(String),
    /// Shares or sums that cannot be combined (lengths, counts, rounds differ).
    #[error("shares do not match: {0}")]
    Mismatch(String),
}

/// Why an update was refused, or could not be built. `Truncated` to `NoiseMultiplier` and
/// `Step` are defects of received bytes; `NoiseStd` a caller's setting; `Random` the platform's
/// random source failing.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum UpdateError {
    /// The bytes end inside the header.
    #[error("{found} bytes is too short; the header needs at least {needed}")]
    Truncated {
        /// Bytes needed to read the header field that did not fit.
        needed: usize,
        /// Length of the whole upload.
        found: usize,
    },
    /// The first four bytes (carried here) are not `HRTU`: not a Hearth update at all.
    #[error("magic is {0:?}, not HRTU")]
    BadMagic([u8; 4]),
    /// A format version other than the one this build reads.
    #[error("format version {found}; this build reads {supported}")]
    UnknownVersion {
        /// The header's version (bytes 4..6).
        found: u16,
        /// `privacy::wire::FORMAT_VERSION`.
        supported: u16,
    },
    /// Header byte 6 (carried here) names no `privacy::wire::Encoding`.
    #[error("unknown payload encoding {0}")]
    UnknownEncoding(u8),
    /// The total length disagrees with what the header's encoding and parameter count imply
    /// (a cut-off upload or trailing bytes).
    #[error("{found} bytes, expected exactly {expected}")]
    LengthMismatch {
        /// Header plus payload bytes the header implies.
        expected: usize,
        /// Bytes received.
        found: usize,
    },
    /// A clip norm C (from the header, a round task or the caller; carried here) that is not
    /// finite and > 0.
    #[error("clip norm {0} is not finite and positive")]
    ClipNorm(f32),
    /// A noise multiplier z (from the header, a round task or the caller; carried here) that is
    /// not finite and >= 0.
    #[error("noise multiplier {0} is not finite and non-negative")]
    NoiseMultiplier(f32),
    /// A quantization grid step γ (carried here) that is not finite and > 0.
    #[error("grid step {0} is not finite and positive")]
    Step(f32),
    /// A noise standard deviation (carried here) handed to
    /// `privacy::noise::add_noise` that is not finite and >= 0.
    #[error("noise standard deviation {0} is not finite and non-negative")]
    NoiseStd(f64),
    /// The random source (the OS CSPRNG, `crypto.getRandomValues` in the browser) failed; no
    /// update is built without it.
    #[error("random source failed: {0}")]
    Random(getrandom::Error),
}

/// The core's result: every fallible public function fails with a [`HearthError`].
pub type Result<T> = std::result::Result<T, HearthError>;
