//! `hearth-aggregator [--config FILE]`: settings from FILE, then HEARTH_AGG__* variables.

use clap::Parser;
use hearth_aggregator::config::Config;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// What `--help` says after the flags.
const AFTER_HELP: &str = "\
Environment:
  HEARTH_AGG__SECTION__KEY=VALUE  overrides one setting after the file, VALUE read as TOML (else as a string),
                                  e.g. HEARTH_AGG__ROUND__MIN_CLIENTS=500 HEARTH_AGG__LISTEN='\"0.0.0.0:8000\"'
  HEARTH_LOG=FILTER               what is logged to stderr [default: info], e.g. HEARTH_LOG=debug

Once listening it prints `hearth-aggregator listening on http://ADDR` on stdout.";

/// Hearth federated aggregator: validates noised model updates, sums them per round and
/// publishes the next model pack.
#[derive(Parser, Debug)]
#[command(name = "hearth-aggregator", version, after_help = AFTER_HELP)]
struct Cli {
    /// TOML settings file [default: none: every setting has its default, see docs/aggregator.md]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Parse before the subscriber starts: --help and usage errors exit here (usage errors with 2).
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal (and not with NO_COLOR), never into
        // files, pipes or journald.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
        .init();
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hearth-aggregator: {e}");
            return ExitCode::from(2);
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
    match hearth_aggregator::serve(config, listener, shutdown_signal()).await {
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
