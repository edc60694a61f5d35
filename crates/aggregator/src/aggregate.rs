//! The round keeper: one thread owns the store and the running sum of the open round.
//!
//! Request handlers validate uploads in parallel and hand accepted ones over a bounded queue.
//! The keeper drains the queue in batches, stores each batch in one transaction (group commit),
//! and only then adds the uploads to the running sum and acknowledges them, so every 2xx is on
//! disk. Memory is one number per parameter, whatever the number of uploads. On start it rebuilds
//! the sum of the open round from the stored uploads. What handlers read (the model, the task,
//! the privacy status) is published as an immutable snapshot.
//!
//! A `single` server sums plaintext updates. A `leader` sums its shares of reports mod 2^B and,
//! at exactly K, sends the reports' sealed seeds to the helper, adds its own discrete Gaussian to
//! its sum, adds the helper's noised aggregate share, decodes, checks the result is a plausible
//! sum of K honest reports, and only then moves the model.

use crate::config::{Config, Role};
use crate::helper::{AggregateRequest, SealedSeed};
use crate::helper_client::{HelperClient, HelperError};
use crate::metrics::Metrics;
use crate::privacy::{Budget, PrivacyStatus};
use crate::reason::{Reason, Reject};
use crate::store::{Closing, RoundRow, Store, StoredModel};
use crate::store_file::{Identity, StoreError};
use crate::store_health::StoreHealth;
use crate::validate::{self, Expect, Upload};
use axum::body::Bytes;
use hearth_core::learning::round::{HelperConfig, RoundTask};
use hearth_core::learning::server::{OptimizerState, RoundSum};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::pack::{ModelPack, sha256_hex};
use hearth_core::model::pack_dir::PackFiles;
use hearth_core::model::params::Params;
use hearth_core::model::scorer::Scorer;
use hearth_core::privacy::ledger::DevicePolicy;
use hearth_core::privacy::shares::{Plan, Report, SecAggTask, ShareSum, read_values};
use hearth_core::privacy::wire::Update;
use serde::Serialize;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// Updates stored per transaction at most.
const MAX_BATCH: usize = 64;
/// How often the keeper wakes without uploads, to enforce deadlines.
const TICK: Duration = Duration::from_millis(500);
/// Seed of the random inputs the initial pack is scored on by hearth-core and tract-onnx.
const REFERENCE_SEED: u64 = 0x4845_4152_5448;

/// An upload that passed validation, and where to send the verdict.
pub struct Submission {
    pub upload: Upload,
    /// The bytes as uploaded, stored as they are (the keeper is the serial part: it does not
    /// re-encode).
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Result<Accepted, Reject>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub round_id: u64,
    /// Updates the round holds now, this one included.
    pub accepted: u64,
}

/// A published model pack as served.
#[derive(Debug)]
pub struct PublishedModel {
    pub version: u64,
    pub onnx: Bytes,
    pub manifest: Bytes,
    pub etag: String,
}

#[derive(Debug)]
pub struct OpenRound {
    pub expect: Expect,
    /// The task as devices fetch it (hearth-core's RoundTask).
    pub task_json: Bytes,
}

