//! Configuration: a TOML file, then `HEARTH_AGG__SECTION__KEY=value` environment overrides
//! (value parsed as TOML, else taken as a string), then validation. Every field has a default,
//! so an empty file is a working local setup.

use hearth_core::learning::server::Optimizer;
use hearth_core::learning::train::TrainConfig;
use hearth_core::privacy::ledger::DevicePolicy;
use hearth_core::privacy::wire::Encoding;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// No aggregate is ever released from fewer devices than this, whatever the file says.
pub const MIN_CLIENTS_FLOOR: u64 = 10;
/// File descriptors kept back from `max_connections = 0` for the listener, the database, the
/// helper client and logs.
pub const FD_RESERVE: usize = 64;
/// Environment variables with this prefix override the file; `__` separates nested keys.
pub const ENV_PREFIX: &str = "HEARTH_AGG__";

/// Which part of the protocol this process plays (see docs/secure-aggregation.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One server reads every device's clipped and noised update: today's plaintext path, kept as
    /// the baseline. Its privacy against itself is only each device's own noise.
    #[default]
    Single,
    /// Takes devices' reports (its share and the helper's sealed seed), sums its shares, asks
    /// the helper for its aggregate share at K, and publishes the model.
    Leader,
    /// Holds the HPKE key, opens the seeds the leader relays, and releases one noised aggregate
    /// share per round, for at least K fresh reports.
    Helper,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub role: Role,
    pub listen: String,
    /// SQLite database file; created with its directory on first start.
    pub database: PathBuf,
    /// Model pack (model.onnx + manifest.json) that seeds an empty database.
    pub initial_model: PathBuf,
    /// Demo mode: serve this directory statically at `/`.
    pub www: Option<PathBuf>,
    /// The ad catalog (JSON, `{"ads": [...], "creatives": {...}}`) served whole at
    /// `/v1/catalog.json`; read and checked once at start.
    pub catalog: Option<PathBuf>,
    /// Open connections at most; 0 (the default): the process's open-file limit less
    /// [`FD_RESERVE`]. At the cap, the connection idle longest (no request in flight) is closed
    /// to make room for the new one.
    pub max_connections: usize,
    /// A new connection must deliver a whole request head within this of being accepted, and a
    /// kept-alive one within this of its next head's first byte; else it is closed.
    pub header_timeout_ms: u64,
    /// A kept-alive connection with no request in flight and no byte arriving is closed after
    /// this.
    pub idle_timeout_ms: u64,
    /// Whole-upload deadline, from the request head to the verdict (slot wait and body read
    /// included); slower senders get 408.
    pub body_timeout_ms: u64,
    /// From `body_grace_ms` after the head on, an upload body must keep arriving at this many
    /// bytes per second on average, or it is cut off with 408.
    pub min_body_rate: u64,
    /// See `min_body_rate`.
    pub body_grace_ms: u64,
    /// Uploads holding a slot (read past their first 64 KiB, validated or waiting for the keeper)
    /// at once; this bounds upload memory under any load.
    pub upload_concurrency: usize,
    /// Longest wait for an upload slot; then 503 with Retry-After.
    pub upload_wait_ms: u64,
    /// Published model versions kept in memory for `/v1/models/{v}/…` besides the current one.
    pub model_cache_versions: usize,
    /// Validated uploads waiting for the keeper; beyond it the server answers 503 with
    /// Retry-After.
    pub queue: usize,
    pub round: RoundConfig,
    pub optimizer: Optimizer,
    pub privacy: PrivacyConfig,
    pub secagg: SecAggConfig,
}

/// The leader and helper's shared settings; unused by `single`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecAggConfig {
    /// Leader only: the helper's base URL (`http://host:port/`).
    pub helper_url: Option<String>,
    /// The bearer token the leader presents to the helper's `/v1/aggregate`; the same on both.
    /// At least 16 characters.
    pub token: String,
    /// z of this server's own discrete Gaussian per release, in units of C̃; at least the
    /// device floor (`DevicePolicy::RELEASE.min_server_noise`), or devices refuse the round.
    pub noise_multiplier: f32,
    /// How long the leader waits for the helper's answer before retrying later.
    pub helper_timeout_ms: u64,
}

