//! The leader's measurement routes, merged into its API router (which adds the CORS, `nosniff`
//! and fallback layers): DAP's upload side for devices, the task, and the collector's API and
//! reports page.

use super::collect::Forced;
use super::leader::{MeasureLeader, now_secs, storage, unrecognized_task};
use super::problem::Problem;
use super::release::Release;
use super::report_page;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use hearth_core::measure::dap;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError};

/// Every measurement route of a leader.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/dap/hpke_config"),
    ("put", "/dap/tasks/{task_id}/reports"),
    ("get", "/v1/measure/task"),
    ("post", "/v1/measure/collect"),
    ("get", "/v1/measure/reports"),
    ("get", "/v1/measure/reports.csv"),
    ("get", "/reports/"),
];

#[derive(Clone)]
struct LeaderApp {
    leader: Arc<MeasureLeader>,
    /// The collection thread's queue of forced collections.
    collect: SyncSender<Forced>,
}

/// The leader's measurement routes; `collect` reaches the collection thread.
pub fn leader_routes(leader: Arc<MeasureLeader>, collect: SyncSender<Forced>) -> Router {
    Router::new()
        .route("/dap/hpke_config", get(hpke_config))
        .route("/dap/tasks/{task_id}/reports", put(upload))
        .route("/v1/measure/task", get(task))
        .route("/v1/measure/collect", post(collect_now))
        .route("/v1/measure/reports", get(reports_json))
        .route("/v1/measure/reports.csv", get(reports_csv))
        .route("/reports/", get(reports_html))
        .route("/reports", get(|| async { Redirect::permanent("/reports/") }))
        .with_state(LeaderApp { leader, collect })
}

/// `GET /dap/hpke_config[?task_id=…]`: the leader's one key, whichever task; an unknown task
/// named is refused (DAP-09 §4.5.1).
async fn hpke_config(State(app): State<LeaderApp>, RawQuery(query): RawQuery) -> Response {
    let named = query.as_deref().unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("task_id="));
    if let Some(id) = named
        && id.parse::<dap::TaskId>().ok() != Some(app.leader.task_id)
    {
        return unrecognized_task(id).into_response();
    }
    let headers = [(header::CONTENT_TYPE, dap::HpkeConfigList::MEDIA_TYPE), (header::CACHE_CONTROL, "no-cache")];
    (headers, app.leader.hpke_configs()).into_response()
}

/// `PUT /dap/tasks/{task_id}/reports`: 201 when stored; a problem document otherwise.
async fn upload(State(app): State<LeaderApp>, Path(task_id): Path<String>, headers: HeaderMap, body: Body) -> Response {
    match app.leader.upload(&task_id, &headers, body).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(p) => {
            app.leader.metrics.measure_refused(p.reason);
            tracing::debug!(reason = p.reason, "report refused");
            p.into_response()
        }
    }
}

/// `GET /v1/measure/task`: the task and its id, for devices (which recompute the id).
async fn task(State(app): State<LeaderApp>) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")];
    (headers, app.leader.task_json()).into_response()
}

