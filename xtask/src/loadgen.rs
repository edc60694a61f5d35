//! `xtask bench-aggregator`: the upload load generator. Starts the release `hearth-aggregator`
//! on a fresh database for each load level and drives it from this (separate) process with
//! closed-loop clients on loopback, each re-sending an honest update (built by hearth-core for
//! the default pack) under a fresh nonce; writes target/bench/aggregator.json. The same load
//! also runs against `xtask http-sink` (engine `http-sink`), which reads and discards bodies:
//! the transport ceiling of the machine, side by side.

use crate::bench::{commit, write_records};
use crate::load_pack;
use hearth_core::learning::round::RoundTask;
use hearth_core::privacy::noise::Sampler;
use hearth_core::privacy::privatize::build_update;
use hearth_core::privacy::wire::Encoding;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const LEVELS: [usize; 3] = [8, 64, 256];
/// Updates per round: every 100 accepted, the server publishes a new pack (part of the load).
const K: u64 = 100;

struct Run {
    accepted: u64,
    busy: u64,
    latencies_ms: Vec<f64>,
    peak_rss: u64,
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
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let Args { out, server, seconds } = args;
    let params = load_pack(Path::new("models/default"))?.params.values.len();
    let commit = commit();
    let mut records = Vec::new();
    let mut peak = 0;
    let runs = [(Encoding::F32, false), (Encoding::QuantizedI16, false), (Encoding::F32, true)];
    for (encoding, sink) in runs {
        let name = encoding.name();
        for clients in LEVELS {
            let r = level(&server, clients, encoding, sink, Duration::from_secs_f64(seconds))?;
            let mut lat = r.latencies_ms.clone();
            lat.sort_by(f64::total_cmp);
            let pct = |p: f64| lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
            let rate = r.accepted as f64 / seconds;
            let engine = if sink { "http-sink" } else { "hearth-aggregator" };
            println!(
                "{engine:>17} {name:>9} {clients:>3} clients: {rate:7.1} accepted/s, p50 {:6.1} ms, p99 {:6.1} ms, {} busy, {} rounds closed, peak RSS {:.0} MiB",
                pct(0.5),
                pct(0.99),
                r.busy,
                r.rounds,
                r.peak_rss as f64 / 1048576.0
            );
            // The aggregator's f32 records are the format's; the others say how they differ.
            let tag = |mut rec: Value| {
                if encoding == Encoding::QuantizedI16 {
                    rec["encoding"] = json!(name);
                }
                if sink {
                    rec["engine"] = json!(engine);
                }
                rec
            };
            let base = json!({"clients": clients, "params": params, "commit": commit});
            let with = |metric: &str, value: f64, unit: &str| {
                let mut rec = base.clone();
                rec["metric"] = json!(metric);
                rec["value"] = json!(value);
                rec["unit"] = json!(unit);
                tag(rec)
            };
            records.push(with("accepted_per_s", rate, "per_s"));
            records.push(with("latency_p50", pct(0.5), "ms"));
            records.push(with("latency_p99", pct(0.99), "ms"));
            records.push(with("peak_rss", r.peak_rss as f64, "bytes"));
            records.push(with("busy_per_s", r.busy as f64 / seconds, "per_s"));
            if encoding == Encoding::F32 && !sink {
                peak = peak.max(r.peak_rss);
            }
        }
    }
    records.push(json!({"metric": "peak_rss", "value": peak, "unit": "bytes", "params": params, "commit": commit}));
    write_records(&out, records)
}

