//! `hearth-aggregator [--config FILE] [--init]` serves, `hearth-aggregator init [--config FILE]`
//! creates the database: settings from FILE, then HEARTH_AGG__* variables.

use clap::{CommandFactory, Parser, Subcommand};
use hearth_aggregator::aggregate::StartError;
use hearth_aggregator::config::Config;
use hearth_aggregator::store::{Database, StoreError};
use std::path::PathBuf;
use std::process::ExitCode;

/// What `--help` says after the flags.
const AFTER_HELP: &str = "\
Environment:
  HEARTH_AGG__SECTION__KEY=VALUE  overrides one setting after the file, VALUE read as TOML (else as a string),
                                  e.g. HEARTH_AGG__ROUND__MIN_CLIENTS=500 HEARTH_AGG__LISTEN='\"0.0.0.0:8000\"'
  HEARTH_LOG=FILTER               what is logged to stderr [default: info], e.g. HEARTH_LOG=debug

A server never creates its database: run `hearth-aggregator init` once first (or start with --init).
Once its database is open it listens and prints `hearth-aggregator listening on http://ADDR` on stdout.";

/// Hearth federated aggregator: validates noised model updates, sums them per round and
/// publishes the next model pack.
#[derive(Parser, Debug)]
#[command(name = "hearth-aggregator", version, after_help = AFTER_HELP)]
struct Cli {
    /// TOML settings file [default: none: every setting has its default, see docs/aggregator.md]
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Create the database first if its file does not exist (for demos and tests; a deployment
    /// runs `init` once instead)
    #[arg(long)]
    init: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the database (and its directory) for the configured role, then exit: the schema, a
    /// store identity, and the initial model or the helper's key. Refuses if the file exists. With
    /// measure.enabled, also measurement's database where it is missing, even beside an existing one.
    Init,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Parse before the subscriber starts: --help and usage errors exit here (usage errors with 2).
    let cli = Cli::parse();
    if cli.init && cli.command.is_some() {
        let why = "--init serves after creating a missing database; `init` only creates it";
        Cli::command().error(clap::error::ErrorKind::ArgumentConflict, why).exit();
    }
    hearth_aggregator::log::init();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hearth-aggregator: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!("database: {}", config.database.location());
    let create = match (cli.command, &config.database) {
        (Some(Command::Init), _) => Some(true),
        // Only a missing file is created: an existing one is opened and checked as it is.
        (None, Database::Sqlite(path)) if cli.init && std::fs::symlink_metadata(path).is_err() => Some(false),
        // A PostgreSQL database without a store gets one; `init` refuses one that has a store.
        (None, Database::Postgres(_)) if cli.init => Some(false),
        (None, _) => None,
    };
    // Measurement's own file, made by `init` and `--init` where it is missing: also when the
    // role's database exists, which is how measurement is turned on in a running deployment.
    let measure_missing = config.measure.enabled && std::fs::symlink_metadata(&config.measure.database).is_err();
    if let Some(alone) = create {
        // Database calls block (PostgreSQL's client runs a runtime of its own): off the async worker.
        match (tokio::task::block_in_place(|| hearth_aggregator::init(&config)), alone) {
            (Ok(_), _) => {}
            // With --init, another process that created it first is as good.
            (Err(StartError::Store(StoreError::Exists { .. })), false) => {}
            (Err(StartError::Store(StoreError::Exists { .. })), true) if measure_missing => {}
            (Err(e), _) => {
                eprintln!("hearth-aggregator: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if measure_missing
        && (create.is_some() || cli.init)
        && let Err(e) = tokio::task::block_in_place(|| hearth_aggregator::init_measure(&config))
    {
        eprintln!("hearth-aggregator: measurement database: {e}");
        return ExitCode::FAILURE;
    }
    if create == Some(true) {
        return ExitCode::SUCCESS;
    }
    let prepared = match tokio::task::block_in_place(|| hearth_aggregator::prepare(config.clone())) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hearth-aggregator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hearth-aggregator: cannot listen on {}: {e}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts read the bound address (the port may be 0 in the config) from stdout.
    match listener.local_addr() {
        Ok(addr) => println!("hearth-aggregator listening on http://{addr}"),
        Err(e) => eprintln!("hearth-aggregator: {e}"),
    }
    match prepared.run(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-aggregator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
