//! `xtask bench-aggregator`: the upload load generator. Starts the release `hearth-aggregator`
//! on fresh databases for each load level and drives it from this (separate) process with
//! closed-loop clients on loopback; writes target/bench/aggregator.json.
//!
//! Two paths, side by side at each level, under the same rounds of K uploads (`--min-clients`,
//! default 100: rounds close and a new pack is published during the measured window, so closes
//! are part of the load; at 10,000 no round closes in the window, so it measures the intake
//! alone):
//! - `plaintext`: a `single` server, each client re-sending an honest update (built by
//!   hearth-core for the default pack) under a fresh nonce, f32 and quantized. The same load also
//!   runs against `xtask http-sink` (engine `http-sink`), which reads and discards bodies: the
//!   transport ceiling of the machine.
//! - `secagg`: a `leader` with its `helper` (each its own process and database). Reports are
//!   pre-built: the device's costly part (clip, rounding, the mask) is done before the clock
//!   starts for a pool of shares; each upload then takes a pool share under a fresh report id
//!   with its seed sealed to the helper for the round it is sent in (an HPKE seal, about 0.1 ms,
//!   in place of the plaintext path's fresh nonce) and is encoded like any report. At each K the
//!   leader asks the helper for its aggregate share, as in production. The leader announces no
//!   device noise (a leader's devices may add none): a pooled share sent twice in one round then
//!   adds no correlated noise that the leader's plausibility check would rightly refuse, and
//!   neither server's work depends on the devices' noise.
//!
//! Each path runs on each backend (`--backend`): SQLite, one process per role on its own file;
//! and PostgreSQL (one throwaway cluster for the run, a fresh database per role and level), with
//! one replica of the front role (`single` or `leader`), then three behind nginx, the leader's
//! helper one replica on a database of its own. Every process's peak RSS is a record (`process`:
//! `replica-N`, `helper`, `nginx`, `postgres`: the cluster's processes' summed PSS, sampled).
//! A PostgreSQL run then shows that the database's work per upload stays flat as rounds
//! accumulate, and scales its cost per upload to a sizing estimate (see [`dbcost`]).
//!
//! Separately, the helper's own cost: `/v1/aggregate` for one batch of 100 reports (the bench's
//! secure round, whatever `--min-clients`).

mod dbcost;
mod replicas;

use crate::bench::{BENCH_SECAGG, bench_secagg_task, commit, write_records};
use crate::load_pack;
use hearth_core::learning::round::{HelperConfig, RoundTask};
use hearth_core::privacy::discrete;
use hearth_core::privacy::noise::{ByteSource, Sampler};
use hearth_core::privacy::privatize::build_update;
use hearth_core::privacy::seal::{HelperKey, SEED_LEN, hex};
use hearth_core::privacy::shares::{Binding, MASK, Report, SecAggTask, build_report, expand};
use hearth_core::privacy::wire::{Encoding, Update};
use replicas::{Nginx, Pg, PssPeak, start_replicas};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const LEVELS: [usize; 3] = [8, 64, 256];
/// The bearer token the bench's leader presents to its helper.
const TOKEN: &str = "hearth-bench-token-0123456789";
/// Distinct pre-built shares the secure clients cycle through.
const SHARE_POOL: usize = 32;
/// Batches the helper is timed on, after one warm-up batch.
const HELPER_BATCHES: usize = 5;
/// Clients run this long before their measured window opens.
pub(crate) const WARM_UP: Duration = Duration::from_secs(1);
/// A persistent client's pause after a failed upload (see [`drive`]), as a device would back off.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Where the run's PostgreSQL cluster lives (short: its unix socket path must fit 107 bytes).
const PG_DIR: &str = "target/bench/pg";
/// The front role's replicas on PostgreSQL: one alone, then several behind nginx.
const PG_REPLICAS: [usize; 2] = [1, 3];

/// What one load level runs against.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// A `single` aggregator, plaintext updates of this encoding.
    Single(Encoding),
    /// `xtask http-sink`, plaintext updates of this encoding.
    Sink(Encoding),
    /// A `leader` and its `helper`, reports.
    Leader,
}

/// The database backends `--backend` takes.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
enum BackendArg {
    Sqlite,
    Postgres,
}

/// Where one load level's servers keep their state.
#[derive(Clone, Copy)]
enum Deploy<'a> {
    /// One process per role, each on its own SQLite file.
    Sqlite,
    /// `replicas` processes of the front role sharing one PostgreSQL database, behind nginx when
    /// there are several; a leader's helper is one more process on a database of its own.
    Postgres { pg: &'a Pg, nginx: &'a Path, replicas: usize },
}

