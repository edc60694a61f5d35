//! The HTTP API (documented in `openapi.json`). Handlers read the keeper's snapshot and never
//! block on each other; uploads are validated here, in parallel, and only valid ones are queued.
//! Nothing about the caller (address, headers) is logged or stored.

use crate::aggregate::{self, Accepted, PublishedModel, Snapshot, Submission};
use crate::metrics::Metrics;
use crate::reason::{Reason, Reject};
use crate::store;
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
use tokio::sync::{Semaphore, oneshot, watch};
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// The media type of a single server's upload body (hearth-core's update wire format).
pub const UPDATE_MEDIA_TYPE: &str = "application/vnd.hearth.update";
/// The media type of a leader's upload body (hearth-core's report format: share + sealed seed).
pub const REPORT_MEDIA_TYPE: &str = "application/vnd.hearth.report";
pub const OPENAPI: &str = include_str!("../openapi.json");

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
    ("get", "/metrics"),
];

/// The helper's own routes (it also serves `/healthz` and `/v1/openapi.json`).
pub const HELPER_ROUTES: &[(&str, &str)] = &[("get", "/v1/helper_config"), ("post", "/v1/aggregate")];

#[derive(Clone)]
pub struct App {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub queue: SyncSender<Submission>,
    pub metrics: Arc<Metrics>,
    pub database: PathBuf,
    pub body_timeout: Duration,
    /// Permits to read and hold an upload (see `Config::upload_concurrency`).
    pub uploads: Arc<Semaphore>,
    pub catalog: Option<Arc<crate::catalog::PublishedCatalog>>,
    /// The media type uploads must have: the plaintext update or, for a leader, the report.
    pub upload_media_type: &'static str,
}

/// The helper's API state.
#[derive(Clone)]
pub struct HelperApp {
    pub helper: Arc<crate::helper::Helper>,
    pub body_timeout: Duration,
    /// One batch is opened at a time: each costs n × d PRG words of CPU.
    pub batches: Arc<Semaphore>,
}

/// The helper's routes: its public configuration for devices, the leader's aggregate call,
/// health and the spec.
pub fn helper_router(app: HelperApp) -> Router {
    // Devices on any publisher's origin fetch the helper's configuration directly.
    let cors = CorsLayer::new().allow_origin(Any).allow_methods([Method::GET]);
    Router::new()
        .route("/v1/helper_config", get(helper_config))
        .route("/v1/aggregate", post(aggregate_batch))
        .route("/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok", "role": "helper"})) }))
        .fallback(|| async { reject(Reject::new(Reason::NotFound, "no such resource")) })
        .with_state(app)
        .layer(cors)
}

async fn helper_config(State(app): State<HelperApp>) -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(app.helper.config())).into_response()
}

