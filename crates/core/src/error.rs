//! One typed error for everything the core can reject.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum HearthError {
    #[error("model file is not valid ONNX: {0}")]
    OnnxDecode(String),
    #[error("model file sha256 is {actual}, manifest declares {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("manifest is invalid: {0}")]
    Manifest(String),
    #[error("model graph does not match the pack format: {0}")]
    Graph(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape { name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("parameter `{name}` holds a non-finite value at index {index}")]
    NonFinite { name: String, index: usize },
    #[error("unknown event kind {0:?}")]
    UnknownEventKind(String),
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("invalid ad: {0}")]
    InvalidAd(String),
    #[error("invalid context: {0}")]
    InvalidContext(String),
    #[error("{what} has {found} entries; the limit is {limit}")]
    TooLarge { what: &'static str, found: usize, limit: usize },
    #[error("stored profile has format version {found}; this build reads up to {supported}")]
    ProfileVersion { found: u32, supported: u32 },
    #[error("stored profile is corrupt: {0}")]
    ProfileCorrupt(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("precomputed logit {index} is not finite")]
    NonFiniteLogit { index: usize },
    #[error("invalid training settings: {0}")]
    InvalidTraining(String),
    #[error("model update: {0}")]
    Update(#[from] UpdateError),
    #[error("invalid privacy parameters: {0}")]
    Privacy(String),
}

/// Why an update was refused, or could not be built.
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
