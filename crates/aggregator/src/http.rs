//! The HTTP API (documented in `openapi.json`). Handlers read the keeper's snapshot and never
//! block on each other; uploads are validated here, in parallel, and only valid ones are queued.
//! Nothing about the caller (address, headers) is logged or stored.

use crate::aggregate::{Accepted, PublishedModel, Snapshot, Submission};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model_cache::{self, ModelCache};
use crate::reader::Reader;
use crate::reason::{Reason, Reject};
use crate::validate::{self, Upload};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit, oneshot, watch};
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// The media type of a single server's upload body (hearth-core's update wire format).
pub const UPDATE_MEDIA_TYPE: &str = "application/vnd.hearth.update";
/// The media type of a leader's upload body (hearth-core's report format: share + sealed seed).
pub const REPORT_MEDIA_TYPE: &str = "application/vnd.hearth.report";
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Bytes of an upload body read before it may take a slot (`upload_concurrency`). A sender that
/// trickles is cut off by the rate rule long before it has this much, so it never holds a slot;
/// and every open connection may hold this much at once: before their slots, uploads hold at
/// most connections × this (beside the read buffer hyper keeps per connection anyway).
pub const PRE_SLOT_BYTES: usize = 64 * 1024;

/// Every API route of a single server or leader, as written in `openapi.json` (a test holds the
/// two together).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/model/manifest.json"),
    ("get", "/v1/model/model.onnx"),
    ("get", "/v1/models/{version}/manifest.json"),
    ("get", "/v1/models/{version}/model.onnx"),
    ("get", "/v1/catalog.json"),
    ("get", "/v1/round"),
    ("post", "/v1/updates"),
    ("get", "/v1/privacy"),
    ("get", "/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// The helper's own routes (it also serves `/healthz`, `/readyz` and `/v1/openapi.json`).
pub const HELPER_ROUTES: &[(&str, &str)] = &[("get", "/v1/helper_config"), ("post", "/v1/aggregate")];

#[derive(Clone)]
pub struct App {
    /// This replica's name (the `replica` setting).
    pub replica: Arc<str>,
    pub ready: Arc<Readiness>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub queue: SyncSender<Submission>,
    pub metrics: Arc<Metrics>,
    /// Whether the store is still the file opened, and writable (`/healthz`).
    pub store: Arc<crate::store_health::StoreHealth>,
    pub body: BodyLimits,
    /// Permits to read and hold an upload (see `Config::upload_concurrency`).
    pub uploads: Arc<Semaphore>,
    /// Published versions for `/v1/models/{version}/…`.
    pub models: Arc<ModelCache>,
    /// Whether an upload naming an ended round was accepted (the model cache's connection).
    pub reader: Arc<Reader>,
    pub catalog: Option<Arc<crate::catalog::PublishedCatalog>>,
    /// The media type uploads must have: the plaintext update or, for a leader, the report.
    pub upload_media_type: &'static str,
    /// A measuring leader's measurement (its store's health joins `/healthz`).
    pub measure: Option<Arc<crate::measure::leader::MeasureLeader>>,
}

/// The helper's API state.
#[derive(Clone)]
pub struct HelperApp {
    pub helper: Arc<crate::helper::Helper>,
    /// This replica's name (the `replica` setting).
    pub replica: Arc<str>,
    pub ready: Arc<Readiness>,
    pub body: BodyLimits,
    /// One batch is opened at a time: each costs n × d PRG words of CPU.
    pub batches: Arc<Semaphore>,
}

/// The helper's routes: its public configuration for devices, the leader's aggregate call,
/// health and the spec; and measurement's (`measure`), when it measures.
pub fn helper_router(app: HelperApp, measure: Option<Router>) -> Router {
    // Devices on any publisher's origin fetch the helper's configuration directly.
    let cors = CorsLayer::new().allow_origin(Any).allow_methods([Method::GET]);
    let routes = Router::new()
        .route("/v1/helper_config", get(helper_config))
        .route("/v1/aggregate", post(aggregate_batch))
        .route("/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route(
            "/healthz",
            get(|State(app): State<HelperApp>| async move {
                match app.helper.store_health().problem() {
                    Some(p) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(
                            serde_json::json!({"status": p.status(), "detail": p.detail, "role": "helper", "replica": &*app.replica}),
                        ),
                    ),
                    None => {
                        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok", "role": "helper", "replica": &*app.replica})))
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(app): State<HelperApp>| async move {
                let helper = app.helper.clone();
                let ping = || {
                    tokio::task::spawn_blocking(move || {
                        helper.ping().inspect_err(|e| tracing::error!(error = %e, "the helper's database did not answer")).is_ok()
                    })
                };
                let answers = app.ready.database_answers(ping).await;
                readiness(&app.replica, app.helper.store_health().problem(), answers)
            }),
        )
        .with_state(app);
    routes
        .merge(measure.unwrap_or_default())
        .fallback(|| async { reject(Reject::new(Reason::NotFound, "no such resource")) })
        .layer(cors)
        .layer(nosniff())
}

async fn helper_config(State(app): State<HelperApp>) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(app.helper.config())).into_response()
}

async fn aggregate_batch(State(app): State<HelperApp>, headers: HeaderMap, body: Body) -> Response {
    let head = Instant::now();
    let verdict = async {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !app.helper.authorized(authorization) {
            return Err(Reject::new(Reason::Unauthorized, "only the leader may ask for an aggregate share"));
        }
        // Each sealed seed is about 220 bytes of JSON.
        let limit = 4096 + crate::helper::MAX_BATCH_REPORTS * 256;
        // The deadline covers the slot and the body, not the aggregation: the leader's own
        // helper timeout bounds that.
        let mut body = TimedBody::new(body, app.body, head, limit);
        body.read_until(PRE_SLOT_BYTES).await?;
        let _permit = body.slot(&app.batches).await?;
        let bytes = body.read_to_end().await?;
        let request: crate::helper::AggregateRequest =
            serde_json::from_slice(&bytes).map_err(|e| Reject::new(Reason::MalformedBatch, e.to_string()))?;
        let helper = app.helper.clone();
        tokio::task::spawn_blocking(move || helper.aggregate(&request))
            .await
            .unwrap_or_else(|_| Err(Reject::new(Reason::StorageUnavailable, "aggregation failed")))
    }
    .await;
    match verdict {
        Ok(share) => ([(header::CONTENT_TYPE, crate::helper::SHARE_MEDIA_TYPE)], share).into_response(),
        Err(r) => {
            tracing::warn!(reason = r.reason.code(), detail = %r.detail, "batch refused");
            reject(r)
        }
    }
}

/// The API of a single server or leader, with measurement's routes (`measure`) when it
/// measures, and the demo site when `www` is set.
pub fn router(app: App, www: Option<PathBuf>, measure: Option<Router>) -> Router {
    // Publisher pages on any origin fetch the model and task and upload (measurement reports by
    // PUT); `Any` origin forbids credentials, so no cookie can ride along.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([header::CONTENT_TYPE, header::IF_NONE_MATCH])
        .expose_headers([header::ETAG]);
    let api = Router::new()
        .route("/v1/model/manifest.json", get(current_manifest))
        .route("/v1/model/model.onnx", get(current_onnx))
        .route("/v1/models/{version}/manifest.json", get(versioned_manifest))
        .route("/v1/models/{version}/model.onnx", get(versioned_onnx))
        .route("/v1/catalog.json", get(catalog))
        .route("/v1/round", get(round_task))
        .route("/v1/updates", post(upload))
        .route("/v1/privacy", get(privacy))
        .route("/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(app)
        .merge(measure.unwrap_or_default());
    let router = match www {
        // Demo mode: also serves www/, the snippet and its worker among it. A publisher page on
        // another origin loads the snippet as a plain script and the worker, module and wasm by
        // CORS fetches: the CORS layer below covers these files too, and CORP lets pages that
        // are themselves cross-origin isolated load the snippet. Cross-origin isolation of our
        // own pages gives the bench page precise timers.
        Some(dir) => api
            .route("/", get(|| async { Redirect::to("/demo/") }))
            .fallback_service(crate::static_files::routes(dir))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("cross-origin"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::HeaderName::from_static("cross-origin-embedder-policy"),
                HeaderValue::from_static("require-corp"),
            )),
        None => api.fallback(|| async { reject(Reject::new(Reason::NotFound, "no such resource")) }),
    };
    router.layer(cors).layer(nosniff())
}

/// `X-Content-Type-Options: nosniff` on every response, of both roles: a browser takes each body
/// as the type it is sent as, and never guesses a script or a page out of JSON, a model or a file.
fn nosniff() -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
}