impl Deploy<'_> {
    fn backend(&self) -> &'static str {
        match self {
            Deploy::Sqlite => "sqlite",
            Deploy::Postgres { .. } => "postgres",
        }
    }

    fn replicas(&self) -> usize {
        match self {
            Deploy::Sqlite => 1,
            Deploy::Postgres { replicas, .. } => *replicas,
        }
    }
}

/// One process's peak RSS after a level.
struct Process {
    /// `replica-N` (the front role's), `helper`, `nginx`, `postgres` or `http-sink`.
    name: String,
    role: &'static str,
    peak_rss: u64,
}

struct Run {
    accepted: u64,
    busy: u64,
    latencies_ms: Vec<f64>,
    processes: Vec<Process>,
    rounds: u64,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the JSON records go.
    #[arg(long, value_name = "FILE", default_value = "target/bench/aggregator.json")]
    out: PathBuf,
    /// The aggregator binary to start (build it with cargo build --release -p hearth-aggregator).
    #[arg(long, value_name = "BIN", default_value = "target/release/hearth-aggregator")]
    server: PathBuf,
    /// Measured seconds per load level, after one second of warm-up.
    #[arg(long, value_name = "S", default_value_t = 6.0, value_parser = positive_seconds)]
    seconds: f64,
    /// K: uploads per round, both paths (the leader's reports are planned for it); each K given
    /// is a run of every level. At 100 rounds close during the measured window (closes are part
    /// of the load); at 10,000 none does (the intake alone).
    #[arg(
        long,
        value_name = "K",
        value_delimiter = ',',
        num_args = 1..,
        default_values_t = [BENCH_SECAGG.clients, 10_000],
        value_parser = clap::value_parser!(u64).range(10..=10_000)
    )]
    min_clients: Vec<u64>,
    /// The backends each level runs on: sqlite (one process per role), postgres (a throwaway
    /// cluster: one replica, then three behind nginx; then the database's work per upload as
    /// rounds accumulate, and a sizing estimate).
    #[arg(long, value_name = "BACKEND", value_enum, value_delimiter = ',', num_args = 1.., default_values = ["sqlite", "postgres"])]
    backend: Vec<BackendArg>,
    /// The reverse proxy in front of several PostgreSQL replicas.
    #[arg(long, value_name = "BIN", default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
}

pub(crate) fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let Args { out, server, seconds, min_clients, backend, nginx } = args;
    let params = load_pack(Path::new("models/default"))?.params.values.len();
    let commit = commit();
    let started = Instant::now();
    let pg = if backend.contains(&BackendArg::Postgres) { Some(Pg::start(Path::new(PG_DIR))?) } else { None };
    let mut deploys = Vec::new();
    if backend.contains(&BackendArg::Sqlite) {
        deploys.push(Deploy::Sqlite);
    }
    if let Some(pg) = &pg {
        deploys.extend(PG_REPLICAS.map(|replicas| Deploy::Postgres { pg, nginx: &nginx, replicas }));
    }
    let mut records = Vec::new();
    for k in min_clients {
        println!("rounds of K = {k}:");
        records.extend(rounds_of(&server, &deploys, k, seconds, params, &commit)?);
    }

    let (batch_ms, rss) = helper_batches(&server, params)?;
    let mut sorted = batch_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[(sorted.len() - 1) / 2];
    println!(
        "{:>17} helper: /v1/aggregate for {} reports of {params} parameters: {median:.1} ms median of {} ({}), peak RSS {:.0} MiB",
        "hearth-aggregator",
        BENCH_SECAGG.clients,
        sorted.len(),
        batch_ms.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", "),
        mib(rss)
    );
    let helper = json!({"path": "secagg", "role": "helper", "backend": "sqlite", "replicas": 1, "process": "helper", "params": params, "reports": BENCH_SECAGG.clients, "commit": commit});
    for (metric, value, unit) in [("aggregate_ms", median, "ms"), ("peak_rss", rss as f64, "bytes")] {
        let mut r = helper.clone();
        r["metric"] = json!(metric);
        r["value"] = json!(value);
        r["unit"] = json!(unit);
        records.push(r);
    }
    // Rounds of the bench's K close within each window, so that the windows span rounds.
    if let Some(pg) = &pg {
        for replicas in PG_REPLICAS {
            records.extend(dbcost::run(&server, pg, &nginx, replicas, BENCH_SECAGG.clients, params, &commit)?);
        }
    }
    println!("bench-aggregator took {:.0} s", started.elapsed().as_secs_f64());
    write_records(&out, records)
}

