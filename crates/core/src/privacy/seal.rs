//! HPKE (RFC 9180) for the helper's half of an update: the device seals its 32-byte share seed
//! to the helper's public key, binding the report id, round and model into the associated data,
//! so the leader relays it unread and cannot move it to another report or round.
//!
//! Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode, from the `hpke`
//! crate. Nothing here is a primitive of our own: key generation is the KEM's `DeriveKeyPair`
//! on 32 bytes from the OS CSPRNG, and the sender's ephemeral key comes from a ChaCha20 CSPRNG
//! (`rand_chacha`) seeded from the OS CSPRNG.

use crate::error::{Result, SecAggError};
use crate::privacy::noise::{ByteSource, Sampler};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// Bytes of the seed a device seals.
pub const SEED_LEN: usize = 32;
/// Bytes of an X25519 encapsulated key.
pub const ENC_LEN: usize = 32;
/// Bytes of a sealed seed: the seed and the AEAD tag.
pub const SEALED_LEN: usize = SEED_LEN + 16;
/// HPKE `info`: names the protocol and its version, so a key used elsewhere cannot be confused.
const INFO: &[u8] = b"hearth secagg seed v1";
/// The suite's names, as the helper's key configuration states them.
pub const KEM: &str = "DHKEM(X25519, HKDF-SHA256)";
/// See [`KEM`].
pub const KDF: &str = "HKDF-SHA256";
/// See [`KEM`].
pub const AEAD: &str = "ChaCha20Poly1305";

/// The helper's public key configuration, as the helper serves it within its `/v1/helper_config`. The
/// device must fetch it from the helper itself: a key handed on by the leader could be the
/// leader's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HpkeConfig {
    /// Identifies the key; written into every upload so the helper knows which key to use.
    pub key_id: u8,
    /// Always [`KEM`].
    pub kem: String,
    /// Always [`KDF`].
    pub kdf: String,
    /// Always [`AEAD`].
    pub aead: String,
    /// The X25519 public key, 64 lower-case hex digits.
    pub public_key: String,
}

/// A helper's key pair. The private half never leaves the helper.
pub struct KeyPair {
    key_id: u8,
    private: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: <X25519HkdfSha256 as hpke::Kem>::PublicKey,
}

impl KeyPair {
    /// A fresh key pair from the OS CSPRNG.
    pub fn generate(key_id: u8) -> Result<KeyPair> {
        let mut ikm = [0u8; 32];
        crate::privacy::noise::OsRandom.fill(&mut ikm)?;
        Ok(KeyPair::from_secret(key_id, &ikm))
    }

    /// The key pair derived from stored secret keying material (RFC 9180 DeriveKeyPair).
    pub fn from_secret(key_id: u8, ikm: &[u8; 32]) -> KeyPair {
        let (private, public) = X25519HkdfSha256::derive_keypair(ikm);
        KeyPair { key_id, private, public }
    }

    /// What the helper publishes.
    pub fn config(&self) -> HpkeConfig {
        HpkeConfig {
            key_id: self.key_id,
            kem: KEM.into(),
            kdf: KDF.into(),
            aead: AEAD.into(),
            public_key: hex(&self.public.to_bytes()),
        }
    }

    /// Opens a sealed seed; fails with [`SecAggError::Open`] when the key, the associated data
    /// (another report, round or model) or the ciphertext is not the one sealed.
    pub fn open(&self, key_id: u8, enc: &[u8; ENC_LEN], sealed: &[u8; SEALED_LEN], aad: &[u8]) -> Result<[u8; SEED_LEN]> {
        if key_id != self.key_id {
            return Err(SecAggError::Open(format!("key id {key_id} is not this helper's key {}", self.key_id)).into());
        }
        let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
            .map_err(|e| SecAggError::Open(format!("encapsulated key: {e}")))?;
        let seed = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.private,
            &enc,
            INFO,
            sealed,
            aad,
        )
        .map_err(|e| SecAggError::Open(e.to_string()))?;
        Ok(seed.try_into().map_err(|_| SecAggError::Open("the sealed seed has the wrong length".into()))?)
    }
}