/// What request handlers see; replaced whole on every change.
#[derive(Debug)]
pub struct Snapshot {
    pub model: Arc<PublishedModel>,
    pub round: Option<OpenRound>,
    pub privacy: PrivacyStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database cannot be opened, migrated or read (operator's disk or permissions).
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The database file is missing, not this role's store, or not writable; or `init` found
    /// one there already (operator's path, files or permissions).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The initial or stored model pack is refused by hearth-core (operator's pack).
    #[error("model pack: {0}")]
    Model(#[from] hearth_core::HearthError),
    /// A file the configuration names cannot be read (operator's paths).
    #[error("cannot read {path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    /// The database holds what this build never writes (damage or tampering).
    #[error("stored update of round {round} is unreadable: {detail}")]
    Corrupt { round: u64, detail: String },
    /// A leader could not get the helper's configuration, or it does not fit this leader's
    /// rounds (operator's helper URL, token or K).
    #[error("helper: {0}")]
    Helper(String),
    /// No 24-bit share can carry this leader's rounds within the wrap-around bound (K too large
    /// for the model's size and the noise; operator's round settings).
    #[error("secure rounds cannot be planned: {0}")]
    Plan(hearth_core::HearthError),
    /// hearth-core loads the initial pack, but tract-onnx, the reference ONNX loader, refuses it
    /// or scores it differently (operator's pack: not the standard ONNX hearth-core reads it as).
    #[error("model pack {path}: fails the tract-onnx reference check: {source}")]
    Reference { path: std::path::PathBuf, source: hearth_onnx_reference::Disagreement },
}

/// The open round's running sum.
enum Sum {
    /// A single server's plaintext updates.
    Plain(RoundSum),
    /// A leader's shares mod 2^B, and the sealed seeds it relays to the helper at K.
    Shares { sum: ShareSum, seeds: Vec<SealedSeed> },
}

impl Sum {
    fn count(&self) -> u64 {
        match self {
            Sum::Plain(s) => s.count(),
            Sum::Shares { sum, .. } => sum.count(),
        }
    }

    fn add(&mut self, upload: &Upload) {
        match (self, upload) {
            (Sum::Plain(s), Upload::Plain(u)) => s.add(u.iter_values()),
            (Sum::Shares { sum, seeds }, Upload::Report(r)) => {
                sum.add(r.share.iter().copied());
                seeds.push(SealedSeed::of(r));
            }
            // The HTTP layer decodes only the format of this server's role.
            _ => unreachable!("an upload of another role's format reached the keeper"),
        }
    }

    fn clear(&mut self) {
        match self {
            Sum::Plain(s) => s.clear(),
            Sum::Shares { sum, seeds } => {
                sum.clear();
                seeds.clear();
            }
        }
    }
}

/// What a leader knows of its helper.
struct Leader {
    client: HelperClient,
    helper: HelperConfig,
    /// When the helper last failed to answer, the next attempt waits until this time (ms).
    retry_at: i64,
}

/// Wait after the helper failed to answer before asking again.
const HELPER_RETRY_MS: i64 = 2_000;

pub struct Keeper {
    store: Store,
    health: Arc<StoreHealth>,
    config: Config,
    budget: Budget,
    features: FeatureSpec,
    params: Params,
    optimizer_state: Option<OptimizerState>,
    model: Arc<PublishedModel>,
    round: Option<RoundRow>,
    sum: Sum,
    leader: Option<Leader>,
    released: u64,
    snapshot: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Keeper {
    /// `init`: creates the store, seeded with the initial model (checked against tract-onnx).
    pub fn create_store(config: &Config) -> Result<Identity, StartError> {
        let first = read_initial_model(config)?;
        Ok(Store::create(&config.database, config.role, &first, now_ms())?)
    }

    /// Opens the store `init` made (never creating one), recovers the open round and its
    /// running sum, opens a round if none is open and the budget allows.
    pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<(Keeper, watch::Receiver<Arc<Snapshot>>), StartError> {
        let (store, health) = Store::open(&config.database, config.role)?;
        let stored = store
            .latest_model()?
            .ok_or_else(|| StoreError::NotAStore { path: config.database.clone(), why: "it holds no model".into() })?;
        let pack = ModelPack::load(&stored.onnx, &stored.manifest)?;
        let leader = match config.role {
            Role::Leader => Some(Leader::connect(&config)?),
            _ => None,
        };
        let budget = Budget::new(&config, leader.as_ref().map(|l| l.helper.noise_multiplier))?;
        let released = store.closed_rounds()?;
        let round = store.open_round()?;
        let params = pack.params.values.len();
        if let Some(l) = &leader {
            let r = &config.round;
            let secagg = SecAggTask {
                clients: r.min_clients,
                leader_noise: config.secagg.noise_multiplier,
                helper_noise: l.helper.noise_multiplier,
            };
            Plan::new(r.clip_norm, params, &secagg, r.noise_multiplier).map_err(StartError::Plan)?;
        }
        let mut sum = match leader {
            Some(_) => Sum::Shares { sum: ShareSum::new(params), seeds: Vec::new() },
            None => Sum::Plain(RoundSum::new(params)),
        };
        if let Some(r) = round {
            let mut bad = None;
            let count = store.for_each_update(r.id, |body| {
                let upload = match &sum {
                    Sum::Plain(_) => Update::decode(body).map(Upload::Plain),
                    Sum::Shares { .. } => Report::decode(body).map(Upload::Report),
                };
                match upload {
                    Ok(u) => sum.add(&u),
                    Err(e) => bad = Some(e.to_string()),
                }
            })?;
            if let Some(detail) =
                bad.or_else(|| (count != r.accepted).then(|| format!("{count} stored updates, {} counted", r.accepted)))
            {
                return Err(StartError::Corrupt { round: r.id, detail });
            }
        }
        let optimizer_state = store.optimizer_state()?;
        let model = Arc::new(PublishedModel::from(stored));
        let (tx, rx) = watch::channel(Arc::new(Snapshot { model: model.clone(), round: None, privacy: budget.status(released) }));
        let mut keeper = Keeper {
            store,
            health: Arc::new(health),
            config,
            budget,
            features: pack.manifest.features.clone(),
            params: pack.params,
            optimizer_state,
            model,
            round,
            sum,
            leader,
            released,
            snapshot: tx,
            metrics,
        };
        if keeper.round.is_none() && keeper.may_train() {
            let now = now_ms();
            keeper.round = Some(keeper.store.start_round(keeper.model.version, now, keeper.deadline_from(now))?);
        }
        keeper.metrics.round_holds(keeper.sum.count());
        keeper.publish();
        tracing::info!(model_version = keeper.model.version, round = ?keeper.round.map(|r| r.id), recovered_updates = keeper.sum.count(), "aggregator ready");
        Ok((keeper, rx))
    }

    /// Whether the store is still the one opened, and writable; shared with `/healthz`.
    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    /// Serves the queue until every sender is gone.
    pub fn run(mut self, queue: Receiver<Submission>) {
        loop {
            let wait = self
                .round
                .map_or(TICK, |r| Duration::from_millis((r.deadline_ms - now_ms()).clamp(1, TICK.as_millis() as i64) as u64));
            match queue.recv_timeout(wait) {
                Ok(first) => {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter().take(MAX_BATCH - 1));
                    self.store_batch(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // The watchdog, at every wake-up: at least every TICK.
            self.health.watch(|| self.store.touch());
            // Nothing is written to a store that is lost or failing (the probe retries).
            if self.health.problem().is_some() {
                continue;
            }
            // A full round whose helper did not answer is retried here.
            if let Some(round) = self.round.filter(|_| self.sum.count() >= self.config.round.min_clients) {
                self.close(round);
            }
            self.enforce_deadline();
        }
    }

    fn may_train(&self) -> bool {
        self.released < self.budget.rounds_allowed
    }

    fn deadline_from(&self, now: i64) -> i64 {
        now.saturating_add(self.config.round.deadline_secs.saturating_mul(1000).try_into().unwrap_or(i64::MAX))
    }

    fn store_batch(&mut self, batch: Vec<Submission>) {
        if let Some(reject) = self.health.refusal() {
            batch.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
            return;
        }
        let Some(round) = self.round else {
            let reject = validate::no_round(self.may_train());
            batch.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
            return;
        };
        let (mut current, stale): (Vec<_>, Vec<_>) = batch.into_iter().partition(|s| s.upload.round_id() == round.id);
        // Queued while its round closed: a retry of an upload accepted before is a duplicate (the
        // store keeps every accepted id), only one never accepted names the wrong round.
        for s in stale {
            let verdict = match self.store.was_accepted(s.upload.id()) {
                Ok(true) => validate::duplicate_nonce(),
                Ok(false) => {
                    Reject::new(Reason::WrongRound, format!("round {} ended before this update was stored", s.upload.round_id()))
                }
                Err(e) => {
                    tracing::error!(error = %e, "looking up an upload of an ended round failed");
                    Reject::new(Reason::StorageUnavailable, "the update could not be checked; retry later")
                }
            };
            let _ = s.reply.send(Err(verdict));
        }
        // A leader's release sums exactly K reports (the plan's n): the rest wait for the next round.
        if self.leader.is_some() {
            let room = self.config.round.min_clients.saturating_sub(self.sum.count()) as usize;
            for s in current.split_off(room.min(current.len())) {
                let _ = s.reply.send(Err(Reject::new(Reason::Busy, "this round is full; retry in the next")));
            }
        }
        if current.is_empty() {
            return;
        }
        let items: Vec<(&[u8; 16], &[u8])> = current.iter().map(|s| (s.upload.id(), s.body.as_slice())).collect();
        let fresh = match self.store.accept(round.id, &items) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "storing updates failed; none acknowledged");
                self.health.write_failed(&e);
                let reject = Reject::new(Reason::StorageUnavailable, "the update could not be stored; retry later");
                current.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
                return;
            }
        };
        self.health.write_succeeded();
        // Stored, but in a file that may have been removed since the last check: no 2xx then.
        self.health.check_files();
        if let Some(reject) = self.health.refusal() {
            current.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
            return;
        }
        for (s, is_new) in current.into_iter().zip(fresh) {
            if is_new {
                self.sum.add(&s.upload);
                self.metrics.accepted(self.sum.count());
                let _ = s.reply.send(Ok(Accepted { round_id: round.id, accepted: self.sum.count() }));
            } else {
                let _ = s.reply.send(Err(validate::duplicate_nonce()));
            }
        }
        if self.sum.count() >= self.config.round.min_clients {
            self.close(round);
        }
    }

    /// Releases the round: its mean (a leader's through the helper), then [`Keeper::release`].
    fn close(&mut self, round: RoundRow) {
        let mean = match &self.sum {
            Sum::Plain(s) => s.mean(),
            Sum::Shares { .. } => match self.unmask(round) {
                Ok(Some(mean)) => mean,
                // The helper did not answer: the round stays open and full, retried later.
                Ok(None) => return,
                Err(why) => {
                    tracing::error!(round = round.id, reason = %why, "round abandoned: nothing released");
                    self.abandon(round);
                    return;
                }
            },
        };
        self.release(round, &mean);
    }

    /// A leader's mean of the round: the helper's aggregate share plus its own noised sum,
    /// decoded and checked. `Ok(None)` when the helper cannot be reached now; `Err` when the
    /// round must release nothing (the helper refused, or the sum is not what K honest reports
    /// can add up to).
    fn unmask(&mut self, round: RoundRow) -> Result<Option<Vec<f64>>, String> {
        let task = self.task(round);
        let binding = task.binding(self.params.values.len()).ok_or("a leader's task has secagg")?;
        let (Some(leader), Sum::Shares { sum, seeds }) = (self.leader.as_mut(), &self.sum) else {
            return Err("not a leader".into());
        };
        if now_ms() < leader.retry_at {
            return Ok(None);
        }
        let plan = binding.plan().map_err(|e| e.to_string())?;
        let request = AggregateRequest { binding, reports: seeds.clone() };
        let helper_share = match leader.client.aggregate(&request) {
            Ok(bytes) => bytes,
            Err(HelperError::Unreachable(e)) => {
                tracing::warn!(round = round.id, error = %e, "the helper did not answer; retrying");
                leader.retry_at = now_ms() + HELPER_RETRY_MS;
                return Ok(None);
            }
            Err(HelperError::Refused(e)) => return Err(format!("the helper refused the batch: {e}")),
        };
        if helper_share.len() != plan.params * hearth_core::privacy::shares::VALUE_BYTES {
            return Err(format!("the helper's aggregate share is {} bytes for {} parameters", helper_share.len(), plan.params));
        }
        let mut mine = sum.clone();
        mine.add_noise(plan.sigma_leader, &mut crate::noise::sampler(crate::noise::Drawer::Leader, round.id))
            .map_err(|e| e.to_string())?;
        let total = plan.decode(&mine.values(), &read_values(&helper_share)).map_err(|e| e.to_string())?;
        if let Some(why) = plan.implausible_block(&total, &self.params.layout) {
            return Err(format!("implausible aggregate ({why}): a report outside what honest devices can send"));
        }
        let n = sum.count() as f64;
        Ok(Some(total.iter().map(|v| v / n).collect()))
    }

    /// Server step, new pack, next round; all or nothing.
    fn release(&mut self, round: RoundRow, mean: &[f64]) {
        let mut params = self.params.clone();
        let state = self.config.optimizer.step(&mut params.values, mean, self.optimizer_state.clone());
        let version = self.model.version + 1;
        let (onnx, manifest) = ModelPack::write(&params, &self.features, version);
        let model = StoredModel { version, sha256: sha256_hex(&onnx), onnx, manifest };
        let now = now_ms();
        let next_deadline = (self.released + 1 < self.budget.rounds_allowed).then(|| self.deadline_from(now));
        let closing =
            Closing { round: round.id, accepted: self.sum.count(), model: &model, optimizer: state.as_ref(), now_ms: now };
        match self.store.close_round(&closing, next_deadline) {
            Ok(next) => {
                tracing::info!(
                    round = round.id,
                    updates = self.sum.count(),
                    model_version = version,
                    "round closed, model published"
                );
                self.params = params;
                self.optimizer_state = state;
                self.model = Arc::new(PublishedModel::from(model));
                self.released += 1;
                self.begin(next);
                self.metrics.round_closed();
                if next.is_none() {
                    tracing::warn!(rounds = self.released, "privacy budget spent; training stops");
                }
            }
            // The round stays open with its updates; the next batch or tick retries.
            Err(e) => {
                tracing::error!(error = %e, round = round.id, "closing the round failed");
                self.health.write_failed(&e);
            }
        }
    }

    fn enforce_deadline(&mut self) {
        let Some(round) = self.round else { return };
        if now_ms() < round.deadline_ms {
            return;
        }
        tracing::warn!(
            round = round.id,
            updates = self.sum.count(),
            needed = self.config.round.min_clients,
            "round abandoned at its deadline; nothing released"
        );
        self.abandon(round);
    }

    /// Ends the round with nothing released and opens the next.
    fn abandon(&mut self, round: RoundRow) {
        let now = now_ms();
        match self.store.abandon_round(round.id, self.model.version, now, self.deadline_from(now)) {
            Ok(next) => {
                self.begin(Some(next));
                self.metrics.round_abandoned();
            }
            Err(e) => {
                tracing::error!(error = %e, round = round.id, "abandoning the round failed");
                self.health.write_failed(&e);
            }
        }
    }

    fn begin(&mut self, next: Option<RoundRow>) {
        self.round = next;
        self.sum.clear();
        self.metrics.round_holds(0);
        self.publish();
    }

    /// The task devices get for `row`.
    fn task(&self, row: RoundRow) -> RoundTask {
        let r = &self.config.round;
        RoundTask {
            round_id: row.id,
            model_version: row.model_version,
            clip_norm: r.clip_norm,
            noise_multiplier: r.noise_multiplier,
            min_events: r.min_events,
            encoding: r.encoding,
            train: r.train.clone(),
            deadline_ms: Some(row.deadline_ms),
            sampling_rate: r.sampling_rate,
            secagg: self.leader.as_ref().map(|l| SecAggTask {
                clients: r.min_clients,
                leader_noise: self.config.secagg.noise_multiplier,
                helper_noise: l.helper.noise_multiplier,
            }),
        }
    }

    fn publish(&self) {
        let round = self.round.map(|row| {
            let task = self.task(row);
            let mut expect = Expect::of(&task, self.params.values.len());
            expect.helper_key_id = self.leader.as_ref().map(|l| l.helper.hpke.key_id);
            OpenRound { expect, task_json: serde_json::to_vec(&task).expect("task serialises").into() }
        });
        self.metrics.published(self.model.version, self.released);
        self.snapshot.send_replace(Arc::new(Snapshot {
            model: self.model.clone(),
            round,
            privacy: self.budget.status(self.released),
        }));
    }
}

impl Leader {
    /// Fetches the helper's configuration (retrying for up to the helper timeout, so the two
    /// may start together) and checks it fits this leader's rounds.
    fn connect(config: &Config) -> Result<Leader, StartError> {
        let client = HelperClient::new(&config.secagg).map_err(StartError::Helper)?;
        let helper = client.config_with_retry().map_err(StartError::Helper)?;
        let k = config.round.min_clients;
        if helper.min_clients > k {
            return Err(StartError::Helper(format!(
                "the helper releases nothing below {} reports; round.min_clients is {k}",
                helper.min_clients
            )));
        }
        let floor = DevicePolicy::RELEASE.min_server_noise;
        if helper.noise_multiplier.is_nan() || helper.noise_multiplier < floor {
            return Err(StartError::Helper(format!(
                "the helper's noise {} is below the devices' floor {floor}",
                helper.noise_multiplier
            )));
        }
        tracing::info!(helper_key = helper.hpke.key_id, helper_noise = helper.noise_multiplier, "helper configuration fetched");
        Ok(Leader { client, helper, retry_at: 0 })
    }
}

impl From<StoredModel> for PublishedModel {
    /// Moves the stored bytes into shared `Bytes`: every response then shares this one copy.
    fn from(m: StoredModel) -> PublishedModel {
        let etag = etag(&m);
        PublishedModel { version: m.version, onnx: Bytes::from(m.onnx), manifest: Bytes::from(m.manifest.into_bytes()), etag }
    }
}

/// The strong validator of a published version, the same wherever it is served.
pub fn etag(m: &StoredModel) -> String {
    format!("\"v{}-{}\"", m.version, &m.sha256[..16])
}

fn read_initial_model(config: &Config) -> Result<StoredModel, StartError> {
    let files = PackFiles::read(&config.initial_model)
        .map_err(|source| StartError::Read { path: config.initial_model.clone(), source })?;
    let pack = files.load()?;
    // What devices will run (the cut graph through hearth-core's importer) must be what any
    // ONNX runtime reads in the same bytes.
    let scorer = Scorer::new(&pack)?;
    hearth_onnx_reference::check_pack(&pack, &scorer, &files.onnx, REFERENCE_SEED)
        .map_err(|source| StartError::Reference { path: config.initial_model.clone(), source })?;
    Ok(StoredModel {
        version: pack.manifest.model_version,
        sha256: sha256_hex(&files.onnx),
        onnx: files.onnx,
        manifest: files.manifest,
    })
}
