//! The helper's side of private measurement: DAP-09's helper endpoints for Prio3SumVec tasks.
//!
//! - `GET /dap/hpke_config`: its DAP HPKE key (separate from its secure aggregation key), for
//!   devices on any origin. One key serves every task, so a device may fetch it before the
//!   leader provisioned the task here; a `task_id` query is accepted and not needed.
//! - `PUT /dap/tasks/{id}` (leader): the task's parameters.
//! - `PUT /dap/tasks/{id}/aggregation_jobs/{job}` (leader): opens and prepares each report (the
//!   proof is checked here) and adds it to its period's aggregate share.
//! - `POST /dap/tasks/{id}/aggregate_shares` (leader): the period's noised aggregate share,
//!   sealed to the collector, once.
//!
//! The helper trusts the leader for nothing it can check itself: it refuses a task whose id
//! does not commit to its parameters, whose helper noise is not its own, whose K, bound or
//! period is laxer than its own, or whose leader sends jobs larger than it takes; a job larger
//! than the task's honest reports make; a report id counted before (in any job of the task), a
//! report of a period already released or expired, a share of the wrong size (before opening
//! it), a share that does not open, a proof that fails; a batch whose count or checksum is not
//! what it counted, or of fewer than K reports; and a second release of a period. Retries of a
//! job or of a release get the stored bytes: a fresh noise draw per retry would let the leader
//! average the helper's noise away.
//!
//! Housekeeping: a period expires [`EXPIRY_PERIODS`] periods and `grace_secs` after its end. By
//! then the leader has collected it or never will (it withheld it, or its collection failed),
//! so each job and share request first deletes the expired periods' un-noised aggregate shares
//! and job responses. The counted ids stay (they refuse replays) and so do the releases.

use super::helper_store::{Answered, JobRecord, MeasureStore};
use super::leader::now_secs;
use super::problem::Problem;
use super::sizes::ShareSizes;
use crate::config::Config;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hearth_core::measure::dap::{self, query_type::TimeInterval};
use hearth_core::measure::hpke_dap::{self, DapKeyPair};
use hearth_core::measure::prio::codec::{Decode, Encode};
use hearth_core::measure::prio::topology::ping_pong::PingPongMessage;
use hearth_core::measure::{AggregateShare, MeasureError, TaskParams, prepare};
use hearth_core::model::pack::sha256_hex;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower_http::cors::{Any, CorsLayer};

/// The config id of the helper's DAP HPKE key.
const KEY_CONFIG_ID: u8 = 1;
/// Bytes of a task's JSON at most: 10,000 campaign names of a few dozen bytes each.
const MAX_TASK_BYTES: usize = 2 << 20;
/// Bytes of an aggregate share request: a batch selector, an empty aggregation parameter, a
/// count and a checksum are under 100.
const MAX_SHARE_REQUEST_BYTES: usize = 1024;
/// Bytes of a job's own fields besides its reports (aggregation parameter, batch selector,
/// lengths).
const JOB_OVERHEAD_BYTES: usize = 1024;
/// Periods after a period's end until it expires (plus `grace_secs`): the leader collects a
/// period one period (its send window) and its grace after the end, so this leaves it two more
/// periods of retries before the helper forgets what it never released.
pub const EXPIRY_PERIODS: u64 = 3;

const JSON: &str = "application/json";

pub struct MeasureHelper {
    /// One job or release at a time: each reads what the previous one wrote (counted ids,
    /// released periods) and its checks hold until it commits.
    store: Mutex<MeasureStore>,
    key: DapKeyPair,
    /// The leader's bearer token, also the secret the VDAF verify key is derived from.
    token: String,
    /// σ of this helper's noise; a task must name exactly this.
    noise: f64,
    /// This helper's own K: a task with a lower one is refused.
    min_reports: u64,
    /// This helper's bound: its noise was set for M = 2^bits − 1 per cell and `max_cells` cells.
    bits: u32,
    max_cells: u32,
    /// This helper's shortest period: a task with a shorter one is refused (more, smaller
    /// batches would release more often than its noise was set for).
    period_secs: u64,
    /// Added to [`EXPIRY_PERIODS`] periods after a period's end before it expires.
    grace_secs: u64,
    /// Reports per job at most; with the task's honest report size it bounds a job's body.
    job_size: usize,
    /// Each task's honest sizes, measured once per task and process.
    sizes: Mutex<HashMap<dap::TaskId, ShareSizes>>,
    body_timeout: Duration,
}

