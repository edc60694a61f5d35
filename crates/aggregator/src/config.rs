//! Configuration: a TOML file, then `HEARTH_AGG__SECTION__KEY=value` environment overrides
//! (value parsed as TOML, else taken as a string), then validation. Every field has a default,
//! so an empty file is a working local setup.

use crate::store::Database;
use hearth_core::learning::server::Optimizer;
use hearth_core::learning::train::TrainConfig;
use hearth_core::privacy::wire::Encoding;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod ranges;

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
    /// The role's database, made by `hearth-aggregator init` (never by a server): an SQLite file
    /// (resolved to an absolute path at load), or a `postgres://` URL that replicas share.
    pub database: Database,
    /// This process's name among the replicas of its role: the `replica` label of its metrics
    /// and the `replica` of `/healthz` and `/readyz`. Letters, digits and `._:-`, at most 64.
    /// Empty (the default): `<hostname>-<pid>`, which changes at each restart; set it to keep
    /// one series per replica.
    pub replica: String,
    /// Model pack (model.onnx + manifest.json) that `init` seeds the database with.
    pub initial_model: PathBuf,
    /// Demo mode: serve this directory statically at `/`.
    pub www: Option<PathBuf>,
    /// The ad catalog (JSON, `{"ads": [...], "creatives": {...}}`) served whole at
    /// `/v1/catalog.json`; read and checked once at start.
    pub catalog: Option<PathBuf>,
    /// Open connections at most; 0 (the default): the process's open-file limit less
    /// [`FD_RESERVE`], halved when `www` is served, at most 4,096 (`conn::Limits::from_config`).
    /// At the cap, the connection idle longest (no request in flight) is closed to make room for
    /// the new one.
    pub max_connections: usize,
    /// A new connection must deliver a whole request head within this of being accepted, and a
    /// kept-alive one within this of its next head's first byte; else it is closed.
    pub header_timeout_ms: u64,
    /// A kept-alive connection with no request in flight and no byte arriving is closed after
    /// this.
    pub idle_timeout_ms: u64,
    /// Each connection's kernel send buffer (SO_SNDBUF), in bytes, which turns the kernel's
    /// autotuning off for it. Autotuned, a buffer grows to megabytes, so a client that asks for a
    /// model and never reads pinned the whole 1.1 MB answer in kernel memory, and 4,000 of them
    /// exhausted the host's TCP memory (`net.ipv4.tcp_mem`): the kernel starved every socket,
    /// honest ones too. Fixed, such a client pins at most about twice this (the kernel doubles it
    /// for its bookkeeping). The cost is an honest download's speed: about this much per round
    /// trip, 64 KiB at 100 ms is 640 KiB/s, the default pack in under 2 s, at 300 ms about 5 s;
    /// ample for a model each device fetches once per version, in the background. Linux holds it
    /// to `net.core.wmem_max`.
    pub send_buffer_bytes: usize,
    /// A connection whose answer makes no write progress (the client takes no byte) for this
    /// long is closed, reset so that the kernel frees what it could not send.
    pub send_timeout_ms: u64,
    /// Upload deadline from the request head over the slot wait and the body read; slower
    /// senders get 408. The round keeper's verdict is not cut by it.
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
    pub measure: MeasureConfig,
}

/// The leader and helper's shared settings; unused by `single`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecAggConfig {
    /// Leader only: the helper's base URL (`http://host:port/`).
    pub helper_url: Option<String>,
    /// The bearer token the leader presents to the helper's `/v1/aggregate`; the same on both.
    /// 16 to 1,024 characters.
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

