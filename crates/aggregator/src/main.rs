//! `hearth-aggregator [--config FILE]`: settings from FILE, then HEARTH_AGG__* variables.

use hearth_aggregator::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [] => None,
        [flag, file] if flag == "--config" => Some(PathBuf::from(file)),
        _ => {
            eprintln!("usage: hearth-aggregator [--config FILE]   (overrides: HEARTH_AGG__SECTION__KEY=value)");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(path.as_deref(), std::env::vars()) {
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