impl MeasureHelper {
    /// `init`: creates `measure.database` with a fresh DAP HPKE key.
    pub fn create(config: &Config) -> Result<(), String> {
        let key = DapKeyPair::generate(KEY_CONFIG_ID).map_err(|e| e.to_string())?;
        MeasureStore::create(&config.measure.database, &key).map_err(|e| e.to_string())
    }

    /// Opens the store `init` made (never creates one).
    pub fn open(config: &Config) -> Result<MeasureHelper, String> {
        let store = MeasureStore::open(&config.measure.database).map_err(|e| e.to_string())?;
        let key = store.key()?;
        let m = &config.measure;
        Ok(MeasureHelper {
            store: Mutex::new(store),
            key,
            token: config.secagg.token.clone(),
            noise: m.noise,
            min_reports: m.min_reports,
            bits: m.bits,
            max_cells: m.max_cells,
            period_secs: m.period_secs,
            grace_secs: m.grace_secs,
            job_size: m.job_size,
            sizes: Mutex::new(HashMap::new()),
            body_timeout: Duration::from_millis(config.body_timeout_ms),
        })
    }

    /// The helper's DAP HPKE configuration, as devices seal to it.
    pub fn hpke_config(&self) -> dap::HpkeConfig {
        self.key.config()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, MeasureStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `authorization` is the leader's bearer token (compared in constant time).
    fn authorized(&self, authorization: Option<&str>) -> bool {
        crate::helper::bearer_matches(authorization, &self.token)
    }

    /// `PUT /dap/tasks/{id}?job_size=…`: stores the task if its id, noise, K, bound and period
    /// are acceptable and the leader's jobs (of at most `job_size` reports) are not larger than
    /// this helper takes; `true` when it is new.
    pub fn provision(&self, task_id: &dap::TaskId, task: &TaskParams, job_size: usize) -> Result<bool, Problem> {
        let invalid = |reason, detail: String| Problem::new(StatusCode::BAD_REQUEST, Some("invalidTask"), reason, detail);
        task.validate().map_err(|e| invalid("invalid_task", e.to_string()))?;
        if task.task_id() != *task_id {
            return Err(invalid("task_id_mismatch", format!("the parameters' task id is {}, not {task_id}", task.task_id())));
        }
        if task.helper_noise != self.noise {
            return Err(invalid(
                "noise_mismatch",
                format!("the task states helper noise σ = {}, this helper adds σ = {}", task.helper_noise, self.noise),
            ));
        }
        if task.min_reports < self.min_reports {
            return Err(invalid(
                "min_reports_too_low",
                format!(
                    "the task releases from {} reports, this helper from no fewer than {}",
                    task.min_reports, self.min_reports
                ),
            ));
        }
        if task.bits > self.bits || task.max_cells > self.max_cells {
            return Err(invalid(
                "bound_too_high",
                format!(
                    "the task bounds a report by {} bits × {} cells, this helper's noise was set for {} × {}",
                    task.bits, task.max_cells, self.bits, self.max_cells
                ),
            ));
        }
        if task.period_secs < self.period_secs {
            return Err(invalid(
                "period_too_short",
                format!(
                    "the task's period is {} s, this helper releases no more often than every {} s",
                    task.period_secs, self.period_secs
                ),
            ));
        }
        if job_size > self.job_size {
            return Err(invalid(
                "job_size_too_large",
                format!(
                    "the leader sends jobs of up to {job_size} reports, this helper takes at most {}: lower the leader's measure.job_size",
                    self.job_size
                ),
            ));
        }
        task.collector_config().map_err(|e| invalid("invalid_task", e.to_string()))?;
        let new = self.store().provision(task_id, task).map_err(storage)?;
        if new {
            tracing::info!(task = %task_id, campaigns = task.campaigns.len(), slots = task.slots.len(), "measurement task provisioned");
        }
        Ok(new)
    }

    fn task(store: &MeasureStore, task_id: &dap::TaskId) -> Result<TaskParams, Problem> {
        store.task(task_id).map_err(storage)?.ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                Some("unrecognizedTask"),
                "unknown_task",
                format!("task {task_id} was never provisioned here"),
            )
        })
    }

    /// The task's honest sizes, measured on first use.
    fn sizes(&self, task: &TaskParams, task_id: &dap::TaskId) -> Result<ShareSizes, Problem> {
        if let Some(sizes) = self.sizes.lock().unwrap_or_else(|e| e.into_inner()).get(task_id) {
            return Ok(*sizes);
        }
        let sizes = ShareSizes::of(task).map_err(|e| internal(format!("measuring the task's report: {e}")))?;
        self.sizes.lock().unwrap_or_else(|e| e.into_inner()).insert(*task_id, sizes);
        Ok(sizes)
    }

    /// Bytes of a job's body at most for the task: `job_size` honest reports and the job's own
    /// fields. An unknown task is refused before any body is read.
    fn max_job_bytes(&self, task_id: &dap::TaskId) -> Result<usize, Problem> {
        let task = Self::task(&self.store(), task_id)?;
        let sizes = self.sizes(&task, task_id)?;
        Ok(JOB_OVERHEAD_BYTES.saturating_add(self.job_size.saturating_mul(sizes.prepare_init)))
    }

    /// Whether `period` of `task` has expired at `now`: its end is [`EXPIRY_PERIODS`] periods
    /// and the grace behind.
    fn expired(&self, task: &TaskParams, period: u64, now: u64) -> bool {
        period.saturating_add((EXPIRY_PERIODS + 1) * task.period_secs).saturating_add(self.grace_secs) <= now
    }

    /// Deletes the expired periods' aggregates and job responses, of every task.
    fn sweep(&self, store: &mut MeasureStore, now: u64) -> Result<(), Problem> {
        let swept =
            store.sweep(|period_secs| now.checked_sub((EXPIRY_PERIODS + 1) * period_secs + self.grace_secs)).map_err(storage)?;
        if swept.aggregates > 0 {
            // Periods the leader withheld or whose collection failed: never released, never will be.
            tracing::info!(
                aggregates = swept.aggregates,
                jobs = swept.jobs,
                "expired periods' aggregate shares deleted unreleased"
            );
        }
        Ok(())
    }

    /// `PUT /dap/tasks/{id}/aggregation_jobs/{job}`: prepares every report and answers each with
    /// a continuation or a typed rejection; the counted ids, the updated aggregate shares and the
    /// response are committed together. The same job again gets the stored response.
    pub fn aggregation_job(
        &self,
        task_id: &dap::TaskId,
        job_id: &dap::AggregationJobId,
        body: &[u8],
    ) -> Result<Vec<u8>, Problem> {
        let digest = sha256_hex(body);
        let now = now_secs();
        let mut store = self.store();
        self.sweep(&mut store, now)?;
        let task = Self::task(&store, task_id)?;
        let sizes = self.sizes(&task, task_id)?;
        if let Some(done) = store.job(task_id, job_id).map_err(storage)? {
            return same_request(done, &digest, || {
                format!("aggregation job {job_id} was run with another request; a job id is used once")
            });
        }
        let req = dap::AggregationJobInitializeReq::<TimeInterval>::get_decoded(body)
            .map_err(|e| invalid_message(format!("not an aggregation job initialisation: {e}")))?;
        if !req.aggregation_parameter().is_empty() {
            return Err(invalid_message("Prio3 takes no aggregation parameter".into()));
        }
        let inits = req.prepare_inits();
        if inits.len() > self.job_size {
            return Err(invalid_message(format!(
                "{} reports in one job; this helper takes at most {}",
                inits.len(),
                self.job_size
            )));
        }
        let mut ids = HashSet::with_capacity(inits.len());
        if let Some(twice) = inits.iter().map(|i| *i.report_share().metadata().id()).find(|id| !ids.insert(*id)) {
            return Err(invalid_message(format!("report {twice} appears twice in the job")));
        }
        let verify_key = prepare::verify_key(self.token.as_bytes(), task_id);
        let mut released = BTreeMap::new();
        let mut aggregates = BTreeMap::new();
        let mut counted = Vec::with_capacity(inits.len());
        let mut resps = Vec::with_capacity(inits.len());
        // The job's latest period: its stored response goes when that period expires.
        let mut latest = 0;
        for init in inits {
            let share = init.report_share();
            let metadata = share.metadata();
            let period = task.period_of(metadata.time().as_seconds_since_epoch());
            latest = latest.max(period);
            let collected = match released.get(&period) {
                Some(&collected) => collected,
                None => {
                    let collected = store.release(task_id, period).map_err(storage)?.is_some();
                    released.insert(period, collected);
                    collected
                }
            };
            let result = if collected {
                Err(dap::PrepareError::BatchCollected)
            } else if self.expired(&task, period, now) {
                // Its aggregate may have been deleted: counting it would start a partial one.
                Err(dap::PrepareError::ReportDropped)
            } else if store.counted(task_id, metadata.id()).map_err(storage)? {
                Err(dap::PrepareError::ReportReplayed)
            } else {
                check_sizes(&sizes, init).and_then(|()| self.prepare(&task, task_id, &verify_key, init))
            };
            let result = match result {
                Ok((output, message)) => {
                    let sum = match aggregates.entry(period) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => e.insert(stored_aggregate(&store, &task, task_id, period)?),
                    };
                    sum.add(&output).map_err(|e| internal(format!("adding an output share: {e}")))?;
                    counted.push((*metadata.id(), period));
                    dap::PrepareStepResult::Continue { message }
                }
                Err(error) => {
                    tracing::info!(task = %task_id, report = %metadata.id(), ?error, "report rejected");
                    dap::PrepareStepResult::Reject(error)
                }
            };
            resps.push(dap::PrepareResp::new(*metadata.id(), result));
        }
        let response = dap::AggregationJobResp::new(resps)
            .get_encoded()
            .map_err(|e| internal(format!("encoding the job's response: {e}")))?;
        let aggregates = aggregates
            .into_iter()
            .map(|(period, sum)| Ok((period, sum.encode().map_err(|e| internal(format!("encoding an aggregate: {e}")))?)))
            .collect::<Result<Vec<_>, Problem>>()?;
        let record = JobRecord {
            job_id,
            period_start: latest,
            request_sha256: &digest,
            counted: &counted,
            aggregates: &aggregates,
            response: &response,
        };
        store.record_job(task_id, &record).map_err(storage)?;
        tracing::info!(task = %task_id, job = %job_id, reports = inits.len(), counted = counted.len(), "aggregation job done");
        Ok(response)
    }

    /// Opens and prepares one report: its output share and the message back to the leader, or
    /// why it is rejected.
    fn prepare(
        &self,
        task: &TaskParams,
        task_id: &dap::TaskId,
        verify_key: &[u8; hearth_core::measure::VERIFY_KEY_LEN],
        init: &dap::PrepareInit,
    ) -> Result<
        (hearth_core::measure::OutputShare, hearth_core::measure::prio::topology::ping_pong::PingPongMessage),
        dap::PrepareError,
    > {
        let share = init.report_share();
        let (metadata, public_share) = (share.metadata(), share.public_share());
        let input_share = prepare::open_input_share(
            task_id,
            &self.key,
            dap::Role::Helper,
            metadata,
            public_share,
            share.encrypted_input_share(),
        )
        .map_err(prepare_error)?;
        prepare::helper_prepare(task, verify_key, metadata, public_share, &input_share, init.message()).map_err(prepare_error)
    }

    /// `POST /dap/tasks/{id}/aggregate_shares`: the period's aggregate share with this helper's
    /// noise, sealed to the task's collector; recorded, so that the same request again gets the
    /// same bytes.
    pub fn aggregate_share(&self, task_id: &dap::TaskId, body: &[u8]) -> Result<Vec<u8>, Problem> {
        let digest = sha256_hex(body);
        let now = now_secs();
        let mut store = self.store();
        self.sweep(&mut store, now)?;
        let task = Self::task(&store, task_id)?;
        let req = dap::AggregateShareReq::<TimeInterval>::get_decoded(body)
            .map_err(|e| invalid_message(format!("not an aggregate share request: {e}")))?;
        if !req.aggregation_parameter().is_empty() {
            return Err(invalid_message("Prio3 takes no aggregation parameter".into()));
        }
        let interval = *req.batch_selector().batch_interval();
        let period = interval.start().as_seconds_since_epoch();
        if period != task.period_of(period) || interval.duration().as_seconds() != task.period_secs {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                Some("batchInvalid"),
                "batch_not_one_period",
                format!("a batch is one period of {} s from its start; got {interval:?}", task.period_secs),
            ));
        }
        if let Some(done) = store.release(task_id, period).map_err(storage)? {
            return same_request(done, &digest, || format!("period {period} was released already, for another request"));
        }
        if self.expired(&task, period, now) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                Some("batchInvalid"),
                "period_expired",
                format!(
                    "period {period} ended more than {EXPIRY_PERIODS} periods and {} s ago; its aggregate share is deleted",
                    self.grace_secs
                ),
            ));
        }
        let ids = store.batch(task_id, period).map_err(storage)?;
        let count = ids.len() as u64;
        let checksum = prepare::checksum(ids);
        if req.report_count() != count || *req.checksum() != checksum {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                Some("batchMismatch"),
                "batch_mismatch",
                format!(
                    "the request names {} reports (checksum {}); this helper counted {count} (checksum {checksum}) in period {period}",
                    req.report_count(),
                    req.checksum()
                ),
            ));
        }
        // Provisioning held the task's K to the helper's own; its own may have been raised since.
        let k = task.min_reports.max(self.min_reports);
        if count < k {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                Some("invalidBatchSize"),
                "too_few_reports",
                format!("{count} reports in period {period}; this helper releases nothing for fewer than {k}"),
            ));
        }
        let mut share = stored_aggregate(&store, &task, task_id, period)?;
        share
            .add_noise(self.noise, &mut crate::noise::sampler(crate::noise::Drawer::Helper, period))
            .map_err(|e| internal(format!("the helper's noise could not be drawn: {e}")))?;
        let collector = task.collector_config().map_err(|e| internal(format!("the stored task's collector key: {e}")))?;
        let aad = dap::AggregateShareAad::new(*task_id, Vec::new(), dap::BatchSelector::new_time_interval(interval))
            .get_encoded()
            .map_err(|e| internal(format!("encoding the share's AAD: {e}")))?;
        let sealed = hpke_dap::seal(
            &collector,
            &hpke_dap::aggregate_share_info(dap::Role::Helper),
            &share.encode().map_err(|e| internal(format!("encoding the share: {e}")))?,
            &aad,
        )
        .map_err(|e| internal(format!("sealing the aggregate share: {e}")))?;
        let response =
            dap::AggregateShare::new(sealed).get_encoded().map_err(|e| internal(format!("encoding the share: {e}")))?;
        let release = Answered { request_sha256: digest, response };
        store.record_release(task_id, period, &release, crate::aggregate::now_ms()).map_err(storage)?;
        tracing::info!(task = %task_id, period, reports = count, "aggregate share released");
        Ok(release.response)
    }
}

