//! The leader's side of private measurement (DAP-09 leader for one Prio3SumVec task): the task
//! devices fetch, the leader's DAP key, and the report upload. Collection is [`super::collect`]'s.
//!
//! An upload is checked as far as the leader alone can: the task, every part's size (that of an
//! honest report of the task, [`super::sizes`]), the report's time (a period's
//! start, not ahead of the clock, its period still open), the leader's input share (it opens and
//! decodes) and its id (a replay is refused while the period is open; once the period is
//! collected its reports are gone, and the id, time and task are bound to both shares by HPKE,
//! so an old report cannot be moved into another period), and the period's room
//! (`max_reports_per_period`). Whether the measurement is in range
//! is decided only by the proof, at aggregation, where a refused report is dropped uncounted.

use super::leader_store::{LeaderStore, NotStored, StoredReport, encode_sealed};
use super::problem::Problem;
use super::release::Release;
use super::sizes::ShareSizes;
use crate::catalog::PublishedCatalog;
use crate::config::{Config, MeasureConfig};
use crate::http::{BodyLimits, PRE_SLOT_BYTES, TimedBody};
use crate::metrics::Metrics;
use crate::reason::Reject;
use crate::store::DbResult;
use crate::store_health::StoreHealth;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use hearth_core::device::catalog::Ad;
use hearth_core::measure::hpke_dap::DapKeyPair;
use hearth_core::measure::prio::codec::{Decode, Encode};
use hearth_core::measure::task::DEVICE_MAX_EPSILON;
use hearth_core::measure::{MeasureError, TaskParams, dap, prepare};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// How far ahead of the leader's clock a report's period may start (devices' clocks drift).
pub const CLOCK_SKEW_SECS: u64 = 60;

pub struct MeasureLeader {
    pub(super) task: TaskParams,
    pub(super) task_id: dap::TaskId,
    /// `GET /v1/measure/task`'s body: the task and its id.
    task_json: Bytes,
    /// `GET /dap/hpke_config`'s body.
    hpke_configs: Bytes,
    key: DapKeyPair,
    pub(super) collector: DapKeyPair,
    /// The sizes of an honest report's parts: an upload with parts of other sizes is refused.
    sizes: ShareSizes,
    store: Mutex<LeaderStore>,
    health: StoreHealth,
    /// Every (period start, task id) that holds reports or whose collection has begun and is not
    /// released: what the collection thread looks at, without scanning the reports each tick.
    open: Mutex<BTreeSet<(u64, [u8; 32])>>,
    pub(super) settings: MeasureConfig,
    /// The helper's base URL, the bearer token (also the secret the verify key is derived from).
    pub(super) helper_url: String,
    pub(super) token: String,
    pub(super) metrics: Arc<Metrics>,
    body: BodyLimits,
    /// Report uploads holding a body at once (`upload_concurrency`, apart from model updates').
    uploads: Semaphore,
    /// The constant `admin_token` compare's operand; `None` when the collect endpoint is off.
    admin_token: Option<String>,
}

/// The catalog's campaigns: only the `campaign` of each ad matters here.
#[derive(serde::Deserialize)]
struct CatalogAds {
    ads: Vec<Ad>,
}

impl MeasureLeader {
    /// `init`: creates `measure.database` with fresh leader and collector keys.
    pub fn create(config: &Config) -> Result<(), String> {
        LeaderStore::create(&config.measure.database).map_err(|e| e.to_string())
    }

