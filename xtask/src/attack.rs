//! `xtask attack`: a bounded hostile-load generator. The aggregator is the one server every
//! visitor's browser reaches, so anyone can hold its connections open, trickle requests or ask
//! for model downloads they never read (issue 14). This measures what honest devices still get
//! while that happens; target/bench/attack.json holds, per attack, honest uploads/s and their
//! p99, the p99 of a `/healthz` probe and the server's peak RSS.
//!
//! Each attack gets a fresh release `hearth-aggregator` (role `single`, the default pack, rounds
//! of K = 10 so rounds close during the window) on a fresh directory: peak RSS is a high-water
//! mark, so each attack's is its own. Beside the attack, for one measured window after a
//! warm-up, closed-loop honest clients upload (loadgen's, retrying after a failure as a device
//! would) and a probe asks for `/healthz` every 50 ms on a fresh connection, as an outside
//! monitor would. The attacks:
//! - `none`: nothing (the baseline);
//! - `slow-headers`: connections trickling an endless request head, one byte per tick;
//! - `idle-connections`: more connections than the server may hold (it runs under an open-file
//!   limit of 1,024, as in the issue), sending nothing;
//! - `slow-bodies`: valid upload heads, then one body byte per tick;
//! - `download-flood`: requests for a published `model.onnx` whose answers are never read.
//!
//! Every attack connection the server closes or answers is opened again, so the pressure holds
//! for the whole window; at the window's end the attack stops and closes its sockets. The
//! counts and the window are bounded. The target (honest uploads keep ≥ 50 % of `none`'s rate,
//! RSS < 512 MiB) is reported, not asserted: this is a benchmark, not a test.
//!
//! On loopback the attacker's unread receive buffers are on the server's host too: the probe
//! also records the host's peak TCP buffer memory against the kernel's limit, which tells a
//! server that slows down from a host whose kernel starves every socket.

use crate::bench::{commit, percentile, write_records};
use crate::load_pack;
use crate::loadgen::{
    WARM_UP, agent, drive, get_json, honest_update, metric, mib, peak_rss, positive_seconds, single_env, start, task,
};
use hearth_core::privacy::wire::Encoding;
use serde_json::{Value, json};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a slow connection sends its next byte, and every attack connection is checked.
const TICK: Duration = Duration::from_millis(500);
/// Threads that drive one attack's connections, each a share of them.
const ATTACK_THREADS: usize = 8;
/// Longest wait for one attack connection to be accepted (a full backlog drops SYNs).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The open-file limit (soft and hard) the server runs under during `idle-connections`: the
/// issue's `ulimit -n 1024`, below the attack's 1,100 connections.
const IDLE_SERVER_OPEN_FILES: u64 = 1024;
/// Open files this process keeps besides its attack connections and honest clients (the probe,
/// the server's pipe, std's own).
const FD_RESERVE: usize = 64;
/// How often the probe asks for `/healthz`.
const HEALTHZ_EVERY: Duration = Duration::from_millis(50);
/// How long one probe waits before it counts as failed.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(5);
/// Issue 14's target: under each attack, honest uploads keep at least this share of `none`'s rate …
const TARGET_HONEST_RATIO: f64 = 0.5;
/// … and the server's peak RSS stays below this.
const TARGET_RSS: u64 = 512 << 20;
/// The upload media type of a `single` server.
const UPDATE_MEDIA_TYPE: &str = "application/vnd.hearth.update";
/// A slow-headers connection's request line; header lines of [`SLOW_HEAD_LINE`] follow without
/// end (never the blank line that would finish the head).
const SLOW_HEAD_START: &[u8] = b"GET /v1/round HTTP/1.1\r\nHost: hearth\r\n";
/// See [`SLOW_HEAD_START`].
const SLOW_HEAD_LINE: &[u8] = b"X-Slow: 1\r\n";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the JSON records go.
    #[arg(long, value_name = "FILE", default_value = "target/bench/attack.json")]
    out: PathBuf,
    /// The aggregator binary to start (build it with cargo build --release -p hearth-aggregator).
    #[arg(long, value_name = "BIN", default_value = "target/release/hearth-aggregator")]
    server: PathBuf,
    /// The attacks to run, each against a fresh server.
    #[arg(
        long,
        value_name = "ATTACK",
        value_enum,
        value_delimiter = ',',
        num_args = 1..,
        default_values_t = [Attack::Baseline, Attack::SlowHeaders, Attack::IdleConnections, Attack::SlowBodies, Attack::DownloadFlood]
    )]
    attack: Vec<Attack>,
    /// Measured seconds per attack, after one second of warm-up (the attack runs through both).
    #[arg(long, value_name = "S", default_value_t = 10.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Closed-loop honest upload clients beside each attack.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    clients: u16,
    /// Attack connections, instead of each attack's own number (slow-headers 300,
    /// idle-connections 1100, slow-bodies 128, download-flood 4000); at most what this process
    /// may open.
    #[arg(long, value_name = "N")]
    connections: Option<usize>,
    /// K: uploads per round (rounds close during the window, so closes are part of the load).
    #[arg(long, value_name = "K", default_value_t = 10, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    min_clients: u64,
}

