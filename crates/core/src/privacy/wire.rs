//! The update's versioned binary wire format: what a browser uploads and the aggregator
//! decodes. How the values are made private is the `privatize` module.
//!
//! # Wire format (little-endian)
//!
//! | offset |  size | field                                              |
//! |-------:|------:|----------------------------------------------------|
//! |      0 |     4 | magic `HRTU`                                       |
//! |      4 |     2 | format version, u16 = 1                            |
//! |      6 |     1 | payload encoding, u8: 0 = f32, 1 = quantized i16   |
//! |      7 |     8 | model version, u64                                 |
//! |     15 |     8 | round id, u64                                      |
//! |     23 |    16 | nonce: fresh random bytes per upload (replays)     |
//! |     39 |     4 | parameter count n, u32, at most [`MAX_PARAMS`]     |
//! |     43 |     4 | clip norm C, f32, finite and > 0                   |
//! |     47 |     4 | noise multiplier z, f32, finite and >= 0           |
//! |     51 |     4 | quantized only: grid step γ, f32, finite and > 0   |
//! |  51/55 | 4n/2n | payload: n f32 values, or n i16 grid values       |
//!
//! Nothing else: no device identifier and no timestamp. The nonce identifies the upload only.
use crate::error::{HearthError, Result, UpdateError};
use crate::model::params::MAX_PARAMS;
use serde::{Deserialize, Serialize};

/// The first four bytes of every update.
pub const MAGIC: [u8; 4] = *b"HRTU";
/// The update format version this build writes and the only one it decodes (bytes 4..6).
pub const FORMAT_VERSION: u16 = 1;
/// Header bytes of the f32 encoding.
pub const F32_HEADER_LEN: usize = 51;
/// Header bytes of the quantized encoding: the f32 header and the grid step.
pub const QUANTIZED_HEADER_LEN: usize = F32_HEADER_LEN + 4;
/// How the payload's values are written. The round task names it (`"f32"` or `"quantized"`);
/// byte 6 of the header carries its code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// Every value as a little-endian f32 (4 bytes each); code 0.
    #[default]
    #[serde(rename = "f32")]
    F32 = 0,
    /// Every value as an i16 count of grid steps (2 bytes each), after conditional stochastic
    /// rounding (see the `privatize` module); code 1.
    #[serde(rename = "quantized")]
    QuantizedI16 = 1,
}

impl Encoding {
    /// The name the round task and the benchmarks use.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::F32 => "f32",
            Encoding::QuantizedI16 => "quantized",
        }
    }

    fn from_code(code: u8) -> Option<Encoding> {
        [Encoding::F32, Encoding::QuantizedI16].into_iter().find(|e| *e as u8 == code)
    }

    /// Header bytes before the payload.
    pub fn header_len(self) -> usize {
        match self {
            Encoding::F32 => F32_HEADER_LEN,
            Encoding::QuantizedI16 => QUANTIZED_HEADER_LEN,
        }
    }

    /// Payload bytes per parameter.
    pub fn value_width(self) -> usize {
        match self {
            Encoding::F32 => 4,
            Encoding::QuantizedI16 => 2,
        }
    }

    /// Exact byte size of an update of `params` parameters in this encoding.
    pub fn encoded_len(self, params: usize) -> usize {
        self.header_len() + params * self.value_width()
    }
}

/// An update's values in their encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Plain f32 values, one per parameter, all finite.
    F32(Vec<f32>),
    /// Parameter i is `values[i] · step`.
    QuantizedI16 {
        /// The grid step γ in parameter units; finite and > 0.
        step: f32,
        /// Grid counts, one per parameter; noise past the i16 range saturated.
        values: Vec<i16>,
    },
}

/// One device's privatised model delta for one round, as uploaded. Built by
/// `privatize::build_update`, written by [`Update::encode`], read and checked by
/// [`Update::decode`]; see the module doc for the byte layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The model version the delta was computed against.
    pub model_version: u64,
    /// The round it answers.
    pub round_id: u64,
    /// Fresh random bytes per upload, so the aggregator can drop replays; identifies the upload,
    /// never the device.
    pub nonce: [u8; 16],
    /// L2 clip norm C the delta was clipped to; finite and > 0.
    pub clip_norm: f32,
    /// Noise multiplier z: noise std per coordinate is z·C (quantized: z·C̃ in grid units); finite
    /// and >= 0.
    pub noise_multiplier: f32,
    /// The noised values, in the upload's encoding.
    pub payload: Payload,
}

impl Update {
    /// The encoding the payload is in.
    pub fn encoding(&self) -> Encoding {
        match self.payload {
            Payload::F32(_) => Encoding::F32,
            Payload::QuantizedI16 { .. } => Encoding::QuantizedI16,
        }
    }

    /// The parameter values the update carries (dequantized).
    pub fn values(&self) -> Vec<f32> {
        self.iter_values().collect()
    }