impl Default for SecAggConfig {
    fn default() -> Self {
        SecAggConfig { helper_url: None, token: String::new(), noise_multiplier: 8.0, helper_timeout_ms: 30_000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoundConfig {
    /// K: accepted updates that close a round.
    pub min_clients: u64,
    /// A round still below K this long after it opened is abandoned.
    pub deadline_secs: u64,
    pub clip_norm: f32,
    pub noise_multiplier: f32,
    pub min_events: usize,
    pub encoding: Encoding,
    pub train: TrainConfig,
    /// q: each device joins a round with this probability, by its own coin. The accountant of the
    /// published models amplifies by it; set it near K / (devices that visit per round).
    pub sampling_rate: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Central ε the released models may spend in total; training stops before exceeding it.
    pub epsilon_budget: f64,
    pub delta: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            role: Role::Single,
            listen: "127.0.0.1:8000".into(),
            database: "target/aggregator/hearth.db".into(),
            initial_model: "models/default".into(),
            www: None,
            catalog: None,
            max_connections: 0,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 30_000,
            min_body_rate: 32 * 1024,
            body_grace_ms: 2_000,
            upload_concurrency: 64,
            upload_wait_ms: 1_000,
            model_cache_versions: 8,
            queue: 64,
            round: RoundConfig::default(),
            optimizer: Optimizer::default(),
            privacy: PrivacyConfig::default(),
            secagg: SecAggConfig::default(),
        }
    }
}

impl Default for RoundConfig {
    fn default() -> Self {
        RoundConfig {
            min_clients: 100,
            deadline_secs: 24 * 3600,
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            min_events: 20,
            encoding: Encoding::F32,
            train: TrainConfig::default(),
            sampling_rate: 1.0,
        }
    }
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig { epsilon_budget: 8.0, delta: 1e-6 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file or an environment override is not TOML of the expected shape (unknown keys too).
    #[error("{0}")]
    Parse(String),
    /// Well-formed settings that cannot run safely (K below the floor, C or z out of range, ...).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path` (if given), applies the environment overrides in `env`, validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?,
            None => String::new(),
        };
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        for (key, value) in env {
            if let Some(path) = key.strip_prefix(ENV_PREFIX) {
                set_path(&mut table, &path.to_ascii_lowercase(), &value)?;
            }
        }
        let config: Config = table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let r = &self.round;
        if r.min_clients < MIN_CLIENTS_FLOOR {
            return bad(format!("round.min_clients = {} is below the floor of {MIN_CLIENTS_FLOOR}", r.min_clients));
        }
        if !(r.clip_norm.is_finite() && r.clip_norm > 0.0) {
            return bad(format!("round.clip_norm = {} must be finite and positive", r.clip_norm));
        }
        // A single server's release has only the devices' noise: without it, no finite ε. A
        // leader's devices may add none (the servers' noise protects the release).
        let least = if self.role == Role::Single { DevicePolicy::RELEASE.min_plaintext_noise } else { 0.0 };
        if !(r.noise_multiplier.is_finite() && r.noise_multiplier >= least) {
            return bad(format!("round.noise_multiplier = {} must be finite and at least {least}", r.noise_multiplier));
        }
        if r.deadline_secs == 0 || self.body_timeout_ms == 0 || self.queue == 0 || self.upload_concurrency == 0 {
            return bad("round.deadline_secs, body_timeout_ms, upload_concurrency and queue must be positive".into());
        }
        r.train.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.optimizer.validate().map_err(|e| ConfigError::Invalid(format!("optimizer: {e}")))?;
        let p = &self.privacy;
        if !(p.epsilon_budget.is_finite() && p.epsilon_budget > 0.0) {
            return bad(format!("privacy.epsilon_budget = {} must be finite and positive", p.epsilon_budget));
        }
        if !(p.delta > 0.0 && p.delta < 1.0) {
            return bad(format!("privacy.delta = {} must be in (0, 1)", p.delta));
        }
        if !(r.sampling_rate > 0.0 && r.sampling_rate <= 1.0) {
            return bad(format!("round.sampling_rate = {} must be in (0, 1]", r.sampling_rate));
        }
        if self.role != Role::Single {
            self.validate_secagg()?;
        }
        Ok(())
    }