/// One load level against a fresh server (the aggregator, or the sink).
fn level(binary: &Path, clients: usize, encoding: Encoding, sink: bool, measure: Duration) -> Result<Run, String> {
    let dir = PathBuf::from(format!("target/bench/aggregator-run/{clients}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut server = if sink { start_sink(encoding)? } else { start(binary, &dir, encoding)? };
    let url = server.1.clone();
    let result = drive(&url, clients, measure);
    let peak_rss = peak_rss(server.0.id());
    let rounds = metric(&url, "hearth_rounds_closed_total").unwrap_or(0.0) as u64;
    let _ = server.0.kill();
    let _ = server.0.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let (accepted, busy, latencies_ms) = result?;
    Ok(Run { accepted, busy, latencies_ms, peak_rss, rounds })
}

fn start_sink(encoding: Encoding) -> Result<(Child, String), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    listening(Command::new(me).args(["http-sink", encoding.name()]).stdout(Stdio::piped()).spawn().map_err(|e| e.to_string())?)
}

fn start(binary: &Path, dir: &Path, encoding: Encoding) -> Result<(Child, String), String> {
    let encoding = encoding.name();
    let child = Command::new(binary)
        .env("HEARTH_AGG__LISTEN", "\"127.0.0.1:0\"")
        .env("HEARTH_AGG__DATABASE", format!("{:?}", dir.join("hearth.db")))
        .env("HEARTH_AGG__ROUND__MIN_CLIENTS", K.to_string())
        .env("HEARTH_AGG__ROUND__ENCODING", format!("\"{encoding}\""))
        .env("HEARTH_AGG__PRIVACY__POPULATION", "100000000")
        .env("HEARTH_AGG__PRIVACY__EPSILON_BUDGET", "1000")
        .env("HEARTH_LOG", "warn")
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

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

fn task(agent: &ureq::Agent, url: &str) -> Result<RoundTask, String> {
    let mut r = agent.get(&format!("{url}/v1/round")).call().map_err(|e| e.to_string())?;
    serde_json::from_str(&r.body_mut().read_to_string().map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

fn metric(url: &str, name: &str) -> Option<f64> {
    let text = agent().get(&format!("{url}/metrics")).call().ok()?.body_mut().read_to_string().ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// VmHWM of the server process: its peak resident set.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()))
        })
        .flatten()
        .map_or(0, |kb| kb * 1024)
}

/// Closed-loop clients for one warm-up second and then `measure`; (accepted, busy, latencies).
fn drive(url: &str, clients: usize, measure: Duration) -> Result<(u64, u64, Vec<f64>), String> {
    let first = task(&agent(), url)?;
    let params = load_pack(Path::new("models/default"))?.params.values.len();
    let (base, _) = build_update(
        vec![1e-3; params],
        first.model_version,
        first.round_id,
        first.clip_norm,
        first.noise_multiplier,
        first.encoding,
        &mut Sampler::os(),
    )
    .map_err(|e| e.to_string())?;
    let current = Arc::new(RwLock::new((first.round_id, first.model_version)));
    let (measuring, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (accepted, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handles: Vec<_> = (0..clients as u64)
        .map(|c| {
            let (url, mut update) = (url.to_string(), base.clone());
            let (current, measuring, stop, accepted, busy) =
                (current.clone(), measuring.clone(), stop.clone(), accepted.clone(), busy.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut latencies = Vec::new();
                for seq in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    (update.round_id, update.model_version) = *current.read().expect("lock");
                    update.nonce[..8].copy_from_slice(&c.to_le_bytes());
                    update.nonce[8..].copy_from_slice(&seq.to_le_bytes());
                    let body = update.encode();
                    let sent = Instant::now();
                    let Ok(mut resp) = agent
                        .post(&format!("{url}/v1/updates"))
                        .header("Content-Type", "application/vnd.hearth.update")
                        .send(&body[..])
                    else {
                        break;
                    };
                    let took = sent.elapsed().as_secs_f64() * 1e3;
                    let counting = measuring.load(Ordering::Relaxed);
                    match resp.status().as_u16() {
                        202 if counting => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            latencies.push(took);
                        }
                        202 => {}
                        503 => {
                            busy.fetch_add(u64::from(counting), Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        // The round closed under us: take the next one's ids.
                        409 => {
                            if let Ok(t) = task(&agent, &url) {
                                *current.write().expect("lock") = (t.round_id, t.model_version);
                            }
                        }
                        other => {
                            let text = resp.body_mut().read_to_string().unwrap_or_default();
                            eprintln!("unexpected {other}: {text}");
                            break;
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(measure);
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let latencies: Vec<f64> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
    Ok((accepted.load(Ordering::Relaxed), busy.load(Ordering::Relaxed), latencies))
}