    /// Opens the store `init` made and builds the task from the catalog's campaigns and the
    /// settings; refuses a task devices would refuse (ε above their ceiling) and a report upload
    /// limit below the task's own report size.
    pub fn open(config: &Config, catalog: &PublishedCatalog, metrics: Arc<Metrics>) -> Result<MeasureLeader, String> {
        let m = &config.measure;
        let (store, health) = LeaderStore::open(&m.database).map_err(|e| e.to_string())?;
        let (key, collector) = store.keys()?;
        let ads: CatalogAds = serde_json::from_slice(&catalog.body).map_err(|e| format!("catalog: {e}"))?;
        let campaigns = ads.ads.into_iter().filter_map(|ad| ad.campaign);
        let task = TaskParams::new(
            campaigns,
            m.slots.iter().cloned(),
            m.bits,
            m.period_secs,
            m.min_reports,
            m.max_cells,
            m.noise,
            m.helper_noise,
            m.delta,
            &collector.config(),
        )
        .map_err(|e| e.to_string())?;
        task.device_check(DEVICE_MAX_EPSILON).map_err(|e| {
            format!(
                "devices would refuse this task ({e}); raise measure.noise and measure.helper_noise, or lower bits or max_cells"
            )
        })?;
        let sizes = ShareSizes::of(&task).map_err(|e| e.to_string())?;
        if sizes.report > m.max_report_bytes {
            return Err(format!(
                "measure.max_report_bytes = {} is below this task's report size, {} bytes ({} cells)",
                m.max_report_bytes,
                sizes.report,
                task.length()
            ));
        }
        let task_id = task.task_id();
        let mut served = serde_json::to_value(&task).map_err(|e| e.to_string())?;
        served["task_id"] = task_id.to_string().into();
        let hpke_configs = dap::HpkeConfigList::new(vec![key.config()]).get_encoded().map_err(|e| e.to_string())?;
        store.record_task(&task_id, &task).map_err(|e| e.to_string())?;
        let open = store.open_periods().map_err(|e| e.to_string())?;
        let open = open.into_iter().map(|(task, period)| (period, *task.as_ref())).collect();
        let helper_url = config.secagg.helper_url.clone().ok_or("a leader needs secagg.helper_url")?;
        tracing::info!(
            task = %task_id,
            campaigns = task.campaigns.len(),
            slots = task.slots.len(),
            epsilon_per_period = task.epsilon_one_aggregator(),
            report_bytes = sizes.report,
            "measurement runs on this leader replica: enable it on one replica only"
        );
        Ok(MeasureLeader {
            task_json: serde_json::to_vec(&served).map_err(|e| e.to_string())?.into(),
            hpke_configs: hpke_configs.into(),
            task,
            task_id,
            key,
            collector,
            sizes,
            store: Mutex::new(store),
            health,
            open: Mutex::new(open),
            settings: m.clone(),
            helper_url: if helper_url.ends_with('/') { helper_url } else { format!("{helper_url}/") },
            token: config.secagg.token.clone(),
            metrics,
            body: BodyLimits::of(config),
            uploads: Semaphore::new(config.upload_concurrency),
            admin_token: (!m.admin_token.is_empty()).then(|| m.admin_token.clone()),
        })
    }

    pub(super) fn store(&self) -> MutexGuard<'_, LeaderStore> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store watchdog's round (the collection thread runs it every tick).
    pub(super) fn watch_store(&self) {
        self.health.watch(|| self.store().touch());
    }

    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    pub(super) fn task_json(&self) -> Bytes {
        self.task_json.clone()
    }

    pub(super) fn hpke_configs(&self) -> Bytes {
        self.hpke_configs.clone()
    }