    /// The values without a copy of the payload: the aggregator sums and measures large
    /// updates this way.
    pub fn iter_values(&self) -> impl Iterator<Item = f32> + '_ {
        let (plain, grid, step): (&[f32], &[i16], f32) = match &self.payload {
            Payload::F32(v) => (v, &[], 0.0),
            Payload::QuantizedI16 { step, values } => (&[], values, *step),
        };
        plain.iter().copied().chain(grid.iter().map(move |&q| f32::from(q) * step))
    }

    /// Number of parameters carried.
    pub fn len(&self) -> usize {
        match &self.payload {
            Payload::F32(v) => v.len(),
            Payload::QuantizedI16 { values, .. } => values.len(),
        }
    }

    /// Whether the update carries no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// # Panics
    /// If the payload holds more than `u32::MAX` values; `privatize::build_update` and [`Update::decode`]
    /// never produce more than [`MAX_PARAMS`].
    pub fn encode(&self) -> Vec<u8> {
        let count = self.len();
        let mut out = Vec::with_capacity(self.encoding().encoded_len(count));
        out.extend(MAGIC);
        out.extend(FORMAT_VERSION.to_le_bytes());
        out.push(self.encoding() as u8);
        out.extend(self.model_version.to_le_bytes());
        out.extend(self.round_id.to_le_bytes());
        out.extend(self.nonce);
        out.extend(u32::try_from(count).expect("parameter count fits u32").to_le_bytes());
        out.extend(self.clip_norm.to_le_bytes());
        out.extend(self.noise_multiplier.to_le_bytes());
        match &self.payload {
            Payload::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Payload::QuantizedI16 { step, values } => {
                out.extend(step.to_le_bytes());
                values.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
        }
        out
    }

    /// Parses and validates an encoded update; every defect is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Update> {
        let mut r = Reader { bytes, at: 0 };
        let magic = r.take()?;
        if magic != MAGIC {
            return Err(UpdateError::BadMagic(magic).into());
        }
        let version = u16::from_le_bytes(r.take()?);
        if version != FORMAT_VERSION {
            return Err(UpdateError::UnknownVersion { found: version, supported: FORMAT_VERSION }.into());
        }
        let [code] = r.take()?;
        let encoding = Encoding::from_code(code).ok_or(UpdateError::UnknownEncoding(code))?;
        let model_version = u64::from_le_bytes(r.take()?);
        let round_id = u64::from_le_bytes(r.take()?);
        let nonce = r.take()?;
        let count = u32::from_le_bytes(r.take()?) as usize;
        if count > MAX_PARAMS {
            return Err(HearthError::TooLarge { what: "update parameters", found: count, limit: MAX_PARAMS });
        }
        let clip_norm = check_clip_norm(f32::from_le_bytes(r.take()?))?;
        let noise_multiplier = check_noise_multiplier(f32::from_le_bytes(r.take()?))?;
        let step = match encoding {
            Encoding::F32 => None,
            Encoding::QuantizedI16 => Some(check_step(f32::from_le_bytes(r.take()?))?),
        };

        let expected = encoding.encoded_len(count);
        if bytes.len() != expected {
            return Err(UpdateError::LengthMismatch { expected, found: bytes.len() }.into());
        }
        let payload = &bytes[r.at..];
        let payload = match step {
            None => {
                let values: Vec<f32> = payload.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                if let Some(index) = values.iter().position(|x| !x.is_finite()) {
                    return Err(HearthError::NonFinite { name: "update payload".into(), index });
                }
                Payload::F32(values)
            }
            Some(step) => Payload::QuantizedI16 {
                step,
                values: payload.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect(),
            },
        };
        Ok(Update { model_version, round_id, nonce, clip_norm, noise_multiplier, payload })
    }
}

/// Reads fixed-size header fields in order.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let field = self.bytes[self.at..]
            .first_chunk::<N>()
            .ok_or(UpdateError::Truncated { needed: self.at + N, found: self.bytes.len() })?;
        self.at += N;
        Ok(*field)
    }
}

/// `c` if finite and > 0, else [`UpdateError::ClipNorm`].
pub fn check_clip_norm(c: f32) -> Result<f32> {
    if c.is_finite() && c > 0.0 { Ok(c) } else { Err(UpdateError::ClipNorm(c).into()) }
}

/// `z` if finite and >= 0, else [`UpdateError::NoiseMultiplier`].
pub fn check_noise_multiplier(z: f32) -> Result<f32> {
    if z.is_finite() && z >= 0.0 { Ok(z) } else { Err(UpdateError::NoiseMultiplier(z).into()) }
}

/// `step` if finite and > 0, else [`UpdateError::Step`].
pub fn check_step(step: f32) -> Result<f32> {
    if step.is_finite() && step > 0.0 { Ok(step) } else { Err(UpdateError::Step(step).into()) }
}