async fn aggregate_batch(State(app): State<HelperApp>, headers: HeaderMap, body: Body) -> Response {
    let verdict = async {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !app.helper.authorized(authorization) {
            return Err(Reject::new(Reason::Unauthorized, "only the leader may ask for an aggregate share"));
        }
        let _permit =
            app.batches.acquire().await.map_err(|_| Reject::new(Reason::StorageUnavailable, "the helper is shutting down"))?;
        // Each sealed seed is about 220 bytes of JSON.
        let limit = 4096 + crate::helper::MAX_BATCH_REPORTS * 256;
        let bytes = read_body(body, limit, app.body_timeout).await?;
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

pub fn router(app: App, www: Option<PathBuf>) -> Router {
    // Publisher pages on any origin fetch the model and task and upload; `Any` origin forbids
    // credentials, so no cookie can ride along.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
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
        .route("/metrics", get(metrics))
        .with_state(app);
    let router = match www {
        // Demo mode: also serves www/, the snippet and its worker among it. A publisher page on
        // another origin loads the snippet as a plain script and the worker, module and wasm by
        // CORS fetches: the CORS layer below covers these files too, and CORP lets pages that
        // are themselves cross-origin isolated load the snippet. Cross-origin isolation of our
        // own pages gives the bench page precise timers.
        Some(dir) => api
            .route("/", get(|| async { Redirect::to("/demo/") }))
            .fallback_service(ServeDir::new(dir))
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
    router.layer(cors)
}

fn reject(r: Reject) -> Response {
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = (status, axum::Json(&r)).into_response();
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

/// A published version never changes, so it may be cached for good.
async fn versioned(app: App, version: String, pick: fn(store::StoredModel) -> (Vec<u8>, &'static str)) -> Response {
    let Ok(version) = version.parse::<u64>() else {
        return reject(Reject::new(Reason::BadVersion, "model version must be an integer"));
    };
    let path = app.database.clone();
    let found = tokio::task::spawn_blocking(move || store::connect(&path).and_then(|c| store::model(&c, version))).await;
    match found {
        Ok(Ok(Some(m))) => {
            let etag = aggregate::etag(&m);
            let (body, content_type) = pick(m);
            let headers = [
                (header::CONTENT_TYPE, content_type.to_string()),
                (header::ETAG, etag),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable".to_string()),
            ];
            (headers, body).into_response()
        }
        Ok(Ok(None)) => reject(Reject::new(Reason::UnknownModelVersion, format!("no model version {version} was published"))),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reading a model failed");
            reject(Reject::new(Reason::StorageUnavailable, "the model could not be read"))
        }
        Err(_) => reject(Reject::new(Reason::StorageUnavailable, "the model could not be read")),
    }
}

async fn versioned_manifest(State(app): State<App>, Path(version): Path<String>) -> Response {
    versioned(app, version, |m| (m.manifest.into_bytes(), "application/json")).await
}

async fn versioned_onnx(State(app): State<App>, Path(version): Path<String>) -> Response {
    versioned(app, version, |m| (m.onnx, "application/octet-stream")).await
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
    let body = serde_json::json!({
        "status": if keeper_alive { "ok" } else { "keeper_stopped" },
        "model_version": snap.model.version,
        "round_id": snap.round.as_ref().map(|r| r.expect.round_id),
    });
    let status = if keeper_alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    let text = app.metrics.render(snapshot(&app).privacy.epsilon_spent);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn upload(State(app): State<App>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let verdict = accept_upload(&app, &headers, body).await;
    app.metrics.upload_took(started.elapsed());
    match verdict {
        Ok(a) => (StatusCode::ACCEPTED, axum::Json(a)).into_response(),
        Err(r) => {
            app.metrics.rejected(r.reason);
            tracing::debug!(reason = r.reason.code(), "upload refused");
            reject(r)
        }
    }
}

/// Header checks, bounded and timed body read, decode, validation, then the keeper's verdict.
async fn accept_upload(app: &App, headers: &HeaderMap, body: Body) -> Result<Accepted, Reject> {
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
    let _permit =
        app.uploads.acquire().await.map_err(|_| Reject::new(Reason::StorageUnavailable, "the aggregator is shutting down"))?;
    let bytes = read_body(body, limit, app.body_timeout).await?;
    let upload = if round.expect.helper_key_id.is_some() {
        let report = validate::decode_report(&bytes)?;
        validate::check_report(&report, &round.expect)?;
        Upload::Report(report)
    } else {
        let update = validate::decode(&bytes)?;
        validate::check(&update, &round.expect)?;
        Upload::Plain(update)
    };
    let (reply, verdict) = oneshot::channel();
    app.queue.try_send(Submission { upload, body: bytes, reply }).map_err(|e| match e {
        TrySendError::Full(_) => Reject::new(Reason::Busy, "too many uploads in flight; retry shortly"),
        TrySendError::Disconnected(_) => Reject::new(Reason::StorageUnavailable, "the aggregator is shutting down"),
    })?;
    verdict.await.unwrap_or_else(|_| Err(Reject::new(Reason::StorageUnavailable, "the aggregator is shutting down")))
}

fn too_large(limit: usize) -> Reject {
    Reject::new(Reason::PayloadTooLarge, format!("an update for this round is {limit} bytes"))
}

/// Reads at most `limit` bytes, all within `timeout`: a sender that trickles is cut off.
async fn read_body(mut body: Body, limit: usize, timeout: Duration) -> Result<Vec<u8>, Reject> {
    let read = async {
        let mut buf = Vec::with_capacity(limit);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Reject::new(Reason::BodyReadFailed, e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or_else(|_| {
        Err(Reject::new(Reason::BodyTimeout, format!("the body did not arrive within {} ms", timeout.as_millis())))
    })
}