/// A report part of another size than an honest one's is refused before anything is opened or
/// prepared: `Err(Reject)` as DAP's per-report invalidMessage.
fn check_sizes(sizes: &ShareSizes, init: &dap::PrepareInit) -> Result<(), dap::PrepareError> {
    let share = init.report_share();
    let prep_share = match init.message() {
        PingPongMessage::Initialize { prep_share } => prep_share.len(),
        _ => return Err(dap::PrepareError::InvalidMessage),
    };
    let wrong = sizes.check_public_share(share.public_share()).is_err()
        || sizes.helper.check(share.encrypted_input_share(), "helper's").is_err()
        || prep_share != sizes.prep_share;
    if wrong { Err(dap::PrepareError::InvalidMessage) } else { Ok(()) }
}

/// The period's stored aggregate share, or zero if none of its reports was counted yet.
fn stored_aggregate(
    store: &MeasureStore,
    task: &TaskParams,
    task_id: &dap::TaskId,
    period: u64,
) -> Result<AggregateShare, Problem> {
    match store.aggregate(task_id, period).map_err(storage)? {
        Some(bytes) => {
            AggregateShare::decode(task, &bytes).map_err(|e| internal(format!("the stored aggregate of {period}: {e}")))
        }
        None => Ok(AggregateShare::zero(task)),
    }
}