/// `POST /v1/measure/collect?period=<start, Unix seconds>` with the admin token: collects a
/// period of the current task now (closing it to uploads), or answers its earlier release.
async fn collect_now(State(app): State<LeaderApp>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    match collect(&app, &headers, query.as_deref()).await {
        Ok(release) => {
            let body = report_page::json(&app.leader.task, &app.leader.task_id.to_string(), &[release]);
            ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Err(p) => {
            tracing::warn!(reason = p.reason, detail = %p.detail, "collection request refused");
            p.into_response()
        }
    }
}

async fn collect(app: &LeaderApp, headers: &HeaderMap, query: Option<&str>) -> Result<Release, Problem> {
    let leader = &app.leader;
    if !leader.collect_enabled() {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            None,
            "collect_disabled",
            "measure.admin_token is not set on this leader",
        ));
    }
    if !leader.admin(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())) {
        return Err(Problem::new(StatusCode::UNAUTHORIZED, None, "unauthorized", "the admin bearer token is missing or wrong"));
    }
    let bad_period = |detail: String| Problem::new(StatusCode::BAD_REQUEST, None, "bad_period", detail);
    let period = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("period="))
        .ok_or_else(|| bad_period("name the period: ?period=<its start, Unix seconds>".into()))?;
    let period: u64 = period.parse().map_err(|_| bad_period(format!("period {period:?} is not Unix seconds")))?;
    let period_secs = leader.task.period_secs;
    if !period.is_multiple_of(period_secs) {
        return Err(bad_period(format!("a period starts at a multiple of {period_secs} s; {period} does not")));
    }
    let now = now_secs();
    if period > now {
        return Err(bad_period(format!("period {period} has not started")));
    }
    // Past its send window, a period that holds nothing was released already or never had a
    // report: there is nothing to close.
    if period + 2 * period_secs + leader.settings.grace_secs <= now && !leader.is_open(period) {
        let leader = leader.clone();
        let released = tokio::task::spawn_blocking(move || leader.release(period)).await;
        return match released {
            Ok(Ok(Some(release))) => Ok(release),
            Ok(Ok(None)) => Err(Problem::new(
                StatusCode::NOT_FOUND,
                None,
                "unknown_period",
                format!("period {period} held no report and its send window has ended"),
            )),
            _ => Err(storage("the measurement database failed; retry later")),
        };
    }
    let (reply, outcome) = tokio::sync::oneshot::channel();
    app.collect.try_send(Forced { period, reply }).map_err(|e| match e {
        TrySendError::Full(_) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, None, "busy", "collections are queued; retry shortly")
        }
        TrySendError::Disconnected(_) => storage("the collection thread has stopped"),
    })?;
    match outcome.await {
        Ok(Ok(release)) => Ok(release),
        Ok(Err(e)) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "collection_failed",
            format!("{e}; the period stays closed and its collection is retried"),
        )),
        Err(_) => Err(storage("the collection thread stopped before answering")),
    }
}

/// The current task's releases, read off the async workers.
async fn releases(app: &LeaderApp) -> Result<Vec<Release>, Problem> {
    let leader = app.leader.clone();
    let read = tokio::task::spawn_blocking(move || leader.releases()).await;
    read.map_err(|_| storage("the read failed")).and_then(|r| {
        r.map_err(|e| {
            tracing::error!(error = %e, "the releases could not be read");
            storage("the measurement database failed; retry later")
        })
    })
}

/// `GET /v1/measure/reports`: every release of the current task, with intervals and ε.
async fn reports_json(State(app): State<LeaderApp>) -> Response {
    match releases(&app).await {
        Ok(r) => {
            let body = report_page::json(&app.leader.task, &app.leader.task_id.to_string(), &r);
            ([(header::CACHE_CONTROL, "no-cache")], axum::Json(body)).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// `GET /v1/measure/reports.csv`: the same, one row per period and cell.
async fn reports_csv(State(app): State<LeaderApp>) -> Response {
    match releases(&app).await {
        Ok(r) => {
            let headers = [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"hearth-reports.csv\""),
                (header::CACHE_CONTROL, "no-cache"),
            ];
            (headers, report_page::csv(&app.leader.task, &r)).into_response()
        }
        Err(p) => p.into_response(),
    }
}

/// `GET /reports/`: the reports page.
async fn reports_html(State(app): State<LeaderApp>) -> Response {
    match releases(&app).await {
        Ok(r) => {
            // The page has no script and no external asset: a policy that allows nothing else
            // keeps a campaign name that slipped past escaping inert.
            let headers = [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                ),
            ];
            (headers, report_page::html(&app.leader.task, &r)).into_response()
        }
        Err(p) => p.into_response(),
    }
}
