//! The helper role: it publishes its HPKE key and noise at `/v1/helper_config`, and answers the
//! leader's `/v1/aggregate` with one noised aggregate share per round.
//!
//! The helper trusts the leader for nothing it can check itself. It refuses a batch of fewer
//! than its own K reports, a report id it counted before or twice in one batch, a seed that does
//! not open under the batch's binding (a report it never got from a device for this round and
//! plan, or one moved from another round), a plan that declares another noise than its own,
//! and a second, different batch for a round it already released. A retry of the released batch
//! gets the stored bytes, never a fresh noise draw.

use crate::reason::{Reason, Reject};
use crate::store::{DbError, HelperStore, Release};
use crate::store_health::StoreHealth;
use hearth_core::learning::round::HelperConfig;
use hearth_core::model::pack::sha256_hex;
use hearth_core::model::params::MAX_PARAMS;
use hearth_core::privacy::seal::{ENC_LEN, KeyPair, SEALED_LEN, hex, unhex};
use hearth_core::privacy::shares::{Binding, Report, ShareSum, write_values};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The media type of an aggregate share (B/8 bytes per parameter, little-endian).
pub const SHARE_MEDIA_TYPE: &str = "application/vnd.hearth.aggregate-share";
/// Reports per batch at most: the body limit of `/v1/aggregate` follows from it.
pub const MAX_BATCH_REPORTS: usize = 100_000;

/// One report's part for the helper, as the leader relays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSeed {
    /// The report id, 32 hex digits.
    pub id: String,
    /// The helper key it is sealed to.
    pub key_id: u8,
    /// HPKE encapsulated key, 64 hex digits.
    pub enc: String,
    /// The sealed seed, 96 hex digits.
    pub sealed: String,
}

/// Bytes of a sealed seed as the leader stores it until its round ends: key id, encapsulated
/// key, sealed seed.
pub const STORED_SEED_LEN: usize = 1 + ENC_LEN + SEALED_LEN;

impl SealedSeed {
    pub fn of(r: &Report) -> SealedSeed {
        SealedSeed { id: hex(&r.report_id), key_id: r.key_id, enc: hex(&r.enc), sealed: hex(&r.sealed) }
    }

    /// The report's part for the helper, as the leader stores it.
    pub fn stored(r: &Report) -> Vec<u8> {
        let mut out = Vec::with_capacity(STORED_SEED_LEN);
        out.push(r.key_id);
        out.extend_from_slice(&r.enc);
        out.extend_from_slice(&r.sealed);
        out
    }

    /// A stored seed of report `id`; `None` when it is not [`STORED_SEED_LEN`] bytes.
    pub fn from_stored(id: &[u8; 16], b: &[u8]) -> Option<SealedSeed> {
        (b.len() == STORED_SEED_LEN).then(|| SealedSeed {
            id: hex(id),
            key_id: b[0],
            enc: hex(&b[1..1 + ENC_LEN]),
            sealed: hex(&b[1 + ENC_LEN..]),
        })
    }
}

/// `POST /v1/aggregate`: the round's binding and its reports' sealed seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateRequest {
    pub binding: Binding,
    pub reports: Vec<SealedSeed>,
}

pub struct Helper {
    store: Mutex<Box<dyn HelperStore>>,
    health: Arc<StoreHealth>,
    key: KeyPair,
    token: String,
    noise_multiplier: f32,
    min_clients: u64,
}

impl Helper {
    pub fn new(
        mut store: Box<dyn HelperStore>,
        health: Arc<StoreHealth>,
        token: String,
        noise_multiplier: f32,
        min_clients: u64,
    ) -> Result<Helper, Box<dyn std::error::Error + Send + Sync>> {
        let key = store.key()?;
        Ok(Helper { store: Mutex::new(store), health, key, token, noise_multiplier, min_clients })
    }

    /// Whether the helper's store is still its database and writable (see `store_health`).
    pub fn store_health(&self) -> &StoreHealth {
        &self.health
    }

    /// The watchdog's round over the helper's store; blocking (a write that reaches the disk).
    pub fn watch_store(&self) {
        self.health.watch(|| self.store.lock().unwrap_or_else(|e| e.into_inner()).touch());
    }

