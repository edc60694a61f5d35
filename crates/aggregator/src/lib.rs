//! hearth-aggregator: the federated aggregator. Devices fetch the model and the round task,
//! upload clipped and noised updates (hearth-core's wire format); once a round holds K of them
//! their mean moves the model and the next pack is published.

pub mod aggregate;
pub mod catalog;
pub mod config;
pub mod conn;
pub mod helper;
pub mod helper_client;
pub mod http;
pub mod log;
pub mod measure;
pub mod metrics;
pub mod model_cache;
pub mod noise;
pub mod privacy;
pub mod reader;
pub mod reason;
pub mod static_files;
pub mod store;
pub mod store_health;
pub mod sum;
pub mod validate;

use aggregate::{Keeper, Snapshot, StartError};
use config::{Config, Role};
use measure::helper::MeasureHelper;
use measure::leader::MeasureLeader;
use metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use store::Identity;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// `hearth-aggregator init`: creates the configured role's database (and its directory): the
/// schema, the store identity and the seed content (the initial model, or the helper's key).
/// Refuses a path that exists; serving never creates one.
pub fn init(config: &Config) -> Result<Identity, StartError> {
    let identity = match config.role {
        Role::Helper => store::create_helper(&config.database)?,
        Role::Single | Role::Leader => Keeper::create_store(config)?,
    };
    tracing::info!(store = %identity, "database created");
    Ok(identity)
}

/// `init` for measurement (`measure.enabled`): creates its own SQLite file (`measure.database`)
/// with the role's keys. Refuses a path that exists; serving never creates one.
pub fn init_measure(config: &Config) -> Result<(), String> {
    match config.role {
        Role::Leader => MeasureLeader::create(config)?,
        Role::Helper => MeasureHelper::create(config)?,
        Role::Single => return Err("measurement needs the leader and helper roles".into()),
    }
    tracing::info!(database = %config.measure.database.display(), "measurement database created");
    Ok(())
}

/// A server with its store open (and a leader with its helper's configuration): everything that
/// can refuse to start has run, before it listens.
pub struct Prepared {
    config: Config,
    limits: conn::Limits,
    service: Service,
}

enum Service {
    Rounds {
        keeper: Box<Keeper>,
        snapshot: watch::Receiver<Arc<Snapshot>>,
        metrics: Arc<Metrics>,
        reader: Arc<reader::Reader>,
        catalog: Option<Arc<catalog::PublishedCatalog>>,
        measure: Option<Arc<MeasureLeader>>,
    },
    Helper(Arc<helper::Helper>, Option<Arc<MeasureHelper>>),
}

/// Opens the store (refusing a missing, empty, foreign, other role's or read-only one), recovers
/// the open round, and for a leader fetches the helper's configuration.
pub fn prepare(config: Config) -> Result<Prepared, Box<dyn std::error::Error>> {
    noise::check_environment()?;
    let limits = conn::Limits::from_config(&config)?;
    let service = if config.role == Role::Helper {
        let (store, health) = store::open_helper(&config.database)?;
        let helper = helper::Helper::new(
            store,
            Arc::new(health),
            config.secagg.token.clone(),
            config.secagg.noise_multiplier,
            config.round.min_clients,
        )
        .map_err(|e| e.to_string())?;
        tracing::info!(key_id = helper.config().hpke.key_id, min_clients = config.round.min_clients, "helper ready");
        let measure = config.measure.enabled.then(|| MeasureHelper::open(&config)).transpose()?.map(Arc::new);
        Service::Helper(Arc::new(helper), measure)
    } else {
        let metrics = Arc::new(Metrics::new(&config.replica));
        let (keeper, snapshot) = Keeper::start(config.clone(), metrics.clone())?;
        let reader = Arc::new(reader::Reader::open(&config.database, &keeper.health())?);
        let catalog = config.catalog.as_deref().map(catalog::PublishedCatalog::read).transpose()?.map(Arc::new);
        // Config validation holds measurement to a leader with a catalog.
        let measure = match (&catalog, config.measure.enabled) {
            (Some(catalog), true) => Some(Arc::new(MeasureLeader::open(&config, catalog, metrics.clone())?)),
            _ => None,
        };
        if measure.is_some() {
            metrics.measuring();
        }
        Service::Rounds { keeper: Box::new(keeper), snapshot, metrics, reader, catalog, measure }
    };
    Ok(Prepared { config, limits, service })
}

