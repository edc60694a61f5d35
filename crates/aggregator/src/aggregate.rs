//! The round keeper: one thread per process owns its store connection and its partial sum of
//! the open round.
//!
//! Request handlers validate uploads in parallel and hand accepted ones over a bounded queue.
//! The keeper drains the queue in batches and stores each batch in one transaction (group
//! commit): the batch's ids, and this writer's partial sum with the batch added. Only after the
//! commit does it acknowledge them, so every 2xx is in the database. No update is stored: memory
//! and storage are one partial per writer, whatever the number of uploads. What handlers read
//! (the model, the task, the privacy status) is published as an immutable snapshot.
//!
//! With PostgreSQL any number of replicas' keepers share one store. Each polls it (every
//! [`TICK`]) for rounds and models other replicas made; the round is settled by whichever
//! replica sees it full or past its deadline first, under the store's lock, from the merged
//! partials of every writer.
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
use crate::store::{
    self, Batch, Contents, DbError, DbResult, Identity, Item, RoundRow, RoundStore, Settled, Settlement, StoreError, Stored,
    StoredModel, Verdict,
};
use crate::store_health::StoreHealth;
use crate::sum::Sum;
use crate::validate::{self, Expect, Upload};
use axum::body::Bytes;
use hearth_core::learning::round::{HelperConfig, RoundTask};
use hearth_core::model::features::FeatureSpec;
use hearth_core::model::pack::{ModelPack, sha256_hex};
use hearth_core::model::pack_dir::PackFiles;
use hearth_core::model::params::Params;
use hearth_core::model::scorer::Scorer;
use hearth_core::privacy::ledger::DevicePolicy;
use hearth_core::privacy::noise::{ByteSource, OsRandom};
use hearth_core::privacy::shares::{Plan, SecAggTask, ShareSum, read_values};
use serde::Serialize;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// Updates stored per transaction at most.
const MAX_BATCH: usize = 64;
/// How often the keeper wakes without uploads (to enforce deadlines), and reads the open round
/// from the store at most, to see what other replicas did: a round they settled or opened, a
/// model they published.
pub const TICK: Duration = Duration::from_millis(250);
/// Seed of the random inputs the initial pack is scored on by hearth-core and tract-onnx.
const REFERENCE_SEED: u64 = 0x4845_4152_5448;