/// Every load level against every target on every deployment, rounds of `k`; the records, with
/// each deployment, path, role and process's peak RSS over the levels.
fn rounds_of(server: &Path, deploys: &[Deploy], k: u64, seconds: f64, params: usize, commit: &str) -> Result<Vec<Value>, String> {
    let mut records = Vec::new();
    // Peak RSS over the levels of the f32 and report runs, per (backend, replicas, path, role,
    // process).
    let mut peaks: BTreeMap<(&str, usize, &str, &str, String), u64> = BTreeMap::new();
    for clients in LEVELS {
        // The paths side by side at each level, so that all see the same machine.
        for &deploy in deploys {
            let targets: &[Target] = match deploy {
                Deploy::Sqlite => &[
                    Target::Single(Encoding::F32),
                    Target::Leader,
                    Target::Single(Encoding::QuantizedI16),
                    Target::Sink(Encoding::F32),
                ],
                // The quantized encoding only where it is cheap: it differs from f32 in the
                // replica's decoding, not in the database's work.
                Deploy::Postgres { replicas: 1, .. } => {
                    &[Target::Single(Encoding::F32), Target::Leader, Target::Single(Encoding::QuantizedI16)]
                }
                Deploy::Postgres { .. } => &[Target::Single(Encoding::F32), Target::Leader],
            };
            let mut plaintext_rate = f64::NAN;
            for &target in targets {
                let r = level(server, clients, target, deploy, k, Duration::from_secs_f64(seconds))?;
                let mut lat = r.latencies_ms.clone();
                lat.sort_by(f64::total_cmp);
                let pct = |p: f64| lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
                let rate = r.accepted as f64 / seconds;
                let (engine, format, path, role) = match target {
                    Target::Single(e) => ("hearth-aggregator", e.name(), "plaintext", "single"),
                    Target::Sink(e) => ("http-sink", e.name(), "plaintext", "single"),
                    Target::Leader => ("hearth-aggregator", "report", "secagg", "leader"),
                };
                let backend = if matches!(target, Target::Sink(_)) { "none" } else { deploy.backend() };
                let replicas = deploy.replicas();
                println!(
                    "{engine:>17} {backend:>8}×{replicas} {role:>6} {format:>9} {clients:>3} clients: {rate:7.1} accepted/s, p50 {:6.1} ms, p99 {:6.1} ms, {} busy, {} rounds closed, peak RSS {}",
                    pct(0.5),
                    pct(0.99),
                    r.busy,
                    r.rounds,
                    r.processes.iter().map(|p| format!("{} {:.0} MiB", p.name, mib(p.peak_rss))).collect::<Vec<_>>().join(", ")
                );
                // The aggregator's f32 and report records are the format's; the others say how
                // they differ.
                let base = json!({
                    "clients": clients, "params": params, "path": path, "role": role, "min_clients": k,
                    "backend": backend, "replicas": replicas, "commit": commit,
                });
                let with = |metric: &str, value: f64, unit: &str| {
                    let mut rec = base.clone();
                    rec["metric"] = json!(metric);
                    rec["value"] = json!(value);
                    rec["unit"] = json!(unit);
                    match target {
                        Target::Single(Encoding::QuantizedI16) => rec["encoding"] = json!(format),
                        Target::Sink(_) => rec["engine"] = json!(engine),
                        _ => {}
                    }
                    rec
                };
                records.push(with("accepted_per_s", rate, "per_s"));
                records.push(with("latency_p50", pct(0.5), "ms"));
                records.push(with("latency_p99", pct(0.99), "ms"));
                for p in &r.processes {
                    let mut rec = with("peak_rss", p.peak_rss as f64, "bytes");
                    rec["role"] = json!(p.role);
                    rec["process"] = json!(p.name);
                    records.push(rec);
                    if matches!(target, Target::Single(Encoding::F32) | Target::Leader) {
                        let peak = peaks.entry((backend, replicas, path, p.role, p.name.clone())).or_default();
                        *peak = (*peak).max(p.peak_rss);
                    }
                }
                records.push(with("busy_per_s", r.busy as f64 / seconds, "per_s"));
                records.push(with("closes_per_s", r.rounds as f64 / seconds, "per_s"));
                match target {
                    Target::Single(Encoding::F32) => plaintext_rate = rate,
                    Target::Leader => {
                        // The budget: the leader's throughput against plaintext's, same level,
                        // same deployment, same run.
                        let ratio = rate / plaintext_rate;
                        records.push(with("accepted_ratio", ratio, "ratio"));
                        println!("{:>17} leader / single f32 at {clients} clients: {:.0}%", "", ratio * 100.0);
                    }
                    _ => {}
                }
            }
        }
    }
    for ((backend, replicas, path, role, process), peak) in peaks {
        records.push(json!({
            "metric": "peak_rss", "value": peak, "unit": "bytes", "params": params, "path": path, "role": role,
            "process": process, "backend": backend, "replicas": replicas, "min_clients": k, "commit": commit,
        }));
    }
    Ok(records)
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// The processes of one level, stopped (and their PostgreSQL databases dropped) by
/// [`Fleet::stop`].
#[derive(Default)]
struct Fleet {
    /// The front role's processes (the sink's, or the replicas'), with their URLs.
    front: Vec<(Child, String)>,
    helper: Option<Child>,
    nginx: Option<Nginx>,
    databases: Vec<String>,
}

impl Fleet {
    /// Starts what `target` needs on `deploy`; the URL the clients send to, and the helper's.
    fn start(
        &mut self,
        binary: &Path,
        dir: &Path,
        target: Target,
        deploy: Deploy,
        k: u64,
    ) -> Result<(String, Option<String>), String> {
        let (env, helper_url) = match target {
            Target::Sink(encoding) => {
                let sink = start_sink(encoding)?;
                let url = sink.1.clone();
                self.front.push(sink);
                return Ok((url, None));
            }
            Target::Single(encoding) => (single_env(encoding, k), None),
            Target::Leader => {
                let helper_dir = dir.join("helper");
                let (child, url) = match deploy {
                    Deploy::Sqlite => start(binary, &helper_dir, &helper_env(k), None)?,
                    Deploy::Postgres { pg, .. } => {
                        let db = pg.database("bench_helper");
                        self.databases.push(db.clone());
                        start_replicas(binary, &helper_dir, &db, &helper_env(k), 1)?.remove(0)
                    }
                };
                self.helper = Some(child);
                (leader_env(&url, k), Some(url))
            }
        };
        let url = match deploy {
            Deploy::Sqlite => {
                let server = start(binary, dir, &env, None)?;
                let url = server.1.clone();
                self.front.push(server);
                url
            }
            Deploy::Postgres { pg, nginx, replicas } => {
                let db = pg.database(if target == Target::Leader { "bench_leader" } else { "bench_single" });
                self.databases.push(db.clone());
                self.front.extend(start_replicas(binary, dir, &db, &env, replicas)?);
                let urls: Vec<String> = self.front.iter().map(|(_, u)| u.clone()).collect();
                if replicas > 1 {
                    let proxy = Nginx::start(nginx, &dir.join("nginx"), &urls)?;
                    let url = proxy.url.clone();
                    self.nginx = Some(proxy);
                    url
                } else {
                    urls[0].clone()
                }
            }
        };
        Ok((url, helper_url))
    }

    /// Kills every process and drops the databases.
    fn stop(self, deploy: Deploy) -> Result<(), String> {
        drop(self.nginx);
        for mut child in self.front.into_iter().map(|(c, _)| c).chain(self.helper) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Deploy::Postgres { pg, .. } = deploy {
            for db in &self.databases {
                pg.drop_database(db)?;
            }
        }
        Ok(())
    }
}

/// One load level against fresh servers (the aggregator's replicas, its helper too, or the
/// sink).
fn level(binary: &Path, clients: usize, target: Target, deploy: Deploy, k: u64, measure: Duration) -> Result<Run, String> {
    let dir = PathBuf::from(format!("target/bench/aggregator-run/{clients}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut fleet = Fleet::default();
    let started = fleet.start(binary, &dir, target, deploy, k);
    let pss = match deploy {
        Deploy::Postgres { pg, .. } => Some(PssPeak::start(pg)),
        Deploy::Sqlite => None,
    };
    let role = if target == Target::Leader { "leader" } else { "single" };
    let result = started.map(|(url, helper_url)| {
        let driven = match &helper_url {
            Some(helper_url) => drive_reports(&url, helper_url, clients, k, measure),
            None => {
                let from = Instant::now() + WARM_UP;
                drive(&url, clients, from..from + measure, false)
            }
        };
        let front = if matches!(target, Target::Sink(_)) { "http-sink" } else { "replica" };
        let mut processes: Vec<Process> = fleet
            .front
            .iter()
            .enumerate()
            .map(|(i, (c, _))| Process {
                name: if front == "replica" { format!("replica-{i}") } else { front.to_string() },
                role,
                peak_rss: peak_rss(c.id()),
            })
            .collect();
        if let Some(h) = &fleet.helper {
            processes.push(Process { name: "helper".into(), role: "helper", peak_rss: peak_rss(h.id()) });
        }
        if let Some(n) = &fleet.nginx {
            processes.push(Process { name: "nginx".into(), role, peak_rss: n.peak_rss() });
        }
        // Each replica counts the rounds it settled itself (the sink none).
        let count = |name: &str| fleet.front.iter().filter_map(|(_, u)| metric(u, name)).sum::<f64>() as u64;
        let (rounds, abandoned) = (count("hearth_rounds_closed_total"), count("hearth_rounds_abandoned_total"));
        (driven, processes, rounds, abandoned)
    });
    let postgres_pss = pss.map(PssPeak::stop);
    let stopped = fleet.stop(deploy);
    let _ = std::fs::remove_dir_all(&dir);
    let (driven, mut processes, rounds, abandoned) = result?;
    stopped?;
    let (accepted, busy, latencies_ms) = driven?;
    if let Some(peak) = postgres_pss {
        processes.push(Process { name: "postgres".into(), role, peak_rss: peak });
    }
    if abandoned > 0 {
        // Honest uploads never make a round release nothing: the figures would not be the path's.
        return Err(format!(
            "{target:?} on {} × {} at {clients} clients: {abandoned} rounds abandoned (see the server's log)",
            deploy.backend(),
            deploy.replicas()
        ));
    }
    Ok(Run { accepted, busy, latencies_ms, processes, rounds })
}

fn start_sink(encoding: Encoding) -> Result<(Child, String), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    listening(Command::new(me).args(["http-sink", encoding.name()]).stdout(Stdio::piped()).spawn().map_err(|e| e.to_string())?)
}

/// A `single` server taking plaintext updates of `encoding` in rounds of `k`; a budget that
/// outlasts the run (the largest the configuration takes).
pub(crate) fn single_env(encoding: Encoding, k: u64) -> Vec<(&'static str, String)> {
    vec![
        ("HEARTH_AGG__ROUND__MIN_CLIENTS", k.to_string()),
        ("HEARTH_AGG__ROUND__ENCODING", format!("\"{}\"", encoding.name())),
        ("HEARTH_AGG__PRIVACY__EPSILON_BUDGET", "100".into()),
    ]
}

/// The helper of [`BENCH_SECAGG`] for rounds of `k`: its noise at the devices' floor.
fn helper_env(k: u64) -> Vec<(&'static str, String)> {
    vec![
        ("HEARTH_AGG__ROLE", "\"helper\"".into()),
        ("HEARTH_AGG__ROUND__MIN_CLIENTS", k.to_string()),
        ("HEARTH_AGG__SECAGG__TOKEN", format!("{TOKEN:?}")),
        ("HEARTH_AGG__SECAGG__NOISE_MULTIPLIER", BENCH_SECAGG.helper_noise.to_string()),
    ]
}

/// The round the bench's leader announces for rounds of `k`: [`bench_secagg_task`] without
/// device noise (see the module doc).
fn leader_task(k: u64) -> RoundTask {
    let secagg = SecAggTask { clients: k, ..BENCH_SECAGG };
    RoundTask { noise_multiplier: 0.0, secagg: Some(secagg), ..bench_secagg_task() }
}

/// A leader announcing [`leader_task`], with its helper at `helper_url`.
fn leader_env(helper_url: &str, k: u64) -> Vec<(&'static str, String)> {
    let task = leader_task(k);
    vec![
        ("HEARTH_AGG__ROLE", "\"leader\"".into()),
        ("HEARTH_AGG__ROUND__MIN_CLIENTS", k.to_string()),
        ("HEARTH_AGG__ROUND__CLIP_NORM", task.clip_norm.to_string()),
        ("HEARTH_AGG__ROUND__NOISE_MULTIPLIER", task.noise_multiplier.to_string()),
        ("HEARTH_AGG__PRIVACY__EPSILON_BUDGET", "100".into()),
        ("HEARTH_AGG__SECAGG__HELPER_URL", format!("\"{helper_url}/\"")),
        ("HEARTH_AGG__SECAGG__TOKEN", format!("{TOKEN:?}")),
        ("HEARTH_AGG__SECAGG__NOISE_MULTIPLIER", BENCH_SECAGG.leader_noise.to_string()),
    ]
}

/// The aggregator with its database in `dir` (created there by `--init`) and `env` over its
/// defaults; with `open_files`, under that open-file limit (soft and hard, set by `prlimit`).
pub(crate) fn start(
    binary: &Path,
    dir: &Path,
    env: &[(&str, String)],
    open_files: Option<u64>,
) -> Result<(Child, String), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut command = match open_files {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let child = command
        .arg("--init")
        .env("HEARTH_AGG__LISTEN", "\"127.0.0.1:0\"")
        .env("HEARTH_AGG__DATABASE", format!("{:?}", dir.join("hearth.db")))
        .env("HEARTH_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e} (build it with cargo build --release -p hearth-aggregator)", binary.display()))?;
    listening(child)
}

/// The child and the URL it prints on its first line.
fn listening(mut child: Child) -> Result<(Child, String), String> {
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line).map_err(|e| e.to_string())?;
    let url = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
    if !url.starts_with("http://") {
        let _ = child.kill();
        return Err(format!("server did not start: {line:?}"));
    }
    Ok((child, url))
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// GET `url`, its body as JSON.
pub(crate) fn get_json(agent: &ureq::Agent, url: &str) -> Result<Value, String> {
    let text = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?.body_mut().read_to_string();
    serde_json::from_str(&text.map_err(|e| format!("{url}: {e}"))?).map_err(|e| format!("{url}: {e}"))
}

/// The helper's configuration, from the helper itself (as devices fetch it).
fn helper_key(agent: &ureq::Agent, helper_url: &str) -> Result<HelperKey, String> {
    let config: HelperConfig = serde_json::from_value(get_json(agent, &format!("{helper_url}/v1/helper_config"))?)
        .map_err(|e| format!("helper configuration: {e}"))?;
    HelperKey::from_config(&config.hpke).map_err(|e| e.to_string())
}

pub(crate) fn task(agent: &ureq::Agent, url: &str) -> Result<RoundTask, String> {
    serde_json::from_value(get_json(agent, &format!("{url}/v1/round"))?).map_err(|e| format!("round task: {e}"))
}

pub(crate) fn metric(url: &str, name: &str) -> Option<f64> {
    let text = agent().get(&format!("{url}/metrics")).call().ok()?.body_mut().read_to_string().ok()?;
    // A sample without labels other than `replica`: `name{replica="…"} value`.
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix("{replica=\"")?.split_once("\"} ")?.1.parse().ok())
}