impl Prepared {
    /// Serves on `listener` until `shutdown` resolves; the keeper stores what is in flight
    /// before this returns.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (config, limits) = (self.config, self.limits);
        let (keeper, snapshot, metrics, reader, catalog, measurement) = match self.service {
            Service::Helper(helper, measurement) => {
                return serve_helper(config, &limits, helper, measurement, listener, shutdown).await;
            }
            Service::Rounds { keeper, snapshot, metrics, reader, catalog, measure } => {
                (keeper, snapshot, metrics, reader, catalog, measure)
            }
        };
        let store = keeper.health();
        let (queue, inbox) = std::sync::mpsc::sync_channel(config.queue);
        let keeper = std::thread::Builder::new().name("round-keeper".into()).spawn(move || (*keeper).run(inbox))?;
        let models = Arc::new(model_cache::ModelCache::new(snapshot.clone(), reader.clone(), config.model_cache_versions));
        // Measurement's collection thread, stopped like the keeper once the server has drained.
        let stop = Arc::new(AtomicBool::new(false));
        let (forced, requests) = measure::collect::channel();
        let collector = measurement.as_ref().map(|m| measure::collect::spawn(m.clone(), requests, stop.clone())).transpose()?;
        let measure_routes = measurement.clone().map(|m| measure::routes::leader_routes(m, forced));
        let app = http::App {
            replica: config.replica.as_str().into(),
            ready: Arc::default(),
            snapshot,
            queue,
            metrics,
            store,
            body: http::BodyLimits::of(&config),
            uploads: Arc::new(tokio::sync::Semaphore::new(config.upload_concurrency)),
            models,
            reader,
            catalog,
            upload_media_type: match config.role {
                Role::Leader => http::REPORT_MEDIA_TYPE,
                _ => http::UPDATE_MEDIA_TYPE,
            },
            measure: measurement,
        };
        conn::serve(listener, http::router(app, config.www.clone(), measure_routes), &limits, shutdown).await;
        // A collection in progress stops after its current call to the helper (and is resumed
        // at the next start).
        stop.store(true, Ordering::Relaxed);
        if let Some(collector) = collector {
            collector.join().map_err(|_| "the measurement collector panicked")?;
        }
        // The router (and with it the queue's sending end) is gone: the keeper drains and exits.
        keeper.join().map_err(|_| "the round keeper panicked")?;
        Ok(())
    }
}

/// The helper role: no model, no rounds; its key, its store of counted report ids and releases.
async fn serve_helper(
    config: Config,
    limits: &conn::Limits,
    helper: Arc<helper::Helper>,
    measurement: Option<Arc<MeasureHelper>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let watchdog = tokio::spawn(watch_helper_store(helper.clone()));
    let measure_routes = measurement.map(measure::helper::routes);
    let app = http::HelperApp {
        helper,
        replica: config.replica.as_str().into(),
        ready: Arc::default(),
        body: http::BodyLimits::of(&config),
        batches: Arc::new(tokio::sync::Semaphore::new(1)),
    };
    conn::serve(listener, http::helper_router(app, measure_routes), limits, shutdown).await;
    watchdog.abort();
    Ok(())
}

/// The helper's store watchdog (a leader's and a single server's is the round keeper's loop).
async fn watch_helper_store(helper: Arc<helper::Helper>) {
    let mut every = tokio::time::interval(store_health::FILE_CHECK_EVERY);
    loop {
        every.tick().await;
        let helper = helper.clone();
        // A stat and, when due, a write that reaches the disk: off the async workers.
        if tokio::task::spawn_blocking(move || helper.watch_store()).await.is_err() {
            return;
        }
    }
}