/// An upload that passed validation, and where to send the verdict.
pub struct Submission {
    pub upload: Upload,
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
    Db(#[from] DbError),
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

/// What a leader knows of its helper.
struct Leader {
    client: HelperClient,
    helper: HelperConfig,
    /// When the helper last failed to answer, the next attempt waits until this time (ms).
    retry_at: i64,
}

/// Wait after the helper failed to answer before asking again.
const HELPER_RETRY_MS: i64 = 2_000;

/// This process's partial sum of one round, and the row it is stored in.
struct Writer {
    round: u64,
    id: i64,
    sum: Sum,
}

impl Writer {
    fn new(round: u64, role: Role, params: usize) -> Writer {
        Writer { round, id: new_writer_id(), sum: Sum::new(role, params) }
    }
}

pub struct Keeper {
    store: Box<dyn RoundStore>,
    core: Core,
}

/// Everything but the store connection, so that settling a round can borrow both.
struct Core {
    health: Arc<StoreHealth>,
    config: Config,
    budget: Budget,
    features: FeatureSpec,
    params: Params,
    model: Arc<PublishedModel>,
    round: Option<RoundRow>,
    writer: Option<Writer>,
    leader: Option<Leader>,
    released: u64,
    refreshed: Instant,
    /// The model in memory is not the round's: the next refresh reads the store's latest.
    reload: bool,
    /// No settling before this: another replica is settling, or this one kept the round open
    /// (its helper did not answer); without it a round past its deadline is retried every
    /// millisecond.
    settle_after: Instant,
    /// The release `decide` made (the new parameters, the model, the rounds released with it),
    /// applied once its transaction commits.
    pending: Option<(Params, StoredModel, u64)>,
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
        Ok(store::create_rounds(&config.database, config.role, &first)?)
    }

    /// Opens the store `init` made (never creating one); opens a round if none is open and the
    /// budget allows.
    pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<(Keeper, watch::Receiver<Arc<Snapshot>>), StartError> {
        let (mut store, health) = store::open_rounds(&config.database, config.role)?;
        let location = config.database.location();
        let stored =
            store.latest_model()?.ok_or_else(|| StoreError::NotAStore { store: location, why: "it holds no model".into() })?;
        let pack = ModelPack::load(&stored.onnx, &stored.manifest)?;
        let leader = match config.role {
            Role::Leader => Some(Leader::connect(&config)?),
            _ => None,
        };
        let budget = Budget::new(&config, leader.as_ref().map(|l| l.helper.noise_multiplier))?;
        let released = store.closed_rounds()?;
        if let Some(l) = &leader {
            let r = &config.round;
            let secagg = SecAggTask {
                clients: r.min_clients,
                leader_noise: config.secagg.noise_multiplier,
                helper_noise: l.helper.noise_multiplier,
            };
            Plan::new(r.clip_norm, pack.params.values.len(), &secagg, r.noise_multiplier).map_err(StartError::Plan)?;
        }
        let mut round = store.open_round()?;
        if round.is_none() && released < budget.rounds_allowed {
            let now = now_ms();
            round = Some(store.ensure_round(stored.version, now, deadline_from(&config, now))?);
        }
        let model = Arc::new(PublishedModel::from(stored));
        let (tx, rx) = watch::channel(Arc::new(Snapshot { model: model.clone(), round: None, privacy: budget.status(released) }));
        let core = Core {
            health: Arc::new(health),
            config,
            budget,
            features: pack.manifest.features.clone(),
            params: pack.params,
            model,
            round,
            writer: None,
            leader,
            released,
            refreshed: Instant::now(),
            reload: false,
            settle_after: Instant::now(),
            pending: None,
            snapshot: tx,
            metrics,
        };
        core.metrics.round_holds(round.map_or(0, |r| r.accepted));
        core.publish();
        tracing::info!(model_version = core.model.version, round = ?round.map(|r| r.id), round_holds = round.map_or(0, |r| r.accepted), "aggregator ready");
        Ok((Keeper { store, core }, rx))
    }

    /// Whether the store is still the one opened, and writable; shared with `/healthz`.
    pub fn health(&self) -> Arc<StoreHealth> {
        self.core.health.clone()
    }

    /// Serves the queue until every sender is gone.
    pub fn run(mut self, queue: Receiver<Submission>) {
        loop {
            let wait = self
                .core
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
            let store = &mut self.store;
            self.core.health.watch(|| store.touch());
            // Nothing is written to a store that is lost or failing (the probe retries).
            if self.core.health.problem().is_some() {
                continue;
            }
            if self.core.refreshed.elapsed() >= TICK {
                self.refresh();
            }
            // A full round whose helper did not answer is retried here, and a round past its
            // deadline abandoned.
            if let Some(round) = self.core.round.filter(|r| self.core.is_due(r) && Instant::now() >= self.core.settle_after) {
                self.settle(round);
            }
        }
    }

    /// Reads the open round (and, when it changed, the latest model and the rounds released):
    /// what other replicas, or this one before a restart, made.
    fn refresh(&mut self) {
        self.core.refreshed = Instant::now();
        if let Err(e) = self.try_refresh() {
            tracing::error!(error = %e, "reading the open round failed");
            self.core.health.write_failed(&e);
        }
    }

    fn try_refresh(&mut self) -> DbResult<()> {
        let open = self.store.open_round()?;
        let core = &mut self.core;
        // Only the count moved (other replicas' uploads): nothing to republish.
        let same = |r: Option<RoundRow>| r.map(|r| RoundRow { accepted: 0, ..r });
        if same(open) == same(core.round) && !core.reload {
            core.round = open;
            core.metrics.round_holds(open.map_or(0, |r| r.accepted));
            return Ok(());
        }
        let latest = self.store.latest_model()?;
        let released = self.store.closed_rounds()?;
        let core = &mut self.core;
        // Usually a model another replica published; an older one than in memory only when the
        // database was restored or failed over to a copy behind this replica: it is the truth.
        if let Some(m) = latest.filter(|m| m.version != core.model.version) {
            let pack =
                ModelPack::load(&m.onnx, &m.manifest).map_err(|e| DbError::Corrupt(format!("model {}: {e}", m.version)))?;
            core.params = pack.params;
            core.model = Arc::new(PublishedModel::from(m));
            tracing::info!(model_version = core.model.version, "the store's latest model loaded");
        }
        core.reload = false;
        core.released = released;
        core.begin(open);
        Ok(())
    }

    fn store_batch(&mut self, batch: Vec<Submission>) {
        let core = &mut self.core;
        if let Some(reject) = core.health.refusal() {
            batch.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
            return;
        }
        let Some(round) = core.round else {
            let reject = validate::no_round(core.may_train());
            batch.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
            return;
        };
        let (current, stale): (Vec<_>, Vec<_>) = batch.into_iter().partition(|s| s.upload.round_id() == round.id);
        self.answer_stale(stale);
        if current.is_empty() {
            return;
        }
        let core = &mut self.core;
        let params = core.params.values.len();
        let role = core.config.role;
        let mut writer = match core.writer.take() {
            Some(w) if w.round == round.id => w,
            _ => Writer::new(round.id, role, params),
        };
        let seeds: Vec<Option<Vec<u8>>> = current
            .iter()
            .map(|s| match &s.upload {
                Upload::Report(r) => Some(SealedSeed::stored(r)),
                Upload::Plain(_) => None,
            })
            .collect();
        let items: Vec<Item> =
            current.iter().zip(&seeds).map(|(s, seed)| Item { id: s.upload.id(), seed: seed.as_deref() }).collect();
        let cap = core.leader.is_some().then_some(core.config.round.min_clients);
        let (stored, grown) = loop {
            let mut grown = None;
            let batch = Batch { round: round.id, writer: writer.id, writer_count: writer.sum.count(), items: &items, cap };
            let stored = self.store.accept(&batch, &mut |verdicts| {
                if !verdicts.contains(&Verdict::Fresh) {
                    return None;
                }
                let mut sum = writer.sum.clone();
                for (s, v) in current.iter().zip(verdicts) {
                    if *v == Verdict::Fresh {
                        sum.add(&s.upload);
                    }
                }
                let out = (sum.count(), sum.encode());
                grown = Some(sum);
                Some(out)
            });
            match stored {
                // The row lacks commits this writer made (a database restored or failed over):
                // it is left as the database has it, and this batch starts a new row.
                Ok(Stored::WriterBehind) if writer.sum.count() > 0 => {
                    tracing::warn!(round = round.id, "this replica's partial sum is behind in the database; starting another");
                    writer = Writer::new(round.id, role, params);
                }
                stored => break (stored, grown),
            }
        };
        let core = &mut self.core;
        let (verdicts, accepted) = match stored {
            Ok(Stored::Batch { verdicts, accepted }) => (verdicts, accepted),
            Ok(Stored::RoundEnded) => {
                // Another replica ended the round meanwhile: see which, and answer these as
                // uploads of an ended round.
                self.refresh();
                self.answer_stale(current);
                return;
            }
            Ok(Stored::WriterBehind) | Err(_) => {
                let e = stored.err().unwrap_or_else(|| DbError::Corrupt("a new partial-sum row already holds uploads".into()));
                // The commit may or may not have happened: this writer's row is left as it is,
                // and the next batch starts another.
                tracing::error!(error = %e, "storing updates failed; none acknowledged");
                core.health.write_failed(&e);
                let reject = Reject::new(Reason::StorageUnavailable, "the update could not be stored; retry later");
                current.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
                return;
            }
        };
        core.writer = Some(Writer { sum: grown.unwrap_or(writer.sum), ..writer });
        core.health.write_succeeded();
        // Stored, but in a file that may have been removed since the last check: no 2xx then.
        core.health.check_files();
        if let Some(reject) = core.health.refusal() {
            current.into_iter().for_each(|s| drop(s.reply.send(Err(reject.clone()))));
            return;
        }
        let fresh = verdicts.iter().filter(|v| **v == Verdict::Fresh).count() as u64;
        let mut holds = accepted - fresh;
        for (s, verdict) in current.into_iter().zip(verdicts) {
            let _ = s.reply.send(match verdict {
                Verdict::Fresh => {
                    holds += 1;
                    core.metrics.accepted(holds);
                    Ok(Accepted { round_id: round.id, accepted: holds })
                }
                Verdict::Duplicate => Err(validate::duplicate_nonce()),
                // A leader's release sums exactly K reports (the plan's n): the rest wait for the next round.
                Verdict::Full => Err(Reject::new(Reason::Busy, "this round is full; retry in the next")),
            });
        }
        let round = RoundRow { accepted, ..round };
        core.round = Some(round);
        if core.is_due(&round) && Instant::now() >= core.settle_after {
            self.settle(round);
        }
    }

    /// Uploads that name a round other than the open one: a retry of an upload accepted before
    /// is a duplicate (the store keeps every accepted id), only one never accepted names the
    /// wrong round.
    fn answer_stale(&mut self, stale: Vec<Submission>) {
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
    }

    /// Releases or abandons `round` if it is still open and no other replica is settling it.
    fn settle(&mut self, round: RoundRow) {
        let Keeper { store, core } = self;
        let settled = store.settle(round.id, &mut |contents| core.decide(contents));
        let core = &mut self.core;
        let pending = core.pending.take();
        match settled {
            Ok(Settled::Released { next }) => {
                let (params, model, released) = pending.expect("a release decided");
                tracing::info!(round = round.id, model_version = model.version, "round closed, model published");
                core.params = params;
                core.model = Arc::new(PublishedModel::from(model));
                core.released = released;
                core.begin(next);
                core.metrics.round_closed();
                if next.is_none() {
                    tracing::warn!(rounds = core.released, "privacy budget spent; training stops");
                }
            }
            Ok(Settled::Abandoned { next }) => {
                core.begin(Some(next));
                core.metrics.round_abandoned();
            }
            Ok(Settled::Kept) => {
                let helper_back = core.leader.as_ref().map_or(0, |l| l.retry_at);
                core.settle_after = Instant::now() + TICK.max(Duration::from_millis(helper_back.saturating_sub(now_ms()) as u64));
            }
            Ok(Settled::Elsewhere) => {
                core.settle_after = Instant::now() + TICK;
                self.refresh();
            }
            // The round stays open with its partials; the next batch or tick retries.
            Err(e) => {
                tracing::error!(error = %e, round = round.id, "settling the round failed");
                core.health.write_failed(&e);
            }
        }
    }
}

impl Core {
    fn may_train(&self) -> bool {
        self.released < self.budget.rounds_allowed
    }