/// One hostile load (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Attack {
    /// No attack: the baseline.
    #[value(name = "none")]
    Baseline,
    /// Request heads trickled one byte per tick, never finished.
    SlowHeaders,
    /// Connections that send nothing, more than the server may hold.
    IdleConnections,
    /// Valid upload heads, then one body byte per tick.
    SlowBodies,
    /// Model downloads whose answers are never read.
    DownloadFlood,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Baseline => "none",
            Attack::SlowHeaders => "slow-headers",
            Attack::IdleConnections => "idle-connections",
            Attack::SlowBodies => "slow-bodies",
            Attack::DownloadFlood => "download-flood",
        }
    }

    /// The attack's own connection count: the issue's, but slow-headers a tenth of its 3,000
    /// (`--connections` takes more).
    fn connections(self) -> usize {
        match self {
            Attack::Baseline => 0,
            Attack::SlowHeaders => 300,
            Attack::IdleConnections => 1100,
            Attack::SlowBodies => 128,
            Attack::DownloadFlood => 4000,
        }
    }

    /// What each connection sends, to a server whose honest upload is `update`.
    fn script(self, update: &[u8]) -> Script {
        let nothing = Script { opener: Vec::new(), trickle: Trickle::Nothing, reads: true };
        match self {
            Attack::Baseline | Attack::IdleConnections => nothing,
            Attack::SlowHeaders => Script { trickle: Trickle::Head, ..nothing },
            Attack::SlowBodies => Script {
                opener: format!(
                    "POST /v1/updates HTTP/1.1\r\nHost: hearth\r\nContent-Type: {UPDATE_MEDIA_TYPE}\r\nContent-Length: {}\r\n\r\n",
                    update.len()
                )
                .into_bytes(),
                // All but the last byte: even a slow body never completes.
                trickle: Trickle::Body(update[..update.len().saturating_sub(1)].to_vec()),
                reads: true,
            },
            Attack::DownloadFlood => Script {
                opener: b"GET /v1/models/1/model.onnx HTTP/1.1\r\nHost: hearth\r\n\r\n".to_vec(),
                trickle: Trickle::Nothing,
                reads: false,
            },
        }
    }
}

/// What each connection of one attack sends.
struct Script {
    /// Sent at once on connecting.
    opener: Vec<u8>,
    /// Then sent one byte per [`TICK`].
    trickle: Trickle,
    /// Whether an answer means the server is done with the connection (it is read and the
    /// connection opened again); a download flood leaves its answers unread, so it notices a
    /// close only once nothing is left unread, as a client that never reads would.
    reads: bool,
}

enum Trickle {
    Nothing,
    /// [`SLOW_HEAD_START`], then [`SLOW_HEAD_LINE`] over and over.
    Head,
    /// These bytes, then nothing.
    Body(Vec<u8>),
}

impl Trickle {
    fn byte(&self, i: usize) -> Option<u8> {
        match self {
            Trickle::Nothing => None,
            Trickle::Head => Some(match SLOW_HEAD_START.get(i) {
                Some(&b) => b,
                None => SLOW_HEAD_LINE[(i - SLOW_HEAD_START.len()) % SLOW_HEAD_LINE.len()],
            }),
            Trickle::Body(bytes) => bytes.get(i).copied(),
        }
    }
}