    /// The open (task, period) pairs, oldest period first.
    pub(super) fn open_periods(&self) -> Vec<(dap::TaskId, u64)> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.iter().map(|(period, task)| (dap::TaskId::from(*task), *period)).collect()
    }

    /// Whether the current task's `period` holds reports or is being collected.
    pub(super) fn is_open(&self, period: u64) -> bool {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).contains(&(period, *self.task_id.as_ref()))
    }

    /// The current task's release of `period`, if it was released.
    pub(super) fn release(&self, period: u64) -> DbResult<Option<Release>> {
        self.store().release(&self.task_id, period)
    }

    /// The period was released: the collection thread no longer looks at it.
    pub(super) fn closed(&self, task_id: &dap::TaskId, period: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&(period, *task_id.as_ref()));
    }

    /// The current task's releases, oldest first.
    pub(super) fn releases(&self) -> DbResult<Vec<Release>> {
        self.store().releases(&self.task_id)
    }

    /// Whether `authorization` carries the admin token (compared in constant time); always
    /// `false` when none is set.
    pub(super) fn admin(&self, authorization: Option<&str>) -> bool {
        self.admin_token.as_deref().is_some_and(|token| crate::helper::bearer_matches(authorization, token))
    }

    pub(super) fn collect_enabled(&self) -> bool {
        self.admin_token.is_some()
    }

    /// `PUT /dap/tasks/{task_id}/reports`: the header checks, the body within its limits and
    /// deadline, then the report's checks and its storage off the async workers.
    pub(super) async fn upload(self: &Arc<Self>, task_id: &str, headers: &HeaderMap, body: Body) -> Result<(), Problem> {
        let head = Instant::now();
        if task_id.parse::<dap::TaskId>().ok() != Some(self.task_id) {
            return Err(unrecognized_task(task_id));
        }
        let media_type =
            headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.split(';').next().unwrap_or("").trim());
        if !media_type.is_some_and(|t| t.eq_ignore_ascii_case(dap::Report::MEDIA_TYPE)) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "unsupported_media_type",
                format!("a report is {}", dap::Report::MEDIA_TYPE),
            ));
        }
        if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "unsupported_content_encoding",
                "reports must not be content-encoded",
            ));
        }
        if let Some(p) = self.health.refusal() {
            return Err(from_reject(p));
        }
        let limit = self.settings.max_report_bytes;
        let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let mut body = TimedBody::new(body, self.body, head, limit);
        body.read_until(PRE_SLOT_BYTES).await.map_err(from_reject)?;
        let _slot = body.slot(&self.uploads).await.map_err(from_reject)?;
        let bytes = body.read_to_end().await.map_err(from_reject)?;
        let leader = self.clone();
        tokio::task::spawn_blocking(move || leader.store_report(&bytes, now_secs()))
            .await
            .unwrap_or_else(|_| Err(storage("the upload's worker failed")))
    }

    /// Every check of one report body at `now`, then its storage.
    fn store_report(&self, bytes: &[u8], now: u64) -> Result<(), Problem> {
        let report =
            dap::Report::get_decoded(bytes).map_err(|e| invalid_message("malformed_report", format!("not a DAP report: {e}")))?;
        self.check_sizes(&report)?;
        let metadata = report.metadata();
        let time = metadata.time().as_seconds_since_epoch();
        let period = self.task.period_of(time);
        let period_secs = self.task.period_secs;
        if time != period {
            return Err(rejected(
                "time_not_truncated",
                format!("a report's time is its period's start (a multiple of {period_secs} s); {time} is not"),
            ));
        }
        if period > now + CLOCK_SKEW_SECS {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                Some("reportTooEarly"),
                "report_too_early",
                format!("period {period} has not started"),
            ));
        }
        if period + 2 * period_secs + self.settings.grace_secs <= now {
            return Err(rejected("report_expired", format!("period {period}'s send window has ended")));
        }
        let sealed = report.leader_encrypted_input_share();
        if *sealed.config_id() != *self.key.config().id() {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                Some("outdatedConfig"),
                "outdated_config",
                format!("HPKE config {} is not the leader's; fetch /dap/hpke_config again", sealed.config_id()),
            ));
        }
        let share =
            prepare::open_input_share(&self.task_id, &self.key, dap::Role::Leader, metadata, report.public_share(), sealed)
                .map_err(|e| match e {
                    MeasureError::Malformed(_) => invalid_message("malformed_share", e.to_string()),
                    _ => rejected("decrypt_failed", format!("the leader's share: {e}")),
                })?;
        self.check_shares(report.public_share(), &share)?;
        let stored = StoredReport {
            id: *metadata.id(),
            period_start: period,
            public_share: report.public_share().to_vec(),
            leader_share: share,
            helper_share: encode_sealed(report.helper_encrypted_input_share()),
        };
        match self.store().insert_report(&self.task_id, &stored, self.settings.max_reports_per_period) {
            Ok(Ok(())) => {}
            Ok(Err(NotStored::Replayed)) => {
                return Err(rejected("report_replayed", format!("report {} was received before", stored.id)));
            }
            Ok(Err(NotStored::PeriodClosed)) => {
                return Err(rejected("period_collected", format!("period {period} is collected or being collected")));
            }
            // reportRejected (400), not 503: the period will not take more reports however long
            // the device waits, and a retry would only repeat the refusal.
            Ok(Err(NotStored::PeriodFull)) => {
                return Err(rejected(
                    "period_full",
                    format!(
                        "period {period} holds {} reports, measure.max_reports_per_period",
                        self.settings.max_reports_per_period
                    ),
                ));
            }
            Err(e) => {
                self.health.write_failed(&e);
                tracing::error!(error = %e, "a report could not be stored");
                return Err(storage("the measurement database failed; retry later"));
            }
        }
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert((period, *self.task_id.as_ref()));
        self.metrics.measure_accepted();
        Ok(())
    }

    /// Every part of the report has the size an honest report of this task has: anything else
    /// is refused before it is opened or stored (the helper's share is stored unopened, so this
    /// is the only bound on what the leader keeps and later sends the helper).
    fn check_sizes(&self, report: &dap::Report) -> Result<(), Problem> {
        let sizes = &self.sizes;
        sizes
            .check_public_share(report.public_share())
            .and_then(|()| sizes.leader.check(report.leader_encrypted_input_share(), "leader's"))
            .and_then(|()| sizes.helper.check(report.helper_encrypted_input_share(), "helper's"))
            .map_err(|detail| invalid_message("wrong_share_size", detail))
    }

    /// The public share and the leader's input share decode for the task's VDAF (the proof is
    /// checked at aggregation, with the helper).
    fn check_shares(&self, public_share: &[u8], input_share: &[u8]) -> Result<(), Problem> {
        prepare::check_shares(&self.task, 0, public_share, input_share).map_err(|e| match e {
            MeasureError::Malformed(m) => invalid_message("malformed_share", m),
            other => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, None, "internal_error", other.to_string()),
        })
    }
}

/// Seconds since the Unix epoch.
pub(super) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn unrecognized_task(task_id: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        Some("unrecognizedTask"),
        "unknown_task",
        format!("{task_id:?} is not this leader's task"),
    )
}

fn invalid_message(reason: &'static str, detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, Some("invalidMessage"), reason, detail)
}

fn rejected(reason: &'static str, detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, Some("reportRejected"), reason, detail)
}

fn too_large(limit: usize) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, None, "payload_too_large", format!("a report is at most {limit} bytes"))
}

pub(super) fn storage(detail: &str) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, None, "storage_unavailable", detail)
}

/// The body reader's refusals (timeouts, size, busy) as problem documents, with their codes.
fn from_reject(r: Reject) -> Problem {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    Problem::new(status, None, r.reason.code(), r.detail)
}