    /// Whether `round` is to be settled now: it holds K, or its deadline has passed.
    fn is_due(&self, round: &RoundRow) -> bool {
        round.accepted >= self.config.round.min_clients || now_ms() >= round.deadline_ms
    }

    /// What to do with the locked round: release its mean, abandon it, or keep it open.
    fn decide(&mut self, c: Contents) -> Settlement {
        let (round, now) = (c.round, now_ms());
        let past = now >= round.deadline_ms;
        let next_deadline_ms = deadline_from(&self.config, now);
        let abandon = move || Settlement::Abandon { next_deadline_ms, now_ms: now };
        if round.model_version != self.model.version {
            // The store's model is not the one in memory (another replica published, or the
            // database went back): the next refresh loads it, and the round is settled then. A
            // round on a model that is not the store's latest (a restore) trains nothing: it
            // ends at its deadline.
            self.reload = true;
            return if past { abandon() } else { Settlement::Keep };
        }
        if round.accepted < self.config.round.min_clients {
            if !past {
                return Settlement::Keep;
            }
            tracing::warn!(
                round = round.id,
                updates = round.accepted,
                needed = self.config.round.min_clients,
                "round abandoned at its deadline; nothing released"
            );
            return abandon();
        }
        let mean = match self.mean(&c) {
            Ok(Some(mean)) => mean,
            // The helper did not answer: the round stays open and full, retried later.
            Ok(None) if !past => return Settlement::Keep,
            Ok(None) => {
                tracing::error!(round = round.id, "round abandoned at its deadline: the helper never answered");
                return abandon();
            }
            Err(why) => {
                tracing::error!(round = round.id, reason = %why, "round abandoned: nothing released");
                return abandon();
            }
        };
        let mut params = self.params.clone();
        let optimizer = self.config.optimizer.step(&mut params.values, &mean, c.optimizer);
        let version = self.model.version + 1;
        let (onnx, manifest) = ModelPack::write(&params, &self.features, version);
        let model = StoredModel { version, sha256: sha256_hex(&onnx), onnx, manifest };
        let next_deadline_ms = (c.released + 1 < self.budget.rounds_allowed).then(|| deadline_from(&self.config, now));
        self.pending = Some((params, model.clone(), c.released + 1));
        Settlement::Release { model, optimizer, next_deadline_ms, now_ms: now }
    }