/// One attack connection and how much of its trickle it has sent.
struct Conn {
    stream: TcpStream,
    sent: usize,
}

impl Conn {
    /// Connects and sends the opener; `None` when the server (or its kernel) does not take it.
    fn open(addr: SocketAddr, opener: &[u8]) -> Option<Conn> {
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).ok()?;
        stream.set_write_timeout(Some(CONNECT_TIMEOUT)).ok()?;
        // One byte per segment: a trickle must reach the server as it is sent.
        stream.set_nodelay(true).ok()?;
        stream.write_all(opener).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(Conn { stream, sent: 0 })
    }

    /// One tick: false when the server is done with the connection (closed it, or answered
    /// where the script reads answers); else sends the trickle's next byte, if any.
    fn step(&mut self, script: &Script) -> bool {
        if !matches!(self.stream.take_error(), Ok(None)) {
            return false;
        }
        let mut buf = [0u8; 4096];
        let seen = if script.reads { self.stream.read(&mut buf) } else { self.stream.peek(&mut buf[..1]) };
        match seen {
            Ok(0) => return false,
            Ok(_) if script.reads => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
        match script.trickle.byte(self.sent) {
            Some(b) => match self.stream.write(&[b]) {
                Ok(n) => {
                    self.sent += n;
                    true
                }
                Err(e) => e.kind() == ErrorKind::WouldBlock,
            },
            None => true,
        }
    }
}

/// Holds `slots` connections of `script` to `addr` until `until`, opening each again when the
/// server is done with it (counted in `reopened`); then closes them all.
fn hold(addr: SocketAddr, script: &Script, slots: usize, until: Instant, reopened: &AtomicU64) {
    let mut conns: Vec<Option<Conn>> = (0..slots).map(|_| None).collect();
    let mut tick = Instant::now();
    while Instant::now() < until {
        for slot in &mut conns {
            if Instant::now() >= until {
                break;
            }
            if slot.as_mut().is_some_and(|c| c.step(script)) {
                continue;
            }
            if slot.take().is_some() {
                reopened.fetch_add(1, Ordering::Relaxed);
            }
            *slot = Conn::open(addr, &script.opener);
        }
        tick += TICK;
        std::thread::sleep(tick.min(until).saturating_duration_since(Instant::now()));
    }
}

/// What the probe saw during one window.
#[derive(Default)]
struct Probe {
    /// Every `/healthz` probe's time in ms, sorted; a failed one (an error, a timeout or not
    /// 200) counts with the time it took to fail.
    healthz_ms: Vec<f64>,
    healthz_failed: u64,
    /// The host's peak TCP buffer memory (every socket, both ends of loopback) as a share of the
    /// kernel's hard limit (`net.ipv4.tcp_mem`); near 1 the kernel starves every socket, honest
    /// ones too. `None` where /proc does not say.
    tcp_mem: Option<f64>,
}

/// Pages of TCP buffer memory in use on the host: `mem` of the `TCP:` line of /proc/net/sockstat.
fn tcp_pages(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| *w == "mem")?;
    words.next()?.parse().ok()
}

/// The kernel's hard limit on [`tcp_pages`]: the third figure of /proc/sys/net/ipv4/tcp_mem.
fn tcp_pages_limit(tcp_mem: &str) -> Option<u64> {
    tcp_mem.split_whitespace().nth(2)?.parse().ok()
}