pub(crate) fn reject(r: Reject) -> Response {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, axum::Json(&r)).into_response();
    // Also on the refusals the connection layer answers before any router (and its layers) runs.
    resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if r.reason == Reason::Busy {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn snapshot(app: &App) -> Arc<Snapshot> {
    app.snapshot.borrow().clone()
}

fn not_modified(headers: &HeaderMap, etag: &str) -> Option<Response> {
    let matches =
        headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    matches.then(|| (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.to_string())]).into_response())
}

/// The current pack may change at any round close: revalidate every time (cheap with ETag).
fn current_pack(headers: &HeaderMap, model: &PublishedModel, body: Bytes, content_type: &'static str) -> Response {
    if let Some(resp) = not_modified(headers, &model.etag) {
        return resp;
    }
    let headers = [
        (header::CONTENT_TYPE, content_type.to_string()),
        (header::ETAG, model.etag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_string()),
        (header::HeaderName::from_static("x-hearth-model-version"), model.version.to_string()),
    ];
    (headers, body).into_response()
}

async fn catalog(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(c) = app.catalog else {
        return reject(Reject::new(Reason::NoCatalog, "this aggregator publishes no catalog"));
    };
    if let Some(resp) = not_modified(&headers, &c.etag) {
        return resp;
    }
    let headers = [
        (header::CONTENT_TYPE, "application/json".to_string()),
        (header::ETAG, c.etag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    (headers, c.body.clone()).into_response()
}

async fn current_manifest(State(app): State<App>, headers: HeaderMap) -> Response {
    let m = snapshot(&app).model.clone();
    current_pack(&headers, &m, m.manifest.clone(), "application/json")
}

async fn current_onnx(State(app): State<App>, headers: HeaderMap) -> Response {
    let m = snapshot(&app).model.clone();
    current_pack(&headers, &m, m.onnx.clone(), "application/octet-stream")
}

/// A published version never changes, so it may be cached for good; every response shares the
/// model cache's one copy.
async fn versioned(app: App, version: String, pick: fn(&Arc<PublishedModel>) -> (Bytes, &'static str)) -> Response {
    let Ok(version) = version.parse::<u64>() else {
        return reject(Reject::new(Reason::BadVersion, "model version must be an integer"));
    };
    match app.models.get(version).await {
        Ok(Some(m)) => {
            let (body, content_type) = pick(&m);
            let headers = [
                (header::CONTENT_TYPE, content_type.to_string()),
                (header::ETAG, m.etag.clone()),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_string()),
            ];
            (headers, body).into_response()
        }
        Ok(None) => reject(Reject::new(Reason::UnknownModelVersion, format!("no model version {version} was published"))),
        Err(r) => reject(r),
    }
}

async fn versioned_manifest(State(app): State<App>, Path(version): Path<String>) -> Response {
    versioned(app, version, |m| (m.manifest.clone(), "application/json")).await
}

async fn versioned_onnx(State(app): State<App>, Path(version): Path<String>) -> Response {
    versioned(app, version, |m| (model_cache::onnx_body(m), "application/octet-stream")).await
}

async fn round_task(State(app): State<App>) -> Response {
    let snap = snapshot(&app);
    match &snap.round {
        Some(r) => ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], r.task_json.clone())
            .into_response(),
        None => reject(validate::no_round(snap.privacy.training)),
    }
}

