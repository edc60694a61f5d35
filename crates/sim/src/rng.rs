//! Seeded random streams, so that a simulation repeats exactly from its seed: hearth-core's
//! `SeededRandom` (ChaCha20), one stream per purpose, round and device. Each device's coin and
//! report and each server's noise has a stream of its own, so none depends on which thread ran
//! first or on how many draws another party made. The product draws all of these from the OS
//! CSPRNG instead; here anyone who knows the seed knows the noise, which a simulation may.

use hearth_core::privacy::noise::{Sampler, SeededRandom};
use sha2::{Digest, Sha256};

/// What a stream is drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A device's participation coin for a round.
    Coin,
    /// A device's report: rounding, its own noise, the share seed, the report id, the sealing.
    Report,
    /// The leader's noise for a round.
    Leader,
    /// The helper's noise for a round.
    Helper,
    /// The helper's key pair (round and index 0).
    HelperKey,
}

/// The stream of (`seed`, `purpose`, `round`, `index`). The four are hashed into
/// `SeededRandom`'s 64-bit seed: distinct inputs give unrelated streams.
pub fn stream(seed: u64, purpose: Purpose, round: u64, index: u64) -> Sampler<SeededRandom> {
    let digest = Sha256::new()
        .chain_update(b"hearth-sim stream")
        .chain_update(seed.to_le_bytes())
        .chain_update([purpose as u8])
        .chain_update(round.to_le_bytes())
        .chain_update(index.to_le_bytes())
        .finalize();
    let key = u64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"));
    Sampler::from_source(SeededRandom::new(key))
}
