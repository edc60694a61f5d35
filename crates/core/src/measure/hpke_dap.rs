//! DAP's use of HPKE (draft-ietf-ppm-dap-09 §6.1, RFC 9180 base mode): each input share is
//! sealed to its aggregator, the helper's aggregate share to the collector. One suite:
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, from the `hpke` crate; the
//! `info` strings are DAP's, so that an independent DAP client's reports open here.

use super::{MeasureError, Result, dap};
use crate::privacy::noise::{ByteSource, OsRandom};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

type PrivateKey = <X25519HkdfSha256 as hpke::Kem>::PrivateKey;
type PublicKey = <X25519HkdfSha256 as hpke::Kem>::PublicKey;
type EncappedKey = <X25519HkdfSha256 as hpke::Kem>::EncappedKey;

/// DAP's version label, the prefix of every `info`.
const DAP_VERSION: &[u8] = b"dap-09";

/// `info` of an input share sealed to `receiver`: "dap-09 input share" ‖ client ‖ receiver.
pub fn input_share_info(receiver: dap::Role) -> Vec<u8> {
    [DAP_VERSION, b" input share", &[dap::Role::Client as u8, receiver as u8]].concat()
}

/// `info` of an aggregate share sealed by `sender` to the collector.
pub fn aggregate_share_info(sender: dap::Role) -> Vec<u8> {
    [DAP_VERSION, b" aggregate share", &[sender as u8, dap::Role::Collector as u8]].concat()
}

/// Refuses a configuration of any other suite.
pub fn check_suite(config: &dap::HpkeConfig) -> Result<()> {
    let suite = (*config.kem_id(), *config.kdf_id(), *config.aead_id());
    if suite != (dap::HpkeKemId::X25519HkdfSha256, dap::HpkeKdfId::HkdfSha256, dap::HpkeAeadId::ChaCha20Poly1305) {
        return Err(MeasureError::Key(format!("unsupported suite {suite:?}")));
    }
    public_key(config).map(|_| ())
}

fn public_key(config: &dap::HpkeConfig) -> Result<PublicKey> {
    PublicKey::from_bytes(config.public_key().as_ref()).map_err(|e| MeasureError::Key(format!("public key: {e}")))
}

/// A receiver's key pair (an aggregator's, or the collector's).
pub struct DapKeyPair {
    config_id: u8,
    secret: [u8; 32],
    private: PrivateKey,
    public: PublicKey,
}

impl DapKeyPair {
    /// A fresh key pair from the OS CSPRNG.
    pub fn generate(config_id: u8) -> Result<DapKeyPair> {
        let mut ikm = [0u8; 32];
        OsRandom.fill(&mut ikm).map_err(|e| MeasureError::Random(e.to_string()))?;
        Ok(DapKeyPair::from_secret(config_id, &ikm))
    }

    /// The key pair derived from stored keying material (RFC 9180 DeriveKeyPair).
    pub fn from_secret(config_id: u8, ikm: &[u8; 32]) -> DapKeyPair {
        let (private, public) = X25519HkdfSha256::derive_keypair(ikm);
        DapKeyPair { config_id, secret: *ikm, private, public }
    }

    /// The keying material to store (secret).
    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    /// The public configuration a sender seals to.
    pub fn config(&self) -> dap::HpkeConfig {
        dap::HpkeConfig::new(
            self.config_id.into(),
            dap::HpkeKemId::X25519HkdfSha256,
            dap::HpkeKdfId::HkdfSha256,
            dap::HpkeAeadId::ChaCha20Poly1305,
            self.public.to_bytes().to_vec().into(),
        )
    }

    /// Opens a ciphertext sealed to this key with `info` and `aad`.
    pub fn open(&self, ct: &dap::HpkeCiphertext, info: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        if u8::from(*ct.config_id()) != self.config_id {
            return Err(MeasureError::Key(format!(
                "HPKE config id {} is not this key's ({})",
                u8::from(*ct.config_id()),
                self.config_id
            )));
        }
        let enc =
            EncappedKey::from_bytes(ct.encapsulated_key()).map_err(|e| MeasureError::Open(format!("encapsulated key: {e}")))?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.private,
            &enc,
            info,
            ct.payload(),
            aad,
        )
        .map_err(|e| MeasureError::Open(e.to_string()))
    }
}

/// Seals `plaintext` to `config`; the ephemeral key comes from a ChaCha20 CSPRNG seeded from the
/// OS CSPRNG.
pub fn seal(config: &dap::HpkeConfig, info: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<dap::HpkeCiphertext> {
    check_suite(config)?;
    let public = public_key(config)?;
    let mut seed = [0u8; 32];
    OsRandom.fill(&mut seed).map_err(|e| MeasureError::Random(e.to_string()))?;
    let mut csprng = ChaCha20Rng::from_seed(seed);
    let (enc, payload) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &public,
        info,
        plaintext,
        aad,
        &mut csprng,
    )
    .map_err(|e| MeasureError::Key(format!("sealing failed: {e}")))?;
    Ok(dap::HpkeCiphertext::new(*config.id(), enc.to_bytes().to_vec(), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_opens_only_with_its_key_info_and_aad() {
        let key = DapKeyPair::generate(3).unwrap();
        let info = input_share_info(dap::Role::Helper);
        let ct = seal(&key.config(), &info, b"share", b"aad").unwrap();
        assert_eq!(key.open(&ct, &info, b"aad").unwrap(), b"share");
        assert!(key.open(&ct, &input_share_info(dap::Role::Leader), b"aad").is_err());
        assert!(key.open(&ct, &info, b"other").is_err());
        assert!(DapKeyPair::generate(3).unwrap().open(&ct, &info, b"aad").is_err());
        assert!(DapKeyPair::from_secret(4, &key.secret()).open(&ct, &info, b"aad").is_err());
        assert_eq!(DapKeyPair::from_secret(3, &key.secret()).open(&ct, &info, b"aad").unwrap(), b"share");
    }

    #[test]
    fn the_info_strings_are_daps() {
        assert_eq!(input_share_info(dap::Role::Leader), b"dap-09 input share\x01\x02");
        assert_eq!(aggregate_share_info(dap::Role::Helper), b"dap-09 aggregate share\x03\x00");
    }
}