async fn privacy(State(app): State<App>) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(snapshot(&app).privacy.clone())).into_response()
}

async fn health(State(app): State<App>) -> Response {
    let snap = snapshot(&app);
    // A keeper that stopped drops its queue end; then nothing can be accepted.
    let keeper_alive = app.snapshot.has_changed().is_ok();
    let mut body = serde_json::json!({
        "status": if keeper_alive { "ok" } else { "keeper_stopped" },
        "replica": &*app.replica,
        "model_version": snap.model.version,
        "round_id": snap.round.as_ref().map(|r| r.expect.round_id),
    });
    let problem = store_problem(&app);
    if let Some(p) = &problem {
        body["status"] = p.status().into();
        body["detail"] = p.detail.clone().into();
    }
    let status = if keeper_alive && problem.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// How long `/readyz` waits for the database's answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer of the database serves further `/readyz` calls.
const READY_CACHE: Duration = Duration::from_secs(1);

/// Whether the database answered lately. `/readyz` is reachable by anyone who can reach the
/// server (through the proxy too): a flood of calls costs one ping per [`READY_CACHE`], never a
/// queue of pings on the connection request handlers share.
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    /// Whether the database answers: the last answer if recent, else `ping`'s within
    /// [`READY_TIMEOUT`] (a failure is logged where it happens, never sent to the caller).
    async fn database_answers(&self, ping: impl FnOnce() -> tokio::task::JoinHandle<bool>) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, answered)) = *last
            && at.elapsed() < READY_CACHE
        {
            return answered;
        }
        let answered = matches!(tokio::time::timeout(READY_TIMEOUT, ping()).await, Ok(Ok(true)));
        *last = Some((Instant::now(), answered));
        answered
    }
}