    /// Whether the database answers a query now (readiness); blocking.
    pub fn ping(&self) -> Result<(), DbError> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).ping()
    }

    pub fn config(&self) -> HelperConfig {
        HelperConfig { hpke: self.key.config(), noise_multiplier: self.noise_multiplier, min_clients: self.min_clients }
    }

    /// Whether `authorization` is the leader's bearer token (compared in constant time).
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        bearer_matches(authorization, &self.token)
    }

    /// Checks the batch, opens and sums it, adds the helper's noise, records and returns the
    /// aggregate share; every refusal is typed and releases nothing.
    pub fn aggregate(&self, req: &AggregateRequest) -> Result<Vec<u8>, Reject> {
        // A release recorded in a lost store would be forgotten: its round could be released again.
        if let Some(refusal) = self.health.refusal() {
            return Err(refusal);
        }
        let b = &req.binding;
        if b.secagg.helper_noise != self.noise_multiplier {
            return Err(Reject::new(
                Reason::BindingMismatch,
                format!("the batch declares helper noise {}, this helper adds {}", b.secagg.helper_noise, self.noise_multiplier),
            ));
        }
        let n = req.reports.len();
        if (n as u64) < self.min_clients || (n as u64) < b.secagg.clients {
            return Err(Reject::new(
                Reason::TooFewReports,
                format!("{n} reports; this helper releases nothing for fewer than {}", self.min_clients.max(b.secagg.clients)),
            ));
        }
        if n as u64 != b.secagg.clients || n > MAX_BATCH_REPORTS {
            return Err(Reject::new(Reason::BindingMismatch, format!("{n} reports for a plan of {} clients", b.secagg.clients)));
        }
        if b.params == 0 || b.params > MAX_PARAMS as u64 {
            return Err(Reject::new(Reason::BindingMismatch, format!("{} parameters", b.params)));
        }
        let plan = b.plan().map_err(|e| Reject::new(Reason::BindingMismatch, e.to_string()))?;
        let mut seeds = Vec::with_capacity(n);
        let mut unique = HashSet::with_capacity(n);
        for s in &req.reports {
            let malformed = || Reject::new(Reason::UnopenableReport, format!("report {:?}: malformed hex", s.id));
            let id = unhex::<16>(&s.id).ok_or_else(malformed)?;
            let enc = unhex::<ENC_LEN>(&s.enc).ok_or_else(malformed)?;
            let sealed = unhex::<SEALED_LEN>(&s.sealed).ok_or_else(malformed)?;
            if !unique.insert(id) {
                return Err(Reject::new(Reason::RepeatedReport, format!("report {} appears twice in the batch", s.id)));
            }
            seeds.push((id, s.key_id, enc, sealed));
        }
        let ids: Vec<[u8; 16]> = seeds.iter().map(|s| s.0).collect();
        let digest = batch_digest(b, &ids);
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(share) = decided(store.as_mut(), b.round_id, &digest, &ids)? {
            return Ok(share);
        }
        drop(store);
        // Opening and expanding is the expensive part (n × d ChaCha20 words); no lock is held.
        let mut sum = ShareSum::new(plan.params);
        for (id, key_id, enc, sealed) in &seeds {
            let seed = self.key.open(*key_id, enc, sealed, &Report::aad(id, *key_id, b)).map_err(|e| {
                Reject::new(
                    Reason::UnopenableReport,
                    format!("report {}: {e} (not a device's report for this round and plan)", hex(id)),
                )
            })?;
            sum.add_unmask(&seed);
        }
        sum.add_noise(plan.sigma_helper, &mut crate::noise::sampler(crate::noise::Drawer::Helper, b.round_id))
            .map_err(|e| Reject::new(Reason::StorageUnavailable, format!("the helper's noise could not be drawn: {e}")))?;
        let mut share = Vec::with_capacity(plan.params * 3);
        write_values(&sum.values(), &mut share);
        let release = Release { batch_digest: digest, share };
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        // Re-checked under the lock: two concurrent batches for one round release once, and the
        // same batch sent twice at once (a leader's retry) gets that one release.
        if let Some(share) = decided(store.as_mut(), b.round_id, &release.batch_digest, &ids)? {
            return Ok(share);
        }
        let recorded = store.record(b.round_id, &ids, &release, crate::aggregate::now_ms()).map_err(|e| {
            self.health.write_failed(&e);
            storage(e)
        })?;
        if !recorded {
            // Another replica recorded this round (or one of these ids) first: the same batch
            // gets what it released, never a second noise draw.
            return decided(store.as_mut(), b.round_id, &release.batch_digest, &ids)?.ok_or_else(|| {
                Reject::new(Reason::RoundAlreadyAggregated, format!("round {} was released by another replica", b.round_id))
            });
        }
        // Nothing is released from a store that was lost meanwhile.
        self.health.write_succeeded();
        self.health.check_files();
        if let Some(refusal) = self.health.refusal() {
            return Err(refusal);
        }
        tracing::info!(round = b.round_id, reports = n, "aggregate share released");
        Ok(release.share)
    }
}

/// What was decided before for this batch: the share released for it (the same batch again),
/// a refusal (another batch released for its round, or its reports counted in another release),
/// or nothing yet. A release that another replica records between the two reads shows as seen
/// ids without a release, so the release is read again before refusing.
fn decided(store: &mut dyn HelperStore, round: u64, digest: &str, ids: &[[u8; 16]]) -> Result<Option<Vec<u8>>, Reject> {
    let same_batch = |r: Release| {
        if r.batch_digest == digest {
            Ok(Some(r.share))
        } else {
            Err(Reject::new(Reason::RoundAlreadyAggregated, format!("round {round} was released for another batch")))
        }
    };
    if let Some(r) = store.release(round).map_err(storage)? {
        return same_batch(r);
    }
    let seen = store.seen(ids).map_err(storage)?;
    if seen == 0 {
        return Ok(None);
    }
    match store.release(round).map_err(storage)? {
        Some(r) => same_batch(r),
        None => {
            Err(Reject::new(Reason::RepeatedReport, format!("{seen} of the batch's reports were counted in an earlier release")))
        }
    }
}

/// Identifies a batch: its binding and its set of ids (sorted, so a leader that restarted and
/// relays the same reports in another order retries the same batch).
fn batch_digest(b: &Binding, ids: &[[u8; 16]]) -> String {
    let mut bytes = serde_json::to_vec(b).expect("a binding serialises");
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.iter().for_each(|id| bytes.extend(id));
    sha256_hex(&bytes)
}

fn storage(e: DbError) -> Reject {
    tracing::error!(error = %e, "helper store failed");
    Reject::new(Reason::StorageUnavailable, "the helper's database failed; retry later")
}

/// Whether an `Authorization` header is `Bearer <token>`, compared in constant time (the
/// secure-aggregation and the measurement endpoints of a helper share it).
pub fn bearer_matches(authorization: Option<&str>, token: &str) -> bool {
    let Some(given) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else { return false };
    given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