    fn validate_secagg(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let s = &self.secagg;
        let floor = DevicePolicy::RELEASE.min_server_noise;
        if !(s.noise_multiplier.is_finite() && s.noise_multiplier >= floor) {
            return bad(format!("secagg.noise_multiplier = {} is below the devices' floor of {floor}", s.noise_multiplier));
        }
        if s.token.len() < 16 {
            return bad("secagg.token must be set, at least 16 characters, the same on leader and helper".into());
        }
        if s.helper_timeout_ms == 0 {
            return bad("secagg.helper_timeout_ms must be positive".into());
        }
        if self.round.min_clients > crate::helper::MAX_BATCH_REPORTS as u64 {
            return bad(format!(
                "round.min_clients = {} is above the {} reports a helper batch may hold",
                self.round.min_clients,
                crate::helper::MAX_BATCH_REPORTS
            ));
        }
        match (self.role, &s.helper_url) {
            (Role::Leader, None) => bad("a leader needs secagg.helper_url".into()),
            (Role::Leader, Some(u)) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                bad(format!("secagg.helper_url = {u:?} is not an http(s) URL"))
            }
            (Role::Helper, Some(_)) => bad("secagg.helper_url is a leader setting".into()),
            _ => Ok(()),
        }
    }
}

/// Sets `a__b__c` in `table` to `value`, read as a TOML value where it parses as one.
fn set_path(table: &mut toml::Table, path: &str, value: &str) -> Result<(), ConfigError> {
    let mut keys: Vec<&str> = path.split("__").collect();
    let last = keys.pop().filter(|k| !k.is_empty()).ok_or_else(|| ConfigError::Parse(format!("empty key in {path}")))?;
    let mut at = table;
    for key in keys {
        let entry = at.entry(key).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry.as_table_mut().ok_or_else(|| ConfigError::Parse(format!("{key} in {path} is not a table")))?;
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.into()));
    at.insert(last.into(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_overrides_the_file_and_nested_keys() {
        let dir = std::env::temp_dir().join(format!("hearth-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[round]\nmin_clients = 50\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("HEARTH_AGG__LISTEN", "0.0.0.0:9"),
                ("HEARTH_AGG__ROUND__CLIP_NORM", "0.5"),
                ("HEARTH_AGG__OPTIMIZER__KIND", "fed_adam"),
                ("HEARTH_AGG__OPTIMIZER__LR", "0.01"),
                ("HEARTH_AGG__OPTIMIZER__BETA1", "0.9"),
                ("HEARTH_AGG__OPTIMIZER__BETA2", "0.99"),
                ("HEARTH_AGG__OPTIMIZER__TAU", "0.001"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9");
        assert_eq!(c.round.min_clients, 50);
        assert_eq!(c.round.clip_norm, 0.5);
        assert_eq!(c.optimizer, Optimizer::FedAdam { lr: 0.01, beta1: 0.9, beta2: 0.99, tau: 0.001 });
    }

    #[test]
    fn unsafe_or_unknown_settings_are_refused() {
        for (key, value) in [
            ("HEARTH_AGG__ROUND__MIN_CLIENTS", "9"),
            ("HEARTH_AGG__ROUND__NOISE_MULTIPLIER", "0"),
            ("HEARTH_AGG__ROUND__CLIP_NORM", "-1"),
            ("HEARTH_AGG__PRIVACY__DELTA", "1"),
            ("HEARTH_AGG__ROUND__SAMPLING_RATE", "0"),
            ("HEARTH_AGG__ROUND__SAMPLING_RATE", "1.5"),
            ("HEARTH_AGG__ROLE", "\"leader\""),
            ("HEARTH_AGG__ROLE", "\"boss\""),
            ("HEARTH_AGG__OPTIMIZER__LR", "0"),
            ("HEARTH_AGG__NO_SUCH_KEY", "1"),
        ] {
            assert!(Config::load(None, env(&[(key, value)])).is_err(), "{key}={value} accepted");
        }
        assert_eq!(Config::load(None, env(&[])).unwrap().round.min_clients, 100);
    }
}