/// `/readyz`: what `/healthz` says, and whether the database answers a query now.
async fn ready(State(app): State<App>) -> Response {
    if app.snapshot.has_changed().is_err() {
        let body = serde_json::json!({"status": "keeper_stopped", "replica": &*app.replica});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let reader = app.reader.clone();
    let ping = || tokio::spawn(async move { reader.run(|db| db.ping()).await.is_ok() });
    readiness(&app.replica, store_problem(&app), app.ready.database_answers(ping).await)
}

/// What is wrong with the stores, if anything. The verdicts come from the round keeper's watchdog
/// and measurement's collection thread: reading them costs a lock.
fn store_problem(app: &App) -> Option<crate::store_health::Problem> {
    app.store.problem().or_else(|| app.measure.as_ref().and_then(|m| m.health().problem()))
}

/// The answer of `/readyz` from the store's health and whether the database answers.
fn readiness(replica: &str, problem: Option<crate::store_health::Problem>, answers: bool) -> Response {
    let unready = |status: &str, detail: String| {
        let body = serde_json::json!({"status": status, "detail": detail, "replica": replica});
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    };
    match problem {
        Some(p) => unready(p.status(), p.detail),
        None if answers => {
            (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready", "replica": replica}))).into_response()
        }
        None => unready(
            "database_unreachable",
            format!("the database did not answer within {} s; retry later", READY_TIMEOUT.as_secs()),
        ),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let text = app.metrics.render(snapshot(&app).privacy.epsilon_spent);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn upload(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let head = Instant::now();
    let verdict = accept_upload(&app, head, &headers, body).await;
    app.metrics.upload_took(head.elapsed());
    match verdict {
        Ok(a) => (StatusCode::ACCEPTED, axum::Json(a)).into_response(),
        Err(r) => {
            app.metrics.rejected(r.reason);
            tracing::debug!(reason = r.reason.code(), "upload refused");
            reject(r)
        }
    }
}

/// Header checks, the body's first bytes, a slot, the rest of the body, decode and validation,
/// all by one deadline from the request `head` on; then the keeper's verdict.
async fn accept_upload(app: &App, head: Instant, headers: &HeaderMap, body: Body) -> Result<Accepted, Reject> {
    let media_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.split(';').next().unwrap_or("").trim());
    let wanted = app.upload_media_type;
    if !media_type.is_some_and(|t| t.eq_ignore_ascii_case(wanted)) {
        return Err(Reject::new(Reason::UnsupportedMediaType, format!("uploads to this server must be {wanted}")));
    }
    if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity") {
        return Err(Reject::new(Reason::UnsupportedContentEncoding, "uploads must not be content-encoded"));
    }
    let snap = snapshot(app);
    let round = snap.round.as_ref().ok_or_else(|| validate::no_round(snap.privacy.training))?;
    let limit = round.expect.body_len();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut body = TimedBody::new(body, app.body, head, limit);
    body.read_until(PRE_SLOT_BYTES).await?;
    let _slot = body.slot(&app.uploads).await?;
    let bytes = body.read_to_end().await?;
    let deadline = body.deadline();
    let upload = if round.expect.helper_key_id.is_some() {
        Upload::Report(validate::decode_report(&bytes)?)
    } else {
        Upload::Plain(validate::decode(&bytes)?)
    };
    // A retry that arrives after its round ended: if the first copy was accepted, it is a
    // duplicate; only an upload never accepted gets the round checks' stale_model or wrong_round.
    if upload.round_id() != round.expect.round_id {
        let id = *upload.id();
        let lookup = app.reader.run(move |db| db.was_accepted(&id));
        let accepted = tokio::time::timeout_at(deadline.into(), lookup).await.unwrap_or_else(|_| {
            Err(Reject::new(Reason::Busy, "the store did not answer within body_timeout_ms; retry shortly"))
        })?;
        if accepted {
            return Err(validate::duplicate_nonce());
        }
    }
    match &upload {
        Upload::Report(r) => validate::check_report(r, &round.expect)?,
        Upload::Plain(u) => validate::check(u, &round.expect)?,
    }
    let (reply, verdict) = oneshot::channel();
    app.queue.try_send(Submission { upload, reply }).map_err(|e| match e {
        TrySendError::Full(_) => Reject::new(Reason::Busy, "too many uploads in flight; retry shortly"),
        TrySendError::Disconnected(_) => Reject::new(Reason::StorageUnavailable, "the aggregator is shutting down"),
    })?;
    // Not cut by the deadline: the keeper answers every queued upload (its queue and batches are
    // bounded), and a 503 for an upload it then stores would make the device's retry a
    // `duplicate_nonce` for an upload that was in fact accepted.
    verdict.await.unwrap_or_else(|_| Err(Reject::new(Reason::StorageUnavailable, "the aggregator is shutting down")))
}

fn too_large(limit: usize) -> Reject {
    Reject::new(Reason::PayloadTooLarge, format!("an update for this round is {limit} bytes"))
}

/// When an upload body must have arrived and how long it may wait for its slot; see the
/// settings of the same names.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// `body_timeout_ms`: from the request head, slot wait and body included.
    pub timeout: Duration,
    /// `min_body_rate`, bytes/s, on average from `grace` after the head on.
    pub min_rate: u64,
    /// `body_grace_ms`.
    pub grace: Duration,
    /// `upload_wait_ms`: the longest wait for a slot, then 503 `busy`.
    pub slot_wait: Duration,
}

impl BodyLimits {
    pub fn of(config: &Config) -> BodyLimits {
        BodyLimits {
            timeout: Duration::from_millis(config.body_timeout_ms),
            min_rate: config.min_body_rate,
            grace: Duration::from_millis(config.body_grace_ms),
            slot_wait: Duration::from_millis(config.upload_wait_ms),
        }
    }
}

/// A request body read under its [`BodyLimits`], from the moment its head arrived. Each wait for
/// a frame ends when the next byte is due by the rules, not on a polling tick.
pub(crate) struct TimedBody {
    body: Body,
    limits: BodyLimits,
    head: Instant,
    /// Time spent waiting for a slot: the body is not read then, so it does not count against
    /// the sender's rate.
    waited: Duration,
    /// Bytes accepted at most (413 beyond).
    limit: usize,
    bytes: Vec<u8>,
    ended: bool,
}

impl TimedBody {
    pub(crate) fn new(body: Body, limits: BodyLimits, head: Instant, limit: usize) -> TimedBody {
        TimedBody { body, limits, head, waited: Duration::ZERO, limit, bytes: Vec::new(), ended: false }
    }

    /// The whole request's deadline: `body_timeout_ms` after its head.
    fn deadline(&self) -> Instant {
        self.head + self.limits.timeout
    }

    /// When the bytes held fall behind `min_body_rate`, unless more arrive first.
    fn falls_behind(&self) -> Instant {
        let earned = Duration::from_secs_f64(self.bytes.len() as f64 / self.limits.min_rate as f64);
        self.head + self.limits.grace + self.waited + earned
    }

    /// Reads until `want` bytes are held or the body ends: 413 past the limit, 408 when the
    /// sender falls behind the minimum rate or the deadline passes.
    pub(crate) async fn read_until(&mut self, want: usize) -> Result<(), Reject> {
        self.bytes.reserve_exact(want.min(self.limit).saturating_sub(self.bytes.len()));
        while !self.ended && self.bytes.len() < want {
            let deadline = self.deadline();
            let due = self.falls_behind().min(deadline);
            let frame = match tokio::time::timeout_at(due.into(), self.body.frame()).await {
                Ok(frame) => frame,
                Err(_) if due < deadline => {
                    let rate = self.limits.min_rate;
                    return Err(Reject::new(Reason::BodyTimeout, format!("the body arrived slower than {rate} bytes/s")));
                }
                Err(_) => {
                    let ms = self.limits.timeout.as_millis();
                    return Err(Reject::new(Reason::BodyTimeout, format!("the request did not complete within {ms} ms")));
                }
            };
            match frame {
                None => self.ended = true,
                Some(Err(e)) => return Err(Reject::new(Reason::BodyReadFailed, e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if self.bytes.len() + data.len() > self.limit {
                            return Err(too_large(self.limit));
                        }
                        self.bytes.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(())
    }

    /// The whole body, once it has ended.
    pub(crate) async fn read_to_end(&mut self) -> Result<Vec<u8>, Reject> {
        self.read_until(usize::MAX).await?;
        Ok(std::mem::take(&mut self.bytes))
    }

    /// One of `slots`, waited for at most `upload_wait_ms` and never past the deadline; then 503
    /// `busy` with Retry-After.
    pub(crate) async fn slot<'a>(&mut self, slots: &'a Semaphore) -> Result<SemaphorePermit<'a>, Reject> {
        let started = Instant::now();
        let until = (started + self.limits.slot_wait).min(self.deadline());
        let permit = tokio::time::timeout_at(until.into(), slots.acquire()).await;
        self.waited += started.elapsed();
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Reject::new(Reason::StorageUnavailable, "the server is shutting down")),
            Err(_) => Err(Reject::new(Reason::Busy, "every slot is taken; retry shortly")),
        }
    }
}