/// A retried request gets the stored answer; another request under the same name is a conflict.
fn same_request(done: Answered, digest: &str, conflict: impl FnOnce() -> String) -> Result<Vec<u8>, Problem> {
    if done.request_sha256 == digest {
        Ok(done.response)
    } else {
        Err(Problem::new(StatusCode::CONFLICT, None, "request_conflict", conflict()))
    }
}

/// DAP's per-report error for a share that does not open or prepare.
fn prepare_error(e: MeasureError) -> dap::PrepareError {
    match e {
        MeasureError::Key(_) => dap::PrepareError::HpkeUnknownConfigId,
        MeasureError::Open(_) => dap::PrepareError::HpkeDecryptError,
        MeasureError::Prepare(_) => dap::PrepareError::VdafPrepError,
        MeasureError::Malformed(_) | MeasureError::Mismatch(_) | MeasureError::Task(_) | MeasureError::Random(_) => {
            dap::PrepareError::InvalidMessage
        }
    }
}

fn invalid_message(detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, Some("invalidMessage"), "invalid_message", detail)
}

fn internal(detail: String) -> Problem {
    tracing::error!(%detail, "measurement helper failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal_error", detail)
}

fn storage(e: crate::store::DbError) -> Problem {
    tracing::error!(error = %e, "measurement store failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "storage_unavailable",
        "the helper's measurement database failed; retry later",
    )
}