/// Private measurement over DAP + Prio3 (`src/measure/`): per-period counts of impressions,
/// clicks, conversions and dismissals per campaign and per slot, released only as noised sums of
/// at least K reports. Leader and helper only; `single` refuses it. Measurement keeps its own
/// SQLite file whatever `database` is, and runs on one leader replica: behind a PostgreSQL
/// `database` shared by several leaders, enable it on exactly one of them (each enabled replica
/// would hold its own reports and collect them on its own).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureConfig {
    pub enabled: bool,
    /// Measurement's SQLite file (made by `init`, resolved to an absolute path at load): the
    /// leader's DAP and collector keys, the period's reports until they are collected, and the
    /// releases; the helper's key, task and counted ids.
    pub database: PathBuf,
    /// One report per browser per period; also DAP's time precision. Leader: the task's period.
    /// Helper: the shortest period it takes (a task with a shorter one is refused: more, smaller
    /// releases than its noise was set for).
    pub period_secs: u64,
    /// Bits per cell: each count is proven in [0, 2^bits), so M = 2^bits − 1 per cell.
    pub bits: u32,
    /// Most nonzero cells one report carries (the device keeps the first recorded).
    pub max_cells: u32,
    /// K: a period with fewer reports is withheld (no counts), its reports deleted unopened.
    pub min_reports: u64,
    /// σ of this server's discrete Gaussian on each cell of its aggregate share, in counts.
    pub noise: f64,
    /// Leader only: the helper's σ, stated in the task (the helper refuses a task naming
    /// another). Devices refuse a task whose ε per period against one curious aggregator, set by
    /// the smaller σ, exceeds their ceiling (4).
    pub helper_noise: f64,
    /// δ of the task's ε statements.
    pub delta: f64,
    /// The publisher's slots counted beside the catalog's campaigns.
    pub slots: Vec<String>,
    /// Leader only: the bearer token of `POST /v1/measure/collect` (collect a period now). Empty
    /// (the default): that endpoint refuses every call. Otherwise 16 to 1,024 characters.
    pub admin_token: String,
    /// Both roles. Leader: reports per aggregation job sent to the helper. Helper: the most
    /// reports it takes in one job (a leader provisioning a task with a larger job size is
    /// refused); a job's body may be this many times the task's honest report part, plus a
    /// kilobyte.
    pub job_size: usize,
    /// Leader only: the largest report upload body, in bytes; checked at start against the
    /// task's own report size (the helper bounds a job by the task's honest report size).
    pub max_report_bytes: usize,
    /// Leader only: reports stored per period at most; an upload beyond is refused
    /// (`period_full`). Bounds the leader's disk and the helper's work per period.
    pub max_reports_per_period: u64,
    /// Leader only: how long one call to the helper (task, aggregation job, aggregate share)
    /// may take before it is retried later.
    pub helper_timeout_ms: u64,
    /// Leader: a period is collected this long after its send window (the next period) has
    /// ended, for late uploads and clock skew. Helper: a period expires 3 periods and this long
    /// after its end, and its unreleased aggregate share is deleted; set it at least the
    /// leader's.
    pub grace_secs: u64,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            enabled: false,
            database: "target/aggregator/measure.db".into(),
            period_secs: 86_400,
            bits: 2,
            max_cells: 16,
            min_reports: 100,
            noise: 50.0,
            helper_noise: 50.0,
            delta: 1e-9,
            slots: vec!["in-article".into(), "sidebar".into()],
            admin_token: String::new(),
            job_size: 256,
            max_report_bytes: 1 << 20,
            max_reports_per_period: 1_000_000,
            helper_timeout_ms: 60_000,
            grace_secs: 600,
        }
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
            database: Database::Sqlite("target/aggregator/hearth.db".into()),
            replica: String::new(),
            initial_model: "models/default".into(),
            www: None,
            catalog: None,
            max_connections: 0,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            send_buffer_bytes: 64 * 1024,
            send_timeout_ms: 10_000,
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
            measure: MeasureConfig::default(),
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
    /// Well-formed settings that cannot run safely: a number outside its range (named with its
    /// key), a path that is not there, a role's missing setting.
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
        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        // Resolved once, here: a relative path read from another directory would name another
        // file (before `init`, a fresh store); the start-up log prints this one.
        if let Database::Sqlite(path) = &config.database {
            config.database = Database::Sqlite(
                std::path::absolute(path).map_err(|e| ConfigError::Invalid(format!("database = {path:?}: {e}")))?,
            );
        }
        config.measure.database = std::path::absolute(&config.measure.database)
            .map_err(|e| ConfigError::Invalid(format!("measure.database = {:?}: {e}", config.measure.database)))?;
        config.validate()?;
        if config.replica.is_empty() {
            config.replica = default_replica(&rustix::system::uname().nodename().to_string_lossy(), std::process::id());
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ranges::check(self)?;
        let name_char = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
        if self.replica.len() > 64 || !self.replica.chars().all(name_char) {
            return Err(ConfigError::Invalid(format!(
                "replica = {:?}: at most 64 letters, digits and `._:-` (it is a metrics label)",
                self.replica
            )));
        }
        check_listen(&self.listen)?;
        if let Some(www) = &self.www {
            existing_dir("www", www)?;
        }
        if let Some(catalog) = &self.catalog {
            readable_file("catalog", catalog)?;
        }
        // hearth-core's own rules, which devices apply to the round task too.
        self.round.train.validate().map_err(|e| ConfigError::Invalid(format!("round.train: {e}")))?;
        self.optimizer.validate().map_err(|e| ConfigError::Invalid(format!("optimizer: {e}")))?;
        if self.role != Role::Single {
            self.validate_secagg()?;
        }
        if self.measure.enabled {
            self.validate_measure()?;
        }
        Ok(())
    }

    fn validate_measure(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let m = &self.measure;
        match self.role {
            Role::Single => {
                return bad(
                    "measure.enabled needs role = \"leader\" or \"helper\": a single server would read every report".into()
                );
            }
            Role::Leader if self.catalog.is_none() => {
                return bad("measure.enabled on a leader needs `catalog`: its campaigns are the task's".into());
            }
            _ => {}
        }
        if self.database == Database::Sqlite(m.database.clone()) {
            return bad(format!("measure.database = {:?} is `database`: measurement keeps a file of its own", m.database));
        }
        if let Some(slot) = m.slots.iter().find(|s| s.is_empty() || s.len() > hearth_core::device::event::MAX_TEXT) {
            return bad(format!("measure.slots: {slot:?} must be 1 to {} bytes", hearth_core::device::event::MAX_TEXT));
        }
        Ok(())
    }

    fn validate_secagg(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let s = &self.secagg;
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

/// `<hostname>-<pid>` as a metrics label allows it: other characters made `-`, the host name
/// cut so the whole fits in 64.
fn default_replica(hostname: &str, pid: u32) -> String {
    let suffix = format!("-{pid}");
    let host: String = hostname
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '-' })
        .take(64 - suffix.len())
        .collect();
    format!("{host}{suffix}")
}