/// Probes `/healthz` every [`HEALTHZ_EVERY`] within `window`, each on a fresh connection as an
/// outside monitor would, and samples the host's TCP memory after each probe.
fn probe(url: &str, window: Range<Instant>) -> Probe {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let limit = read("/proc/sys/net/ipv4/tcp_mem").as_deref().and_then(tcp_pages_limit).filter(|l| *l > 0);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(HEALTHZ_TIMEOUT))
        .build()
        .into();
    let mut seen = Probe::default();
    let mut tcp_peak = None;
    let mut next = window.start;
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let sent = Instant::now();
        if sent >= window.end {
            seen.healthz_ms.sort_by(f64::total_cmp);
            seen.tcp_mem = limit.zip(tcp_peak).map(|(l, p)| p as f64 / l as f64);
            return seen;
        }
        let ok = agent
            .get(&format!("{url}/healthz"))
            .call()
            .is_ok_and(|mut r| r.status() == 200 && r.body_mut().read_to_string().is_ok());
        seen.healthz_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        seen.healthz_failed += u64::from(!ok);
        if let Some(pages) = read("/proc/net/sockstat").as_deref().and_then(tcp_pages) {
            tcp_peak = tcp_peak.max(Some(pages));
        }
        next = (next + HEALTHZ_EVERY).max(Instant::now());
    }
}

/// What one attack's window gave.
struct Outcome {
    attack: Attack,
    connections: usize,
    seconds: f64,
    accepted: u64,
    busy: u64,
    /// Honest uploads' latencies in ms, sorted.
    honest_ms: Vec<f64>,
    probe: Probe,
    reopened: u64,
    peak_rss: u64,
    rounds: u64,
}

impl Outcome {
    fn honest_per_s(&self) -> f64 {
        self.accepted as f64 / self.seconds
    }

    /// The honest rate as a share of the baseline's.
    fn ratio(&self, baseline: Option<f64>) -> Option<f64> {
        baseline.filter(|b| *b > 0.0).map(|b| self.honest_per_s() / b)
    }

    /// Where the target was missed; empty when it held (no baseline: only RSS counts).
    fn misses(&self, baseline: Option<f64>) -> Vec<String> {
        let mut misses = Vec::new();
        if let Some(r) = self.ratio(baseline).filter(|r| *r < TARGET_HONEST_RATIO) {
            misses.push(format!("honest {:.0}% of none", r * 100.0));
        }
        if self.peak_rss >= TARGET_RSS {
            misses.push(format!("RSS {:.0} MiB", mib(self.peak_rss)));
        }
        misses
    }

    /// The records of BENCH_FORMAT.md's attack.json, plus the busy answers, the probe's
    /// failures, the host's TCP memory and how often the server shed an attack connection. No
    /// latency record where nothing completed within the window.
    fn records(&self, baseline: Option<f64>, keys: &Value) -> Vec<Value> {
        let q = |sorted: &[f64], p: f64| (!sorted.is_empty()).then(|| percentile(sorted, p));
        let polls = self.probe.healthz_ms.len().max(1) as f64;
        let figures = [
            ("honest_per_s", Some(self.honest_per_s()), "per_s"),
            ("honest_ratio", self.ratio(baseline), "ratio"),
            ("honest_p50", q(&self.honest_ms, 0.5), "ms"),
            ("honest_p99", q(&self.honest_ms, 0.99), "ms"),
            ("busy_per_s", Some(self.busy as f64 / self.seconds), "per_s"),
            ("healthz_p99", q(&self.probe.healthz_ms, 0.99), "ms"),
            ("healthz_failed", Some(self.probe.healthz_failed as f64 / polls), "ratio"),
            ("tcp_mem", self.probe.tcp_mem, "ratio"),
            ("reopened_per_s", Some(self.reopened as f64 / self.seconds), "per_s"),
            ("peak_rss", Some(self.peak_rss as f64), "bytes"),
        ];
        figures
            .into_iter()
            .filter_map(|(metric, value, unit)| {
                let mut r = keys.clone();
                r["metric"] = json!(metric);
                r["value"] = json!(value?);
                r["unit"] = json!(unit);
                r["attack"] = json!(self.attack.name());
                r["connections"] = json!(self.connections);
                Some(r)
            })
            .collect()
    }
}