/// Every measurement route of a helper, as written in `openapi.json` (a test holds the document,
/// this list and [`routes`] together).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/dap/hpke_config"),
    ("put", "/dap/tasks/{task_id}"),
    ("put", "/dap/tasks/{task_id}/aggregation_jobs/{job_id}"),
    ("post", "/dap/tasks/{task_id}/aggregate_shares"),
];

/// The helper's DAP routes (under `/dap/`), for the helper's router.
pub fn routes(helper: Arc<MeasureHelper>) -> Router {
    // Devices on any publisher's origin fetch the key, without credentials.
    let cors = CorsLayer::new().allow_origin(Any).allow_methods([Method::GET]);
    let public = Router::new().route("/dap/hpke_config", get(hpke_config)).layer(cors);
    Router::new()
        .route("/dap/tasks/{task_id}", put(provision))
        .route("/dap/tasks/{task_id}/aggregation_jobs/{job_id}", put(aggregation_job))
        .route("/dap/tasks/{task_id}/aggregate_shares", post(aggregate_shares))
        .merge(public)
        .with_state(helper)
}

async fn hpke_config(State(helper): State<Arc<MeasureHelper>>) -> Response {
    match dap::HpkeConfigList::new(vec![helper.hpke_config()]).get_encoded() {
        Ok(body) => {
            ([(header::CONTENT_TYPE, dap::HpkeConfigList::MEDIA_TYPE), (header::CACHE_CONTROL, "no-cache")], body).into_response()
        }
        Err(e) => internal(format!("encoding the HPKE configuration: {e}")).into_response(),
    }
}

