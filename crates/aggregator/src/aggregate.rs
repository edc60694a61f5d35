//! The round keeper: one thread owns the store and the running sum of the open round.
//!
//! Request handlers validate uploads in parallel and hand accepted ones over a bounded queue.
//! The keeper drains the queue in batches, stores each batch in one transaction (group commit),
//! and only then adds the updates to the running sum and acknowledges them, so every 2xx is on
//! disk. Memory is one f64 per parameter, whatever the number of updates. On start it rebuilds
//! the sum of the open round from the stored updates. What handlers read (the model, the task,
//! the privacy status) is published as an immutable snapshot.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::privacy::{Budget, PrivacyStatus};
use crate::reason::{Reason, Reject};
use crate::store::{Closing, RoundRow, Store, StoredModel};
use crate::validate::{self, Expect};
use axum::body::Bytes;
use hearth_core::learning::round::RoundTask;
use hearth_core::learning::server::{OptimizerState, RoundSum};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::pack::{ModelPack, sha256_hex};
use hearth_core::model::pack_dir::PackFiles;
use hearth_core::model::params::Params;
use hearth_core::model::scorer::Scorer;
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

/// An update that passed validation, and where to send the verdict.
pub struct Submission {
    pub update: Update,
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
    /// The initial or stored model pack is refused by hearth-core (operator's pack).
    #[error("model pack: {0}")]
    Model(#[from] hearth_core::HearthError),
    /// A file the configuration names cannot be read (operator's paths).
    #[error("cannot read {path}: {source}")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    /// The database holds what this build never writes (damage or tampering).
    #[error("stored update of round {round} is unreadable: {detail}")]
    Corrupt { round: u64, detail: String },
    /// hearth-core loads the initial pack, but tract-onnx, the reference ONNX loader, refuses it
    /// or scores it differently (operator's pack: not the standard ONNX hearth-core reads it as).
    #[error("model pack {path}: fails the tract-onnx reference check: {source}")]
    Reference { path: std::path::PathBuf, source: hearth_onnx_reference::Disagreement },
}

pub struct Keeper {
    store: Store,
    config: Config,
    budget: Budget,
    features: FeatureSpec,
    params: Params,
    optimizer_state: Option<OptimizerState>,
    model: Arc<PublishedModel>,
    round: Option<RoundRow>,
    sum: RoundSum,
    released: u64,
    snapshot: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Keeper {
    /// Opens the store (seeding it with the initial model), recovers the open round and its
    /// running sum, opens a round if none is open and the budget allows.
    pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<(Keeper, watch::Receiver<Arc<Snapshot>>), StartError> {
        if let Some(dir) = config.database.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StartError::Read { path: dir.into(), source })?;
        }
        let mut store = Store::open(&config.database)?;
        let stored = match store.latest_model()? {
            Some(m) => m,
            None => {
                let m = read_initial_model(&config)?;
                store.insert_first_model(&m, now_ms())?;
                m
            }
        };
        let pack = ModelPack::load(&stored.onnx, &stored.manifest)?;
        let budget = Budget::new(&config)?;
        let released = store.closed_rounds()?;
        let round = store.open_round()?;
        let mut sum = RoundSum::new(pack.params.values.len());
        if let Some(r) = round {
            let mut bad = None;
            let count = store.for_each_update(r.id, |body| match Update::decode(body) {
                Ok(u) => sum.add(u.iter_values()),
                Err(e) => bad = Some(e.to_string()),
            })?;
            if let Some(detail) =
                bad.or_else(|| (count != r.accepted).then(|| format!("{count} stored updates, {} counted", r.accepted)))
            {
                return Err(StartError::Corrupt { round: r.id, detail });
            }
        }
        let optimizer_state = store.optimizer_state()?;
        let model = Arc::new(published(&stored));
        let (tx, rx) = watch::channel(Arc::new(Snapshot { model: model.clone(), round: None, privacy: budget.status(released) }));
        let mut keeper = Keeper {
            store,
            config,
            budget,
            features: pack.manifest.features.clone(),
            params: pack.params,
            optimizer_state,
            model,
            round,
            sum,
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
            self.enforce_deadline();
        }
    }

    fn may_train(&self) -> bool {
        self.released < self.budget.rounds_allowed
    }

