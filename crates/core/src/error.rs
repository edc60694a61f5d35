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
//! - **update** wire format and privatisation: `Update`, with its own [`UpdateError`].

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum HearthError {
    /// Model pack: `model.onnx` is not an ONNX protobuf.
    #[error("model file is not valid ONNX: {0}")]
    OnnxDecode(String),
    /// Model pack: `model.onnx` is not the file the manifest names.
    #[error("model file sha256 is {actual}, manifest declares {expected}")]
    HashMismatch { expected: String, actual: String },
    /// Model pack: the manifest does not parse or describes another format or architecture.
    #[error("manifest is invalid: {0}")]
    Manifest(String),
    /// Model pack: the graph uses an operator, input or wiring the pack format does not have.
    #[error("model graph does not match the pack format: {0}")]
    Graph(String),
    /// A tensor (model input, parameter, local embedding, logits) of the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    /// A parameter, embedding or update value that is NaN or infinite.
    #[error("parameter `{name}` holds a non-finite value at index {index}")]
    NonFinite { name: String, index: usize },
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
    TooLarge { what: &'static str, found: usize, limit: usize },
    /// Stored profile: written by a newer build.
    #[error("stored profile has format version {found}; this build reads up to {supported}")]
    ProfileVersion { found: u32, supported: u32 },
    /// Stored profile: does not parse or breaks an invariant.
    #[error("stored profile is corrupt: {0}")]
    ProfileCorrupt(String),
    /// tract failed on inputs that passed every check (a bug, not bad input).
    #[error("inference failed: {0}")]
    Inference(String),
    /// Logits handed in by another scorer (the GPU) hold a NaN or infinity.
    #[error("precomputed logit {index} is not finite")]
    NonFiniteLogit { index: usize },
    /// Caller's settings: training settings out of range.
    #[error("invalid training settings: {0}")]
    InvalidTraining(String),
    /// Round task: the round trains another model than the device holds.
    #[error("round {round} is for model version {wanted}, this device has {have}")]
    WrongModel { round: u64, wanted: u64, have: u64 },
    /// Round task: the device has fewer labelled events than the round asks; it sits it out.
    #[error("{have} labelled local events; round {round} needs {needed}")]
    TooFewEvents { round: u64, have: usize, needed: usize },
    /// The update's wire format or privatisation.
    #[error("model update: {0}")]
    Update(#[from] UpdateError),
    /// Caller's settings: privacy parameters (ε, δ, z, sampling) out of range.
    #[error("invalid privacy parameters: {0}")]
    Privacy(String),
}

/// Why an update was refused, or could not be built. `Truncated` to `NoiseMultiplier` and
/// `Step` are defects of received bytes; `NoiseStd` a caller's setting; `Random` the platform's
/// random source failing.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum UpdateError {
    #[error("{found} bytes is too short; the header needs at least {needed}")]
    Truncated { needed: usize, found: usize },
    #[error("magic is {0:?}, not HRTU")]
    BadMagic([u8; 4]),
    #[error("format version {found}; this build reads {supported}")]
    UnknownVersion { found: u16, supported: u16 },
    #[error("unknown payload encoding {0}")]
    UnknownEncoding(u8),
    #[error("{found} bytes, expected exactly {expected}")]
    LengthMismatch { expected: usize, found: usize },
    #[error("clip norm {0} is not finite and positive")]
    ClipNorm(f32),
    #[error("noise multiplier {0} is not finite and non-negative")]
    NoiseMultiplier(f32),
    #[error("grid step {0} is not finite and positive")]
    Step(f32),
    #[error("noise standard deviation {0} is not finite and non-negative")]
    NoiseStd(f64),
    #[error("random source failed: {0}")]
    Random(getrandom::Error),
}

pub type Result<T> = std::result::Result<T, HearthError>;