/// VmHWM of a process: its peak resident set.
pub(crate) fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()))
        })
        .flatten()
        .map_or(0, |kb| kb * 1024)
}

/// The shared state of one level's closed-loop clients.
struct Load {
    measuring: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicU64,
    busy: AtomicU64,
}

/// What a client does after one upload ([`Load::send`] gives `None` when it should stop).
enum Verdict {
    /// Accepted, or refused as busy: send the next.
    Sent,
    /// The open round moved on: take the next one's task.
    NextRound,
}

impl Load {
    fn new() -> Arc<Load> {
        Arc::new(Load {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        })
    }

    /// Sends `body` once, counts it, and keeps its latency in `latencies` when it counts.
    fn send(&self, agent: &ureq::Agent, url: &str, media: &str, body: &[u8], latencies: &mut Vec<f64>) -> Option<Verdict> {
        let sent = Instant::now();
        let mut resp = agent.post(&format!("{url}/v1/updates")).header("Content-Type", media).send(body).ok()?;
        let took = sent.elapsed().as_secs_f64() * 1e3;
        let counting = self.measuring.load(Ordering::Relaxed);
        match resp.status().as_u16() {
            202 => {
                if counting {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                    latencies.push(took);
                }
                Some(Verdict::Sent)
            }
            503 => {
                self.busy.fetch_add(u64::from(counting), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
                Some(Verdict::Sent)
            }
            409 => Some(Verdict::NextRound),
            other => {
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                eprintln!("unexpected {other}: {text}");
                None
            }
        }
    }

    /// Counts what completes within `window` (the clients run from before it: warm-up); then
    /// stops the clients and gathers their latencies.
    fn run(&self, handles: Vec<std::thread::JoinHandle<Vec<f64>>>, window: Range<Instant>) -> (u64, u64, Vec<f64>) {
        std::thread::sleep(window.start.saturating_duration_since(Instant::now()));
        self.measuring.store(true, Ordering::Relaxed);
        std::thread::sleep(window.end.saturating_duration_since(Instant::now()));
        self.measuring.store(false, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        let latencies: Vec<f64> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
        (self.accepted.load(Ordering::Relaxed), self.busy.load(Ordering::Relaxed), latencies)
    }
}

/// An upload id unique within the run: the client's number, then its sequence number.
fn upload_id(client: u64, seq: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&client.to_le_bytes());
    id[8..].copy_from_slice(&seq.to_le_bytes());
    id
}

/// The honest update every client sends: a delta of norm about 0.53 (C = 1).
fn honest_delta(params: usize) -> Vec<f32> {
    vec![1e-3; params]
}

/// The honest update for the round of `task`, built as a device builds it.
pub(crate) fn honest_update(task: &RoundTask) -> Result<Update, String> {
    let params = load_pack(Path::new("models/default"))?.params.values.len();
    let (update, _) = build_update(
        honest_delta(params),
        task.model_version,
        task.round_id,
        task.clip_norm,
        task.noise_multiplier,
        task.encoding,
        &mut Sampler::os(),
    )
    .map_err(|e| e.to_string())?;
    Ok(update)
}

/// Plaintext: closed-loop clients re-sending one update under fresh nonces, counted within
/// `window`; (accepted, busy, latencies). A client stops at its first failed upload (transport
/// error or unexpected answer), or with `persist` pauses and sends the next.
pub(crate) fn drive(url: &str, clients: usize, window: Range<Instant>, persist: bool) -> Result<(u64, u64, Vec<f64>), String> {
    let first = task(&agent(), url)?;
    let base = honest_update(&first)?;
    let current = Arc::new(RwLock::new((first.round_id, first.model_version)));
    let load = Load::new();
    let handles = (0..clients as u64)
        .map(|c| {
            let (url, mut update, current, load) = (url.to_string(), base.clone(), current.clone(), load.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut latencies = Vec::new();
                for seq in 0u64.. {
                    if load.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    (update.round_id, update.model_version) = *current.read().expect("lock");
                    update.nonce = upload_id(c, seq);
                    let body = update.encode();
                    match load.send(&agent, &url, "application/vnd.hearth.update", &body, &mut latencies) {
                        None if persist => std::thread::sleep(RETRY_PAUSE),
                        None => break,
                        Some(Verdict::Sent) => {}
                        Some(Verdict::NextRound) => {
                            if let Ok(t) = task(&agent, &url) {
                                *current.write().expect("lock") = (t.round_id, t.model_version);
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    Ok(load.run(handles, window))
}

/// One pre-built share: the device's rounded update plus its own noise, masked with PRG(seed).
struct PooledShare {
    seed: [u8; SEED_LEN],
    share: Vec<u32>,
}

/// [`SHARE_POOL`] shares of the honest delta for the leader's plan, built as a device builds
/// its report (hearth-core's clip and rounding, then its own discrete Gaussian, none in the
/// bench's rounds, and the mask).
fn share_pool(binding: &Binding, key: &HelperKey) -> Result<Vec<PooledShare>, String> {
    let err = |e: hearth_core::HearthError| e.to_string();
    let plan = binding.plan().map_err(err)?;
    let mut rng = Sampler::os();
    let grid = build_report(honest_delta(plan.params), binding, key, &mut rng).map_err(err)?.grid;
    (0..SHARE_POOL)
        .map(|_| {
            let mut share: Vec<u32> = grid.iter().map(|&v| v as u32).collect();
            discrete::add_mod(&mut share, plan.sigma_local, &mut rng).map_err(err)?;
            let mut seed = [0u8; SEED_LEN];
            rng.fill_bytes(&mut seed).map_err(err)?;
            share.iter_mut().zip(expand(&seed, plan.params)).for_each(|(v, m)| *v = v.wrapping_add(m) & MASK);
            Ok(PooledShare { seed, share })
        })
        .collect()
}

/// A report of a pooled share for the round of `binding`, under `id`, its seed sealed afresh.
fn report<S: ByteSource>(
    pooled: &PooledShare,
    binding: &Binding,
    key: &HelperKey,
    id: [u8; 16],
    rng: &mut Sampler<S>,
) -> Result<Report, String> {
    let aad = Report::aad(&id, key.key_id(), binding);
    let (enc, sealed) = key.seal(&pooled.seed, &aad, rng).map_err(|e| e.to_string())?;
    Ok(Report {
        model_version: binding.model_version,
        round_id: binding.round_id,
        report_id: id,
        key_id: key.key_id(),
        enc,
        sealed,
        share: pooled.share.clone(),
    })
}

/// Secure aggregation: closed-loop clients sending pre-built reports to the leader (see the
/// module doc); (accepted, busy, latencies).
fn drive_reports(url: &str, helper_url: &str, clients: usize, k: u64, measure: Duration) -> Result<(u64, u64, Vec<f64>), String> {
    let first = task(&agent(), url)?;
    let wanted = leader_task(k);
    if (first.secagg, first.clip_norm, first.noise_multiplier) != (wanted.secagg, wanted.clip_norm, wanted.noise_multiplier) {
        return Err(format!("the leader announces {first:?}, not the bench's {wanted:?}"));
    }
    let key = helper_key(&agent(), helper_url)?;
    let params = load_pack(Path::new("models/default"))?.params.values.len();
    let binding = first.binding(params).ok_or("a leader's task has secagg")?;
    let pool = Arc::new(share_pool(&binding, &key)?);
    let current = Arc::new(RwLock::new(binding));
    let load = Load::new();
    let handles = (0..clients as u64)
        .map(|c| {
            let (url, key, pool, current, load) = (url.to_string(), key.clone(), pool.clone(), current.clone(), load.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut rng = Sampler::os();
                let mut latencies = Vec::new();
                for seq in 0u64.. {
                    if load.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let binding = *current.read().expect("lock");
                    let pooled = &pool[(c as usize + seq as usize) % pool.len()];
                    let body = match report(pooled, &binding, &key, upload_id(c, seq), &mut rng) {
                        Ok(r) => r.encode(),
                        Err(e) => {
                            eprintln!("building a report: {e}");
                            break;
                        }
                    };
                    match load.send(&agent, &url, "application/vnd.hearth.report", &body, &mut latencies) {
                        None => break,
                        Some(Verdict::Sent) => {}
                        Some(Verdict::NextRound) => {
                            if let Some(b) = task(&agent, &url).ok().and_then(|t| t.binding(params)) {
                                *current.write().expect("lock") = b;
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let from = Instant::now() + WARM_UP;
    Ok(load.run(handles, from..from + measure))
}

/// The helper's own cost: a fresh helper answers `/v1/aggregate` for one warm-up and then
/// [`HELPER_BATCHES`] timed batches of K = 100 sealed seeds, each for a round of its own (it releases
/// once per round), as a leader sends them at a round's close. Returns each timed batch's
/// round trip in ms and the helper's peak RSS.
fn helper_batches(binary: &Path, params: usize) -> Result<(Vec<f64>, u64), String> {
    let dir = PathBuf::from("target/bench/aggregator-run/helper");
    let _ = std::fs::remove_dir_all(&dir);
    let k = BENCH_SECAGG.clients;
    let (mut child, url) = start(binary, &dir, &helper_env(k), None)?;
    let result = (|| -> Result<Vec<f64>, String> {
        let agent = agent();
        let key = helper_key(&agent, &url)?;
        let mut rng = Sampler::os();
        let mut times = Vec::new();
        for round in 1..=(HELPER_BATCHES as u64 + 1) {
            let binding = Binding { round_id: round, ..leader_task(k).binding(params).ok_or("secagg")? };
            let seeds = (0..k)
                .map(|i| {
                    let mut seed = [0u8; SEED_LEN];
                    rng.fill_bytes(&mut seed).map_err(|e| e.to_string())?;
                    let id = upload_id(round, i);
                    let (enc, sealed) =
                        key.seal(&seed, &Report::aad(&id, key.key_id(), &binding), &mut rng).map_err(|e| e.to_string())?;
                    Ok(json!({"id": hex(&id), "key_id": key.key_id(), "enc": hex(&enc), "sealed": hex(&sealed)}))
                })
                .collect::<Result<Vec<Value>, String>>()?;
            let body = serde_json::to_vec(&json!({"binding": binding, "reports": seeds})).map_err(|e| e.to_string())?;
            let sent = Instant::now();
            let mut resp = agent
                .post(&format!("{url}/v1/aggregate"))
                .header("Authorization", &format!("Bearer {TOKEN}"))
                .header("Content-Type", "application/json")
                .send(&body[..])
                .map_err(|e| e.to_string())?;
            let share = resp.body_mut().with_config().limit(64 << 20).read_to_vec().map_err(|e| e.to_string())?;
            let took = sent.elapsed().as_secs_f64() * 1e3;
            if resp.status() != 200 || share.len() != 3 * params {
                return Err(format!("the helper answered {} with {} bytes", resp.status(), share.len()));
            }
            if round > 1 {
                times.push(took);
            }
        }
        Ok(times)
    })();
    let rss = peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((result?, rss))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::privacy::seal::KeyPair;
    use hearth_core::privacy::shares::ShareSum;

    /// The load generator's reports are what devices send: each decodes, its seed opens under
    /// the helper's key for its round, and K of them (pooled shares reused) sum to K times the
    /// honest update, within the grid.
    #[test]
    fn pooled_reports_open_and_sum_to_k_honest_updates() {
        let params = 1000;
        let pair = KeyPair::generate(3).unwrap();
        let key = HelperKey::from_config(&pair.config()).unwrap();
        const K: u64 = 100;
        let binding = Binding { round_id: 7, ..leader_task(K).binding(params).unwrap() };
        let pool = share_pool(&binding, &key).unwrap();
        let (mut leader, mut helper) = (ShareSum::new(params), ShareSum::new(params));
        let mut rng = Sampler::os();
        for i in 0..K {
            let sent = report(&pool[i as usize % pool.len()], &binding, &key, upload_id(1, i), &mut rng).unwrap();
            let r = Report::decode(&sent.encode()).unwrap();
            assert_eq!((r.round_id, r.model_version, r.report_id), (7, binding.model_version, upload_id(1, i)));
            leader.add(r.share.iter().copied());
            helper.add_unmask(&pair.open(r.key_id, &r.enc, &r.sealed, &Report::aad(&r.report_id, r.key_id, &binding)).unwrap());
        }
        let plan = binding.plan().unwrap();
        let sum = plan.decode(&leader.values(), &helper.values()).unwrap();
        let honest = K as f64 * f64::from(honest_delta(params)[0]);
        for (j, v) in sum.iter().enumerate() {
            assert!((v - honest).abs() <= K as f64 * plan.step + 1e-9, "coordinate {j}: {v} against {honest}");
        }
    }

    /// The leader's round is the bench's secure round for its K, without device noise; at the
    /// largest K the flag takes, the 24-bit shares still carry the default model's reports.
    #[test]
    fn the_leader_announces_the_bench_round() {
        let task = leader_task(BENCH_SECAGG.clients);
        assert_eq!(task.secagg, Some(BENCH_SECAGG));
        assert_eq!(task.noise_multiplier, 0.0);
        let params = load_pack(Path::new("../models/default")).unwrap().params.values.len();
        leader_task(10_000).binding(params).unwrap().plan().unwrap();
    }
}