/// `listen` is an IP socket address (`0.0.0.0:8000`, `[::1]:8000`) or a DNS name and port
/// (`localhost:8000`), which the listener resolves.
fn check_listen(listen: &str) -> Result<(), ConfigError> {
    let host_port = listen.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok() && !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    });
    if host_port || listen.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!("listen = {listen:?} is neither ADDRESS:PORT nor HOST:PORT")))
}

/// The setting `key` names an existing directory.
fn existing_dir(key: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::Invalid(format!("{key} = {path:?} is not a directory"))),
        Err(e) => Err(ConfigError::Invalid(format!("{key} = {path:?}: {e}"))),
    }
}

/// The setting `key` names a regular file this process can open. The kind is checked first: a
/// FIFO would block the open.
fn readable_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            std::fs::File::open(path).map_err(|e| ConfigError::Invalid(format!("{key} = {path:?} cannot be read: {e}")))?;
            Ok(())
        }
        Ok(_) => Err(ConfigError::Invalid(format!("{key} = {path:?} is not a file"))),
        Err(e) => Err(ConfigError::Invalid(format!("{key} = {path:?}: {e}"))),
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

    /// The error that `settings` over the defaults get; panics where they are accepted.
    fn refusal(settings: &[(&str, &str)]) -> String {
        match Config::load(None, env(settings)) {
            Ok(_) => panic!("{settings:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    /// The environment variable that sets `key`: `round.min_clients` → `HEARTH_AGG__ROUND__MIN_CLIENTS`.
    fn variable(key: &str) -> String {
        format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
    }

    /// Settings that make `section` (an Adam table) whole and valid, so that one key of it can be
    /// set out of range.
    fn adam(section: &str) -> Vec<(String, &'static str)> {
        [("lr", "0.01"), ("beta1", "0.9"), ("beta2", "0.999"), ("eps", "1e-8")]
            .into_iter()
            .map(|(key, value)| (variable(&format!("{section}.{key}")), value))
            .collect()
    }

    #[test]
    fn the_default_replica_name_is_always_a_valid_label() {
        let long = "h".repeat(64);
        for host in ["web-1.example", long.as_str(), "under_score and space", ""] {
            let name = default_replica(host, u32::MAX);
            assert!(name.len() <= 64 && name.ends_with("-4294967295"), "{name}");
            let config = Config { replica: name.clone(), ..Config::default() };
            config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn unsafe_or_unknown_settings_are_refused() {
        assert_eq!(
            refusal(&[("HEARTH_AGG__ROUND__DEADLINE_SECS", "9223372036854775807")]),
            "invalid configuration: round.deadline_secs = 9223372036854775807 is outside 1..=2592000 (30 days)"
        );
        let owned = |pairs: &[(&str, &'static str)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<Vec<_>>();
        let none = Vec::new();
        let fed_avg = owned(&[("HEARTH_AGG__OPTIMIZER__KIND", "\"fed_avg\"")]);
        let fed_adam = owned(&[
            ("HEARTH_AGG__OPTIMIZER__KIND", "\"fed_adam\""),
            ("HEARTH_AGG__OPTIMIZER__LR", "0.01"),
            ("HEARTH_AGG__OPTIMIZER__BETA1", "0.9"),
            ("HEARTH_AGG__OPTIMIZER__BETA2", "0.99"),
            ("HEARTH_AGG__OPTIMIZER__TAU", "0.001"),
        ]);
        let leader = owned(&[
            ("HEARTH_AGG__ROLE", "\"leader\""),
            ("HEARTH_AGG__SECAGG__HELPER_URL", "\"http://127.0.0.1:1/\""),
            ("HEARTH_AGG__SECAGG__TOKEN", "\"0123456789abcdef\""),
        ]);
        let (reconstruction, global) = (adam("round.train.reconstruction"), adam("round.train.global"));
        // The cases first, then at least one value out of range for every numeric key.
        for (base, key, value) in [
            (&none, "round.deadline_secs", "9223372036854775807"),
            (&none, "upload_concurrency", "4611686018427387904"),
            (&none, "queue", "4611686018427387904"),
            (&none, "round.noise_multiplier", "1e30"),
            (&none, "round.clip_norm", "1e-45"),
            (&fed_avg, "optimizer.lr", "3e38"),
            (&global, "round.train.global.lr", "3e38"),
            (&none, "max_connections", "1000001"),
            (&none, "header_timeout_ms", "99"),
            (&none, "idle_timeout_ms", "600001"),
            (&none, "send_buffer_bytes", "4095"),
            (&none, "send_buffer_bytes", "4194305"),
            (&none, "send_timeout_ms", "99"),
            (&none, "body_timeout_ms", "0"),
            (&none, "min_body_rate", "0"),
            (&none, "body_grace_ms", "60001"),
            (&none, "upload_concurrency", "0"),
            (&none, "upload_wait_ms", "60001"),
            (&none, "queue", "0"),
            (&none, "model_cache_versions", "65"),
            (&none, "round.min_clients", "9"),
            (&none, "round.min_clients", "1000001"),
            (&none, "round.deadline_secs", "0"),
            (&none, "round.clip_norm", "-1"),
            (&none, "round.clip_norm", "nan"),
            (&none, "round.clip_norm", "10.5"),
            (&none, "round.noise_multiplier", "0.5"),
            (&none, "round.noise_multiplier", "inf"),
            (&none, "round.min_events", "0"),
            (&none, "round.sampling_rate", "0"),
            (&none, "round.sampling_rate", "1.5"),
            (&none, "round.train.reconstruction_steps", "1001"),
            (&reconstruction, "round.train.reconstruction.lr", "0"),
            (&reconstruction, "round.train.reconstruction.beta1", "1"),
            (&reconstruction, "round.train.reconstruction.eps", "0"),
            (&global, "round.train.global.beta2", "-0.1"),
            (&none, "round.train.local_l2", "2"),
            (&none, "round.train.epochs", "0"),
            (&none, "round.train.batch_size", "4097"),
            (&fed_avg, "optimizer.lr", "0"),
            (&fed_adam, "optimizer.lr", "11"),
            (&fed_adam, "optimizer.beta1", "1"),
            (&fed_adam, "optimizer.beta2", "nan"),
            (&fed_adam, "optimizer.tau", "0"),
            (&none, "privacy.epsilon_budget", "1000"),
            (&none, "privacy.epsilon_budget", "0"),
            (&none, "privacy.delta", "1"),
            (&none, "privacy.delta", "0"),
            (&none, "secagg.noise_multiplier", "3.9"),
            (&none, "secagg.noise_multiplier", "101"),
            (&none, "secagg.helper_timeout_ms", "0"),
            (&none, "measure.period_secs", "9"),
            (&none, "measure.period_secs", "2678401"),
            (&none, "measure.bits", "0"),
            (&none, "measure.bits", "5"),
            (&none, "measure.max_cells", "0"),
            (&none, "measure.max_cells", "65"),
            (&none, "measure.min_reports", "9"),
            (&none, "measure.noise", "0.5"),
            (&none, "measure.noise", "inf"),
            (&none, "measure.helper_noise", "nan"),
            (&none, "measure.delta", "1e-4"),
            (&none, "measure.job_size", "0"),
            (&none, "measure.max_report_bytes", "1023"),
            (&none, "measure.max_reports_per_period", "0"),
            (&none, "measure.max_reports_per_period", "1000000001"),
            (&none, "measure.helper_timeout_ms", "99"),
            (&none, "measure.grace_secs", "604801"),
            (&none, "measure.admin_token", "\"fifteen-chars!!\""),
            (&leader, "secagg.token", "\"fifteen-chars!!\""),
            (&none, "listen", "\"8000\""),
            (&none, "listen", "\"localhost\""),
            (&none, "listen", "\":8000\""),
            (&none, "listen", "\"my host:8000\""),
            (&none, "listen", "\"127.0.0.1:65536\""),
        ] {
            let var = variable(key);
            let mut settings: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            settings.push((&var, value));
            let message = refusal(&settings);
            assert!(message.starts_with(&format!("invalid configuration: {key} ")), "{key} = {value}: {message}");
        }
        // The token never appears in its error.
        let mut settings: Vec<(&str, &str)> = leader.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        settings.push(("HEARTH_AGG__SECAGG__TOKEN", "\"s3cret\""));
        assert!(!refusal(&settings).contains("s3cret"));
        for (key, value) in
            [("HEARTH_AGG__ROLE", "\"leader\""), ("HEARTH_AGG__ROLE", "\"boss\""), ("HEARTH_AGG__NO_SUCH_KEY", "1")]
        {
            assert!(Config::load(None, env(&[(key, value)])).is_err(), "{key}={value} accepted");
        }
        assert_eq!(Config::load(None, env(&[])).unwrap().round.min_clients, 100);
    }

    #[test]
    fn measurement_needs_a_leader_with_a_catalog_or_a_helper_and_a_file_of_its_own() {
        let leader = [
            ("HEARTH_AGG__ROLE", "\"leader\""),
            ("HEARTH_AGG__SECAGG__HELPER_URL", "\"http://127.0.0.1:1/\""),
            ("HEARTH_AGG__SECAGG__TOKEN", "\"0123456789abcdef\""),
            ("HEARTH_AGG__MEASURE__ENABLED", "true"),
        ];
        let single = refusal(&[("HEARTH_AGG__MEASURE__ENABLED", "true")]);
        assert!(single.contains("measure.enabled needs role"), "{single}");
        let no_catalog = refusal(&leader);
        assert!(no_catalog.contains("needs `catalog`"), "{no_catalog}");

        let dir = std::env::temp_dir().join(format!("hearth-config-measure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let catalog = format!("{:?}", dir.join("catalog.json"));
        std::fs::write(dir.join("catalog.json"), "{}").unwrap();
        let with_catalog: Vec<(&str, &str)> = leader.iter().copied().chain([("HEARTH_AGG__CATALOG", catalog.as_str())]).collect();
        let same_file = format!("{:?}", dir.join("one.db"));
        let shared: Vec<(&str, &str)> = with_catalog
            .iter()
            .copied()
            .chain([("HEARTH_AGG__DATABASE", same_file.as_str()), ("HEARTH_AGG__MEASURE__DATABASE", same_file.as_str())])
            .collect();
        let shared = refusal(&shared);
        let empty_slot: Vec<(&str, &str)> =
            with_catalog.iter().copied().chain([("HEARTH_AGG__MEASURE__SLOTS", "[\"sidebar\", \"\"]")]).collect();
        let empty_slot = refusal(&empty_slot);
        let leader_ok = Config::load(None, env(&with_catalog));
        let helper_ok = Config::load(
            None,
            env(&[
                ("HEARTH_AGG__ROLE", "\"helper\""),
                ("HEARTH_AGG__SECAGG__TOKEN", "\"0123456789abcdef\""),
                ("HEARTH_AGG__MEASURE__ENABLED", "true"),
            ]),
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(shared.contains("measurement keeps a file of its own"), "{shared}");
        assert!(empty_slot.starts_with("invalid configuration: measure.slots: \"\""), "{empty_slot}");
        let leader_ok = leader_ok.unwrap();
        assert!(leader_ok.measure.database.is_absolute());
        helper_ok.unwrap();
    }

    #[test]
    fn the_ends_of_each_range_are_accepted() {
        for (key, value) in [
            ("HEARTH_AGG__ROUND__DEADLINE_SECS", "2592000"),
            ("HEARTH_AGG__UPLOAD_CONCURRENCY", "4096"),
            ("HEARTH_AGG__QUEUE", "4096"),
            ("HEARTH_AGG__MAX_CONNECTIONS", "1000000"),
            ("HEARTH_AGG__HEADER_TIMEOUT_MS", "100"),
            ("HEARTH_AGG__SEND_BUFFER_BYTES", "4096"),
            ("HEARTH_AGG__SEND_BUFFER_BYTES", "4194304"),
            ("HEARTH_AGG__SEND_TIMEOUT_MS", "600000"),
            ("HEARTH_AGG__ROUND__CLIP_NORM", "1e-4"),
            ("HEARTH_AGG__ROUND__CLIP_NORM", "10"),
            ("HEARTH_AGG__ROUND__NOISE_MULTIPLIER", "100"),
            ("HEARTH_AGG__PRIVACY__EPSILON_BUDGET", "100"),
            ("HEARTH_AGG__PRIVACY__DELTA", "1e-3"),
            ("HEARTH_AGG__LISTEN", "\"localhost:8000\""),
            ("HEARTH_AGG__LISTEN", "\"[::1]:0\""),
            ("HEARTH_AGG__MEASURE__PERIOD_SECS", "10"),
            ("HEARTH_AGG__MEASURE__BITS", "4"),
            ("HEARTH_AGG__MEASURE__MAX_CELLS", "64"),
            ("HEARTH_AGG__MEASURE__MIN_REPORTS", "10"),
            ("HEARTH_AGG__MEASURE__DELTA", "1e-5"),
            ("HEARTH_AGG__MEASURE__ADMIN_TOKEN", "\"0123456789abcdef\""),
        ] {
            if let Err(e) = Config::load(None, env(&[(key, value)])) {
                panic!("{key}={value}: {e}");
            }
        }
    }

    #[test]
    fn www_must_be_a_directory_and_the_catalog_a_readable_file() {
        let dir = std::env::temp_dir().join(format!("hearth-config-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("catalog.json");
        std::fs::write(&file, "{}").unwrap();
        let (dir_value, file_value, missing) = (format!("{dir:?}"), format!("{file:?}"), format!("{:?}", dir.join("gone")));
        for (key, value) in [("www", &missing), ("www", &file_value), ("catalog", &missing), ("catalog", &dir_value)] {
            let message = refusal(&[(&variable(key), value)]);
            assert!(message.starts_with(&format!("invalid configuration: {key} = {value}")), "{key} = {value}: {message}");
        }
        let both = Config::load(None, env(&[("HEARTH_AGG__WWW", &dir_value), ("HEARTH_AGG__CATALOG", &file_value)]));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(both.is_ok(), "{both:?}");
    }
}