pub fn run(args: Args) -> Result<(), String> {
    let Args { out, server, attack: attacks, seconds, clients, connections, min_clients } = args;
    if !server.is_file() {
        return Err(format!("{}: no such binary (build it with cargo build --release -p hearth-aggregator)", server.display()));
    }
    let clients = usize::from(clients);
    let open_files = raise_open_files()?;
    let room = usize::try_from(open_files).unwrap_or(usize::MAX).saturating_sub(clients + FD_RESERVE);
    let mut outcomes = Vec::new();
    for attack in attacks {
        let wanted = if attack == Attack::Baseline { 0 } else { connections.unwrap_or(attack.connections()) };
        let n = wanted.min(room);
        if n < wanted {
            println!("{}: {n} connections, not {wanted}: this process may open {open_files} files", attack.name());
        }
        println!("{}: {n} connections beside {clients} honest clients for {seconds} s ...", attack.name());
        outcomes.push(one(&server, attack, n, clients, min_clients, Duration::from_secs_f64(seconds))?);
    }

    let baseline = outcomes.iter().find(|o| o.attack == Attack::Baseline).map(Outcome::honest_per_s);
    let params = load_pack(Path::new("models/default"))?.params.values.len();
    let keys = json!({
        "path": "plaintext", "role": "single", "backend": "sqlite", "replicas": 1, "params": params,
        "clients": clients, "min_clients": min_clients, "commit": commit(),
    });
    summary(&outcomes, baseline);
    write_records(&out, outcomes.iter().flat_map(|o| o.records(baseline, &keys)).collect())
}

/// One attack against a fresh server beside the honest clients and the probe.
fn one(binary: &Path, attack: Attack, connections: usize, clients: usize, k: u64, measure: Duration) -> Result<Outcome, String> {
    let dir = PathBuf::from(format!("target/bench/attack-run/{}", attack.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let limit = (attack == Attack::IdleConnections).then_some(IDLE_SERVER_OPEN_FILES);
    let (mut child, url) = start(binary, &dir, &single_env(Encoding::F32, k), limit)?;
    let result = (|| -> Result<Outcome, String> {
        let addr: SocketAddr =
            url.strip_prefix("http://").and_then(|a| a.parse().ok()).ok_or_else(|| format!("no address in {url}"))?;
        let script = Arc::new(attack.script(&honest_update(&task(&agent(), &url)?)?.encode()));
        let from = Instant::now() + WARM_UP;
        let window = from..from + measure;
        let reopened = Arc::new(AtomicU64::new(0));
        let attackers: Vec<JoinHandle<()>> = (0..ATTACK_THREADS)
            .map(|t| connections / ATTACK_THREADS + usize::from(t < connections % ATTACK_THREADS))
            .filter(|&slots| slots > 0)
            .map(|slots| {
                let (script, reopened, until) = (script.clone(), reopened.clone(), window.end);
                std::thread::spawn(move || hold(addr, &script, slots, until, &reopened))
            })
            .collect();
        let probe = {
            let (url, window) = (url.clone(), window.clone());
            std::thread::spawn(move || probe(&url, window))
        };
        let honest = drive(&url, clients, window, true);
        for a in attackers {
            a.join().map_err(|_| "an attack thread panicked")?;
        }
        let probe = probe.join().map_err(|_| "the probe panicked")?;
        let (accepted, busy, mut honest_ms) = honest?;
        // Rounds of K honest uploads spend the privacy budget; once it is spent no round opens and
        // the honest rate would be the budget's, not the attack's.
        let privacy = get_json(&agent(), &format!("{url}/v1/privacy"))?;
        if privacy["training"] != true {
            return Err(format!(
                "{}: the privacy budget ({} rounds of K = {k}) ran out within the window: raise --min-clients",
                attack.name(),
                privacy["rounds_allowed"]
            ));
        }
        honest_ms.sort_by(f64::total_cmp);
        let reopened = reopened.load(Ordering::Relaxed);
        let seconds = measure.as_secs_f64();
        Ok(Outcome { attack, connections, seconds, accepted, busy, honest_ms, probe, reopened, peak_rss: 0, rounds: 0 })
    })();
    let peak_rss = peak_rss(child.id());
    let rounds = metric(&url, "hearth_rounds_closed_total").unwrap_or(0.0) as u64;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome { peak_rss, rounds, ..result? })
}

fn summary(outcomes: &[Outcome], baseline: Option<f64>) {
    let ms = |sorted: &[f64]| if sorted.is_empty() { "-".to_string() } else { format!("{:.1}", percentile(sorted, 0.99)) };
    println!(
        "{:<17} {:>5} {:>9} {:>7} {:>9} {:>7} {:>12} {:>9} {:>10} {:>7} {:>7} {:>9}  target (honest >= {:.0}% of none, RSS < {} MiB)",
        "attack",
        "conns",
        "honest/s",
        "of none",
        "p99 ms",
        "busy/s",
        "/healthz p99",
        "failed",
        "reopened/s",
        "rounds",
        "TCP mem",
        "peak RSS",
        TARGET_HONEST_RATIO * 100.0,
        TARGET_RSS >> 20
    );
    for o in outcomes {
        let misses = o.misses(baseline);
        println!(
            "{:<17} {:>5} {:>9.1} {:>7} {:>9} {:>7.1} {:>12} {:>9} {:>10.1} {:>7} {:>7} {:>5.0} MiB  {}",
            o.attack.name(),
            o.connections,
            o.honest_per_s(),
            o.ratio(baseline).map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
            ms(&o.honest_ms),
            o.busy as f64 / o.seconds,
            ms(&o.probe.healthz_ms),
            format!("{}/{}", o.probe.healthz_failed, o.probe.healthz_ms.len()),
            o.reopened as f64 / o.seconds,
            o.rounds,
            o.probe.tcp_mem.map_or("-".into(), |r| format!("{:.0}%", r * 100.0)),
            mib(o.peak_rss),
            if misses.is_empty() { "held".to_string() } else { format!("missed: {}", misses.join(", ")) }
        );
    }
}

/// This process's open-file limits (soft, hard), from the text of `/proc/self/limits`.
fn open_file_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    let mut numbers = line.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some((numbers.next()??, numbers.next()??))
}