/// The leader's bearer token, or a refusal.
fn authorize(helper: &MeasureHelper, headers: &HeaderMap) -> Result<(), Problem> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if helper.authorized(authorization) {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNAUTHORIZED,
        Some("unauthorizedRequest"),
        "unauthorized",
        "only the leader, with its bearer token, may call this",
    ))
}

/// The leader's checks before any body is read: its bearer token, the media type, the declared
/// length. Then the body, at most `limit` bytes within the body timeout.
async fn leader_body(
    helper: &MeasureHelper,
    headers: &HeaderMap,
    body: Body,
    media_type: &'static str,
    limit: usize,
) -> Result<Bytes, Problem> {
    authorize(helper, headers)?;
    let declared =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.split(';').next().unwrap_or("").trim());
    if !declared.is_some_and(|t| t.eq_ignore_ascii_case(media_type)) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            "unsupported_media_type",
            format!("this request's body must be {media_type}"),
        ));
    }
    let too_large = || {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            "payload_too_large",
            format!("this request's body is at most {limit} bytes"),
        )
    };
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(helper.body_timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Problem::new(StatusCode::BAD_REQUEST, None, "body_read_failed", e.to_string())),
        Err(_) => Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            None,
            "body_timeout",
            format!("the body did not arrive within {} ms", helper.body_timeout.as_millis()),
        )),
    }
}