    fn deadline_from(&self, now: i64) -> i64 {
        now + (self.config.round.deadline_secs * 1000) as i64
    }

    fn store_batch(&mut self, batch: Vec<Submission>) {
        let Some(round) = self.round else {
            let reject = validate::no_round(self.may_train());
            batch.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
            return;
        };
        let (current, stale): (Vec<_>, Vec<_>) = batch.into_iter().partition(|s| s.update.round_id == round.id);
        for s in stale {
            let detail = format!("round {} ended before this update was stored", s.update.round_id);
            let _ = s.reply.send(Err(Reject::new(Reason::WrongRound, detail)));
        }
        if current.is_empty() {
            return;
        }
        let items: Vec<(&[u8; 16], &[u8])> = current.iter().map(|s| (&s.update.nonce, s.body.as_slice())).collect();
        let fresh = match self.store.accept(round.id, &items) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "storing updates failed; none acknowledged");
                let reject = Reject::new(Reason::StorageUnavailable, "the update could not be stored; retry later");
                current.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
                return;
            }
        };
        for (s, is_new) in current.into_iter().zip(fresh) {
            if is_new {
                self.sum.add(s.update.iter_values());
                self.metrics.accepted(self.sum.count());
                let _ = s.reply.send(Ok(Accepted { round_id: round.id, accepted: self.sum.count() }));
            } else {
                let _ = s.reply.send(Err(Reject::new(Reason::DuplicateNonce, "an update with this nonce was already accepted")));
            }
        }
        if self.sum.count() >= self.config.round.min_clients {
            self.close(round);
        }
    }

    /// Releases the round: mean, server step, new pack, next round; all or nothing.
    fn close(&mut self, round: RoundRow) {
        let mut params = self.params.clone();
        let state = self.config.optimizer.step(&mut params.values, &self.sum.mean(), self.optimizer_state.clone());
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
                self.model = Arc::new(published(&model));
                self.released += 1;
                self.begin(next);
                self.metrics.round_closed();
                if next.is_none() {
                    tracing::warn!(rounds = self.released, "privacy budget spent; training stops");
                }
            }
            // The round stays open with its updates; the next batch or tick retries.
            Err(e) => tracing::error!(error = %e, round = round.id, "closing the round failed"),
        }
    }

    fn enforce_deadline(&mut self) {
        let Some(round) = self.round else { return };
        let now = now_ms();
        if now < round.deadline_ms {
            return;
        }
        match self.store.abandon_round(round.id, self.model.version, now, self.deadline_from(now)) {
            Ok(next) => {
                tracing::warn!(
                    round = round.id,
                    updates = self.sum.count(),
                    needed = self.config.round.min_clients,
                    "round abandoned at its deadline; nothing released"
                );
                self.begin(Some(next));
                self.metrics.round_abandoned();
            }
            Err(e) => tracing::error!(error = %e, round = round.id, "abandoning the round failed"),
        }
    }

    fn begin(&mut self, next: Option<RoundRow>) {
        self.round = next;
        self.sum.clear();
        self.metrics.round_holds(0);
        self.publish();
    }

    fn publish(&self) {
        let r = &self.config.round;
        let round = self.round.map(|row| {
            let task = RoundTask {
                round_id: row.id,
                model_version: row.model_version,
                clip_norm: r.clip_norm,
                noise_multiplier: r.noise_multiplier,
                min_events: r.min_events,
                encoding: r.encoding,
                train: r.train.clone(),
                deadline_ms: Some(row.deadline_ms),
            };
            OpenRound {
                expect: Expect::of(&task, self.params.values.len()),
                task_json: serde_json::to_vec(&task).expect("task serialises").into(),
            }
        });
        self.metrics.published(self.model.version, self.released);
        self.snapshot.send_replace(Arc::new(Snapshot {
            model: self.model.clone(),
            round,
            privacy: self.budget.status(self.released),
        }));
    }
}

fn published(m: &StoredModel) -> PublishedModel {
    PublishedModel {
        version: m.version,
        onnx: Bytes::copy_from_slice(&m.onnx),
        manifest: Bytes::copy_from_slice(m.manifest.as_bytes()),
        etag: etag(m),
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
