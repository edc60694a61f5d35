//! hearth-aggregator: the federated aggregator. Devices fetch the model and the round task,
//! upload clipped and noised updates (hearth-core's wire format); once a round holds K of them
//! their mean moves the model and the next pack is published.

pub mod aggregate;
pub mod catalog;
pub mod config;
pub mod helper;
pub mod helper_client;
pub mod helper_store;
pub mod http;
pub mod metrics;
pub mod noise;
pub mod privacy;
pub mod reason;
pub mod store;
pub mod validate;

use aggregate::Keeper;
use config::{Config, Role};
use metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Runs the aggregator on `listener` until `shutdown` resolves; the keeper stores what is in
/// flight before this returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    noise::check_environment()?;
    if config.role == Role::Helper {
        return serve_helper(config, listener, shutdown).await;
    }
    let metrics = Arc::new(Metrics::default());
    let (keeper, snapshot) = Keeper::start(config.clone(), metrics.clone())?;
    let (queue, inbox) = std::sync::mpsc::sync_channel(config.queue);
    let keeper = std::thread::Builder::new().name("round-keeper".into()).spawn(move || keeper.run(inbox))?;
    let catalog = config.catalog.as_deref().map(catalog::PublishedCatalog::read).transpose()?.map(Arc::new);
    let app = http::App {
        snapshot,
        queue,
        metrics,
        database: config.database.clone(),
        body_timeout: Duration::from_millis(config.body_timeout_ms),
        uploads: Arc::new(tokio::sync::Semaphore::new(config.upload_concurrency)),
        catalog,
        upload_media_type: match config.role {
            Role::Leader => http::REPORT_MEDIA_TYPE,
            _ => http::UPDATE_MEDIA_TYPE,
        },
    };
    axum::serve(listener, http::router(app, config.www.clone())).with_graceful_shutdown(shutdown).await?;
    // The router (and with it the queue's sending end) is gone: the keeper drains and exits.
    keeper.join().map_err(|_| "the round keeper panicked")?;
    Ok(())
}

/// The helper role: no model, no rounds; its key, its store of counted report ids and releases.
async fn serve_helper(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = config.database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let store = helper_store::HelperStore::open(&config.database)?;
    let helper =
        helper::Helper::new(store, config.secagg.token.clone(), config.secagg.noise_multiplier, config.round.min_clients)
            .map_err(|e| e.to_string())?;
    tracing::info!(key_id = helper.config().hpke.key_id, min_clients = config.round.min_clients, "helper ready");
    let app = http::HelperApp {
        helper: Arc::new(helper),
        body_timeout: Duration::from_millis(config.body_timeout_ms),
        batches: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    axum::serve(listener, http::helper_router(app)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
