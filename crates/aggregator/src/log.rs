//! Logging to stderr, filtered by `HEARTH_LOG`. The server promises never to record a client's
//! address: its own code never logs one (the accept loop drops it at once), and every other
//! crate (hyper, axum, tower, tokio, ureq, ...) is held to warnings and errors whatever
//! `HEARTH_LOG` asks, because at debug and trace some of them name peers.

use std::io::IsTerminal;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable holding the filter directives; `info` when unset or malformed.
pub const FILTER_VAR: &str = "HEARTH_LOG";

/// Installs the stderr logger (and routes the `log` crate's records through it). Call once, at
/// start.
pub fn init() {
    let third_party_warnings_only = Targets::new().with_default(Level::WARN).with_target(env!("CARGO_CRATE_NAME"), Level::TRACE);
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env(FILTER_VAR).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal (and not with NO_COLOR), never into
        // files, pipes or journald.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
        .finish()
        .with(third_party_warnings_only)
        .init();
}