    /// The round's mean: the merged partials (a leader's unmasked through the helper).
    /// `Ok(None)` when the helper cannot be reached now; `Err` when the round must release
    /// nothing (stored partials that do not add up, the helper refused, or the sum is not what
    /// K honest reports can add up to).
    fn mean(&mut self, c: &Contents) -> Result<Option<Vec<f64>>, String> {
        let (role, params) = (self.config.role, self.params.values.len());
        let mut sum = Sum::new(role, params);
        for (count, bytes) in &c.partials {
            sum.merge(&Sum::decode(role, params, *count, bytes)?);
        }
        if sum.count() != c.round.accepted {
            return Err(format!("the stored partial sums hold {} uploads, the round counted {}", sum.count(), c.round.accepted));
        }
        match sum {
            Sum::Plain(s) => Ok(Some(s.mean())),
            Sum::Shares(s) => self.unmask(c, &s),
        }
    }

    /// A leader's mean of the round: the helper's aggregate share plus its own noised sum,
    /// decoded and checked.
    fn unmask(&mut self, c: &Contents, sum: &ShareSum) -> Result<Option<Vec<f64>>, String> {
        let round = c.round;
        let task = self.task(round);
        let binding = task.binding(self.params.values.len()).ok_or("a leader's task has secagg")?;
        let Some(leader) = self.leader.as_mut() else {
            return Err("not a leader".into());
        };
        if now_ms() < leader.retry_at {
            return Ok(None);
        }
        let plan = binding.plan().map_err(|e| e.to_string())?;
        let reports = c
            .seeds
            .iter()
            .map(|(id, b)| SealedSeed::from_stored(id, b).ok_or_else(|| format!("a stored seed of {} bytes", b.len())))
            .collect::<Result<Vec<_>, _>>()?;
        if reports.len() as u64 != sum.count() {
            return Err(format!("{} stored seeds for {} summed reports", reports.len(), sum.count()));
        }
        let request = AggregateRequest { binding, reports };
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

    fn begin(&mut self, next: Option<RoundRow>) {
        self.round = next;
        self.writer = None;
        self.metrics.round_holds(next.map_or(0, |r| r.accepted));
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

fn deadline_from(config: &Config, now: i64) -> i64 {
    now.saturating_add(config.round.deadline_secs.saturating_mul(1000).try_into().unwrap_or(i64::MAX))
}

/// A writer's row key: random, so replicas (and restarts of one) never share a partial.
fn new_writer_id() -> i64 {
    let mut b = [0u8; 8];
    // The OS's CSPRNG failing here would fail every device upload too; a clock-derived id is
    // still unique enough for a row key, and carries no secret.
    if OsRandom.fill(&mut b).is_err() {
        b = (now_ms() as u64 ^ u64::from(std::process::id()) << 32).to_le_bytes();
    }
    i64::from_le_bytes(b)
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