/// Raises this process's soft open-file limit to its hard limit, so that it can open the floods'
/// connections; returns the soft limit. std has no setrlimit and the workspace forbids unsafe
/// code, so `prlimit` sets it on this process from outside.
fn raise_open_files() -> Result<u64, String> {
    let read = || {
        let text = std::fs::read_to_string("/proc/self/limits").map_err(|e| format!("/proc/self/limits: {e}"))?;
        open_file_limits(&text).ok_or_else(|| "/proc/self/limits: no open-file limit".to_string())
    };
    let (soft, hard) = read()?;
    if soft < hard {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
            .status()
            .map_err(|e| format!("prlimit: {e}"))?;
        if !status.success() {
            return Err(format!("prlimit could not raise the open-file limit to {hard}: {status}"));
        }
    }
    Ok(read()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(attack: Attack, accepted: u64, honest_ms: Vec<f64>, peak_rss: u64) -> Outcome {
        Outcome {
            attack,
            connections: attack.connections(),
            seconds: 10.0,
            accepted,
            busy: 0,
            honest_ms,
            probe: Probe { healthz_ms: vec![1.0, 2.0], healthz_failed: 1, tcp_mem: Some(0.25) },
            reopened: 30,
            peak_rss,
            rounds: 3,
        }
    }

    /// Every attack's records carry BENCH_FORMAT.md's metrics, units and keys; the honest rate
    /// is also given as a share of the baseline's, and no latency is made up where nothing
    /// completed.
    #[test]
    fn records_have_the_format_names_and_keys() {
        let keys = json!({"path": "plaintext", "role": "single", "backend": "sqlite", "replicas": 1, "commit": "c"});
        let baseline = outcome(Attack::Baseline, 400, vec![1.0, 2.0, 3.0], 50 << 20);
        let records = baseline.records(Some(baseline.honest_per_s()), &keys);
        for (metric, unit) in [("honest_per_s", "per_s"), ("honest_p99", "ms"), ("healthz_p99", "ms"), ("peak_rss", "bytes")] {
            let r = records.iter().find(|r| r["metric"] == metric).unwrap_or_else(|| panic!("no {metric}"));
            assert_eq!(r["unit"], unit);
            assert_eq!(r["attack"], "none");
            for key in ["path", "role", "backend", "replicas", "commit"] {
                assert_eq!(r[key], keys[key], "{metric} lacks {key}");
            }
            assert!(r["value"].is_number(), "{r}");
        }
        let find = |records: &[Value], m: &str| records.iter().find(|r| r["metric"] == m).map(|r| r["value"].clone());
        assert_eq!(find(&records, "honest_per_s"), Some(json!(40.0)));
        assert_eq!(find(&records, "honest_ratio"), Some(json!(1.0)));
        assert_eq!(find(&records, "healthz_failed"), Some(json!(0.5)));
        assert_eq!(find(&records, "tcp_mem"), Some(json!(0.25)));
        assert_eq!(find(&records, "reopened_per_s"), Some(json!(3.0)));

        let starved = outcome(Attack::SlowBodies, 0, vec![], 50 << 20).records(Some(40.0), &keys);
        assert_eq!(find(&starved, "honest_ratio"), Some(json!(0.0)));
        assert_eq!(find(&starved, "honest_p99"), None);
        assert!(starved.iter().all(|r| r["attack"] == "slow-bodies" && r["connections"] == 128));
        // Without a baseline there is no ratio.
        assert_eq!(find(&outcome(Attack::SlowHeaders, 10, vec![1.0], 0).records(None, &keys), "honest_ratio"), None);
    }

    /// The target: half the baseline's honest rate and RSS under 512 MiB, each miss named.
    #[test]
    fn target_names_each_miss() {
        let ok = outcome(Attack::DownloadFlood, 200, vec![1.0], TARGET_RSS - 1);
        assert!(ok.misses(Some(40.0)).is_empty());
        let bad = outcome(Attack::DownloadFlood, 100, vec![1.0], 3 << 30);
        assert_eq!(bad.misses(Some(40.0)), ["honest 25% of none", "RSS 3072 MiB"]);
        assert_eq!(bad.misses(None), ["RSS 3072 MiB"]);
    }

    /// A slow head never finishes (no blank line, however long it trickles); a slow body
    /// declares the honest upload's length and never sends its last byte; a download is one
    /// whole request.
    #[test]
    fn scripts_never_complete_a_slow_request() {
        let head: Vec<u8> = (0..10_000).map_while(|i| Trickle::Head.byte(i)).collect();
        assert_eq!(head.len(), 10_000);
        assert!(head.starts_with(b"GET /v1/round HTTP/1.1\r\n"));
        assert!(!head.windows(4).any(|w| w == b"\r\n\r\n"));

        let update = vec![7u8; 1000];
        let body = Attack::SlowBodies.script(&update);
        let opener = String::from_utf8(body.opener).unwrap();
        assert!(opener.starts_with("POST /v1/updates HTTP/1.1\r\n"));
        assert!(opener.contains("Content-Length: 1000\r\n") && opener.ends_with("\r\n\r\n"), "{opener}");
        assert_eq!((0..).map_while(|i| body.trickle.byte(i)).count(), 999);

        let download = Attack::DownloadFlood.script(&update);
        assert!(download.opener.ends_with(b"\r\n\r\n") && !download.reads);
        assert_eq!(download.trickle.byte(0), None);
        assert_eq!(Attack::IdleConnections.script(&update).opener, b"");
    }

    /// The names in attack.json are the ones `--attack` takes.
    #[test]
    fn names_are_the_flag_values() {
        use clap::ValueEnum;
        for a in Attack::value_variants() {
            assert_eq!(a.to_possible_value().unwrap().get_name(), a.name());
        }
    }

    #[test]
    fn tcp_memory_is_read_from_proc() {
        let sockstat = "sockets: used 107\nTCP: inuse 7667 orphan 0 tw 15408 alloc 7675 mem 595919\nUDP: inuse 0 mem 0\n";
        assert_eq!(tcp_pages(sockstat), Some(595919));
        assert_eq!(tcp_pages("UDP: inuse 0 mem 3\n"), None);
        assert_eq!(tcp_pages_limit("287898\t383867\t575796\n"), Some(575796));
        assert_eq!(tcp_pages_limit("287898 383867\n"), None);
    }

    #[test]
    fn open_file_limits_are_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             94546                94546                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(open_file_limits(text), Some((1024, 524288)));
        assert_eq!(open_file_limits("Max processes 1 1 processes\n"), None);
        let own = std::fs::read_to_string("/proc/self/limits").unwrap();
        assert!(open_file_limits(&own).is_some(), "{own}");
    }
}