fn task_id(s: &str) -> Result<dap::TaskId, Problem> {
    s.parse().map_err(|_| {
        Problem::new(StatusCode::BAD_REQUEST, Some("unrecognizedTask"), "unknown_task", "a task id is 32 bytes, base64url")
    })
}

/// Runs `work` off the async workers (opening, proof checks and the store are blocking).
async fn blocking(work: impl FnOnce() -> Result<Vec<u8>, Problem> + Send + 'static) -> Result<Vec<u8>, Problem> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| Err(internal("the request's worker panicked".into())))
}

fn refused(p: Problem) -> Response {
    tracing::warn!(reason = p.reason, detail = %p.detail, "measurement request refused");
    p.into_response()
}

async fn provision(
    State(helper): State<Arc<MeasureHelper>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let verdict = async {
        let bytes = leader_body(&helper, &headers, body, JSON, MAX_TASK_BYTES).await?;
        let task_id = task_id(&id)?;
        let job_size = query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("job_size="))
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| invalid_message("name the leader's job size: ?job_size=<reports per job>".into()))?;
        let task: TaskParams = serde_json::from_slice(&bytes).map_err(|e| {
            Problem::new(StatusCode::BAD_REQUEST, Some("invalidTask"), "invalid_task", format!("not a task's parameters: {e}"))
        })?;
        let helper = helper.clone();
        tokio::task::spawn_blocking(move || helper.provision(&task_id, &task, job_size))
            .await
            .unwrap_or_else(|_| Err(internal("the request's worker panicked".into())))
    }
    .await;
    match verdict {
        Ok(true) => StatusCode::CREATED.into_response(),
        Ok(false) => StatusCode::OK.into_response(),
        Err(p) => refused(p),
    }
}

async fn aggregation_job(
    State(helper): State<Arc<MeasureHelper>>,
    Path((task, job)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let verdict = async {
        authorize(&helper, &headers)?;
        let task_id = task_id(&task)?;
        let limit = {
            let helper = helper.clone();
            tokio::task::spawn_blocking(move || helper.max_job_bytes(&task_id))
                .await
                .unwrap_or_else(|_| Err(internal("the request's worker panicked".into())))?
        };
        let bytes =
            leader_body(&helper, &headers, body, dap::AggregationJobInitializeReq::<TimeInterval>::MEDIA_TYPE, limit).await?;
        let job_id: dap::AggregationJobId =
            job.parse().map_err(|_| invalid_message("an aggregation job id is 16 bytes, base64url".into()))?;
        let helper = helper.clone();
        blocking(move || helper.aggregation_job(&task_id, &job_id, &bytes)).await
    }
    .await;
    match verdict {
        Ok(resp) => (StatusCode::CREATED, [(header::CONTENT_TYPE, dap::AggregationJobResp::MEDIA_TYPE)], resp).into_response(),
        Err(p) => refused(p),
    }
}

async fn aggregate_shares(
    State(helper): State<Arc<MeasureHelper>>,
    Path(task): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let verdict = async {
        let media_type = dap::AggregateShareReq::<TimeInterval>::MEDIA_TYPE;
        let bytes = leader_body(&helper, &headers, body, media_type, MAX_SHARE_REQUEST_BYTES).await?;
        let task_id = task_id(&task)?;
        let helper = helper.clone();
        blocking(move || helper.aggregate_share(&task_id, &bytes)).await
    }
    .await;
    match verdict {
        Ok(share) => ([(header::CONTENT_TYPE, dap::AggregateShare::MEDIA_TYPE)], share).into_response(),
        Err(p) => refused(p),
    }
}
