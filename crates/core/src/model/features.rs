//! Deterministic feature hashing: a feature string (`topic:sports`, `hour:14`) maps to the same
//! bucket on every platform, because the hash is defined here over UTF-8 bytes and fixed-width
//! integer arithmetic, never over a platform hasher.

use serde::{Deserialize, Serialize};

/// Bucket 0 is reserved for padding; real features land in `1..buckets`.
pub const PADDING: u32 = 0;

/// How feature strings become model inputs. Carried in the model pack manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Hash function name; only `fnv1a64-fmix` is defined.
    pub hash: String,
    /// Seed hashed in front of every feature string; a different seed is a different bucketing.
    pub seed: u64,
    /// Rows of the embedding table, padding included; at least 2, so real features have buckets
    /// `1..buckets`.
    pub buckets: u32,
    /// Padded slot counts of the graph inputs. This one is the profile's (`user_ids`, `user_w`):
    /// how many of its strongest features the model sees.
    pub user_slots: usize,
    /// Slots of the page-context input (`ctx_ids`, `ctx_w`).
    pub context_slots: usize,
    /// Slots per ad (`ad_ids`, `ad_w`): the most features one catalog ad may have.
    pub ad_slots: usize,
}

/// The one [`FeatureSpec::hash`] this build implements ([`hash64`]); a manifest naming another
/// is refused.
pub const HASH_NAME: &str = "fnv1a64-fmix";

impl FeatureSpec {
    /// The default pack's feature spec for a table of `buckets` rows: 64 user, 16 context and
    /// 16 ad slots, hashed with the seed "HEARTH".
    pub fn product(buckets: usize) -> FeatureSpec {
        FeatureSpec {
            hash: HASH_NAME.into(),
            seed: 0x4845_4152_5448, // "HEARTH"
            buckets: buckets as u32,
            user_slots: 64,
            context_slots: 16,
            ad_slots: 16,
        }
    }

    /// The bucket of a canonical feature string (see [`feature`]) under this spec's seed.
    pub fn bucket(&self, feature: &str) -> u32 {
        bucket(self.seed, self.buckets, feature)
    }
}

/// FNV-1a over the seed's little-endian bytes then the feature's bytes, finished with the
/// murmur3 64-bit mixer so that similar strings spread over the whole bucket range.
pub fn hash64(seed: u64, feature: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in seed.to_le_bytes().iter().chain(feature.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Bucket in `1..buckets` (`buckets` ≥ 2, checked when the manifest is validated).
pub fn bucket(seed: u64, buckets: u32, feature: &str) -> u32 {
    1 + (hash64(seed, feature) % u64::from(buckets - 1)) as u32
}

/// Canonical feature string: `kind:value`, value trimmed and lower-cased so that
/// "Sports" and " sports" are one feature.
pub fn feature(kind: &str, value: &str) -> String {
    format!("{kind}:{}", value.trim().to_lowercase())
}

/// Weighted features padded to a fixed slot count: ids and weights as the graph takes them.
/// Weights are normalised to sum of |w| = 1 so that pooling is a weighted mean.
#[derive(Debug, Clone, PartialEq)]
pub struct Slots {
    /// Bucket per slot; [`PADDING`] in unused slots. `i64` because the graph's id inputs are int64.
    pub ids: Vec<i64>,
    /// Weight per slot, 0 in padding; |w| sums to 1, or all are 0 when no feature has a nonzero
    /// weight.
    pub weights: Vec<f32>,
}

impl Slots {
    /// Hashes the first `slots` features (the rest are dropped) and normalises their weights;
    /// unused slots are padding.
    pub fn encode(spec: &FeatureSpec, slots: usize, features: &[(&str, f32)]) -> Slots {
        let mut ids = vec![i64::from(PADDING); slots];
        let mut weights = vec![0.0f32; slots];
        let total: f32 = features.iter().take(slots).map(|(_, w)| w.abs()).sum();
        if total > 0.0 {
            for (i, (f, w)) in features.iter().take(slots).enumerate() {
                ids[i] = i64::from(spec.bucket(f));
                weights[i] = w / total;
            }
        }
        Slots { ids, weights }
    }
}