/// A helper public key a device may seal to, checked once.
#[derive(Clone)]
pub struct HelperKey {
    key_id: u8,
    public: <X25519HkdfSha256 as hpke::Kem>::PublicKey,
}

impl HelperKey {
    /// Checks a configuration for this suite and a well-formed key.
    pub fn from_config(c: &HpkeConfig) -> Result<HelperKey> {
        if (c.kem.as_str(), c.kdf.as_str(), c.aead.as_str()) != (KEM, KDF, AEAD) {
            return Err(SecAggError::Key(format!("unsupported suite {} / {} / {}", c.kem, c.kdf, c.aead)).into());
        }
        let bytes = unhex::<32>(&c.public_key).ok_or_else(|| SecAggError::Key("public_key is not 64 hex digits".into()))?;
        let public = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&bytes)
            .map_err(|e| SecAggError::Key(format!("public key: {e}")))?;
        Ok(HelperKey { key_id: c.key_id, public })
    }

    /// The key's id.
    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// Seals `seed` with `aad`; the ephemeral key comes from a CSPRNG seeded by `rng`.
    pub fn seal<S: ByteSource>(
        &self,
        seed: &[u8; SEED_LEN],
        aad: &[u8],
        rng: &mut Sampler<S>,
    ) -> Result<([u8; ENC_LEN], [u8; SEALED_LEN])> {
        let mut csprng_seed = [0u8; 32];
        rng.fill_bytes(&mut csprng_seed)?;
        let mut csprng = ChaCha20Rng::from_seed(csprng_seed);
        let (enc, sealed) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeS::Base,
            &self.public,
            INFO,
            seed,
            aad,
            &mut csprng,
        )
        .map_err(|e| SecAggError::Key(format!("sealing failed: {e}")))?;
        let enc: [u8; ENC_LEN] = enc.to_bytes().as_slice().try_into().expect("X25519 encapsulated keys are 32 bytes");
        let sealed: [u8; SEALED_LEN] = sealed.as_slice().try_into().expect("seed plus tag");
        Ok((enc, sealed))
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 2N hex digits to N bytes, or `None`.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_seed_opens_only_with_its_key_and_associated_data() {
        let mut rng = Sampler::os();
        let helper = KeyPair::generate(1).unwrap();
        let key = HelperKey::from_config(&helper.config()).unwrap();
        let seed = [7u8; SEED_LEN];
        let (enc, sealed) = key.seal(&seed, b"report 1, round 2", &mut rng).unwrap();
        assert_eq!(helper.open(1, &enc, &sealed, b"report 1, round 2").unwrap(), seed);
        assert!(helper.open(1, &enc, &sealed, b"report 1, round 3").is_err());
        assert!(helper.open(2, &enc, &sealed, b"report 1, round 2").is_err());
        let other = KeyPair::generate(1).unwrap();
        assert!(other.open(1, &enc, &sealed, b"report 1, round 2").is_err());
        let mut flipped = sealed;
        flipped[0] ^= 1;
        assert!(helper.open(1, &enc, &flipped, b"report 1, round 2").is_err());
    }

    #[test]
    fn configurations_are_checked() {
        let mut c = KeyPair::from_secret(3, &[1; 32]).config();
        assert_eq!(unhex::<32>(&c.public_key).map(|b| hex(&b)), Some(c.public_key.clone()));
        assert!(HelperKey::from_config(&c).is_ok());
        c.public_key.pop();
        assert!(HelperKey::from_config(&c).is_err());
        let mut c = KeyPair::from_secret(3, &[1; 32]).config();
        c.aead = "AES-128-GCM".into();
        assert!(HelperKey::from_config(&c).is_err());
    }
}
