//! The deployment the README shows, run as written: three `single` replicas sharing one
//! PostgreSQL database behind nginx with `deploy/nginx-replicas.conf`, only the four ports
//! replaced. Through nginx's port alone a round is filled and closed once and its model served;
//! then a replica is SIGKILLed under upload load and uploads are accepted again within seconds,
//! while `/readyz` through nginx never stops answering 200.

mod common;

use common::*;
use hearth_core::learning::round::RoundTask;
use hearth_core::model::pack::ModelPack;
use hearth_core::privacy::wire::Encoding;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The file operators copy; the test runs this text, not a copy of it.
const CONF: &str = include_str!("../../../deploy/nginx-replicas.conf");
/// Where Debian's `nginx` package (installed by scripts/setup.sh) puts the binary.
const NGINX: &str = "/usr/sbin/nginx";
/// nginx's port and the replicas' in [`CONF`], replaced by the ports this test got.
const CONF_FRONT_PORT: &str = "8100";
const CONF_REPLICA_PORTS: [&str; REPLICAS] = ["8101", "8102", "8103"];

const REPLICAS: usize = 3;
/// Far above what the kill phase uploads (`UPLOADERS` × `MAX_ATTEMPTS`), so that its round stays
/// open and its task valid throughout.
const K: u64 = 40;
const UPLOADERS: usize = 3;
const MAX_ATTEMPTS: usize = 12;
/// Uploads accepted in a row, each sent after the kill, that show nginx has stopped using the
/// dead replica.
const RECOVERED: usize = 4;
/// How soon after the kill uploads must be accepted again.
const RECOVER_WITHIN: Duration = Duration::from_secs(5);
/// How long after the kill an upload may still be answered 502: one in flight to the replica as
/// it died, or sent on a kept-alive connection to it before nginx noticed the close.
const BAD_GATEWAY_WITHIN: Duration = Duration::from_secs(2);
/// A client's pause between uploads, so that the kill lands among them.
const PACE: Duration = Duration::from_millis(50);

/// nginx as a child process, stopped when dropped.
struct Nginx {
    child: Child,
    url: String,
    stderr: PathBuf,
}

impl Nginx {
    /// Runs [`CONF`] with nginx's port and the replicas' ports replaced, in `dir` as its prefix.
    fn start(dir: &Path, replicas: &[Server]) -> Nginx {
        assert!(Path::new(NGINX).exists(), "{NGINX} is missing: run scripts/setup.sh, which installs Debian's nginx package");
        std::fs::create_dir_all(dir).unwrap();
        let mut ports: Vec<(&str, String)> =
            CONF_REPLICA_PORTS.iter().zip(replicas).map(|(from, r)| (*from, port_of(&r.url).to_string())).collect();
        // A free port is only free until someone binds it: another pick if nginx lost it.
        for _ in 0..3 {
            let front = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
            ports.retain(|(from, _)| *from != CONF_FRONT_PORT);
            ports.push((CONF_FRONT_PORT, front.to_string()));
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, substitute(CONF, &ports)).unwrap();
            let stderr = dir.join("nginx.stderr");
            let child = Command::new(NGINX)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .unwrap();
            let mut nginx = Nginx { child, url: format!("http://127.0.0.1:{front}"), stderr };
            if nginx.wait_listening(front) {
                return nginx;
            }
            let log = nginx.log();
            assert!(log.contains("Address already in use"), "nginx did not start: {log}");
        }
        panic!("nginx found no free port in 3 tries");
    }

    /// Whether nginx accepts connections on `port`; false once it has exited.
    fn wait_listening(&mut self, port: u16) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx never listened on {port}: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master then stops its workers, which would otherwise live on
        // with the listening socket.
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// `text` with each `from` replaced by its `to` in one pass, so that a port written in never
/// matches another `from`. Each `from` must occur: a renamed port in the file fails here.
fn substitute(text: &str, pairs: &[(&str, String)]) -> String {
    for (from, _) in pairs {
        assert!(text.contains(from), "deploy/nginx-replicas.conf no longer mentions port {from}");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while let Some(c) = rest.chars().next() {
        for (from, to) in pairs {
            if let Some(after) = rest.strip_prefix(from) {
                out.push_str(to);
                rest = after;
                continue 'scan;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `REPLICAS` replicas of one store, each in a directory of its own naming the database `url`,
/// started at once (the first `--init` creates the store, the others find it).
fn start_replicas(root: &Path, url: &str, toml: &str) -> Vec<Server> {
    let dirs: Vec<PathBuf> = (0..REPLICAS)
        .map(|i| {
            let dir = root.join(format!("replica-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("database.url"), url).unwrap();
            dir
        })
        .collect();
    std::thread::scope(|s| {
        let starting: Vec<_> = dirs.iter().map(|dir| s.spawn(move || Server::start(dir, toml))).collect();
        starting.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn task_at(url: &str) -> RoundTask {
    let (status, _, body) = get(&format!("{url}/v1/round"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The pack served at `url` and its ETag. Both files must come from replicas that serve the
/// same version, which holds once every replica has loaded it.
fn pack_at_url(url: &str) -> (ModelPack, String) {
    let (s1, h, manifest) = get(&format!("{url}/v1/model/manifest.json"));
    let (s2, _, onnx) = get(&format!("{url}/v1/model/model.onnx"));
    assert_eq!((s1, s2), (200, 200));
    (pack_at(&onnx, &manifest), header(&h, "etag").unwrap().to_string())
}

fn ready_status(url: &str) -> u16 {
    get(&format!("{url}/readyz")).0
}

/// The sum of `name`'s samples on `server`, whatever their labels.
fn metric_sum(server: &Server, name: &str) -> f64 {
    let (_, _, body) = get(&server.url("/metrics"));
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with([' ', '{'])))
        .map(|rest| rest.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// One upload through nginx: when it was sent and answered, and its status.
struct Attempt {
    sent: Instant,
    answered: Instant,
    status: u16,
}

#[test]
fn three_replicas_behind_nginx_as_deployed() {
    let started = Instant::now();
    let root = scratch("proxy");
    let url = postgres_database("proxy");
    let mut replicas = start_replicas(&root, &url, &config(&small_pack(&root), K, ""));
    let nginx = Nginx::start(&root.join("nginx"), &replicas);

    let until = Instant::now() + Duration::from_secs(10);
    while ready_status(&nginx.url) != 200 {
        assert!(Instant::now() < until, "/readyz through nginx never answered 200: {}", nginx.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // nginx passes on an upload as large as the default model's f32 update (this round's model
    // is smaller, so the replica refuses it, in JSON), and refuses a larger one than its limit
    // itself (an HTML page).
    let default = default_pack();
    let default =
        pack_at(&std::fs::read(default.join("model.onnx")).unwrap(), &std::fs::read(default.join("manifest.json")).unwrap());
    let largest = Encoding::F32.encoded_len(default.params.values.len());
    let (status, body) = post(&nginx.url("/v1/updates"), UPDATE_TYPE, &vec![0; largest]);
    assert_eq!((status, body["error"].as_str()), (413, Some("payload_too_large")), "{body}");
    let (status, body) = post(&nginx.url("/v1/updates"), UPDATE_TYPE, &vec![0; (2 << 20) + 1]);
    assert_eq!((status, body), (413, serde_json::Value::Null), "nginx's own limit is 2 MiB");

    // A round filled and closed through nginx alone.
    let task = task_at(&nginx.url);
    let (before, before_etag) = pack_at_url(&nginx.url);
    let params = before.params.values.len();
    let updates: Vec<_> = (0..K).map(|i| honest_update(&task, params, 1_000 + i, Encoding::F32)).collect();
    std::thread::scope(|s| {
        for t in 0..UPLOADERS {
            let (nginx, updates) = (&nginx, &updates);
            s.spawn(move || {
                for (i, u) in updates.iter().enumerate().skip(t).step_by(UPLOADERS) {
                    let (status, body) = post(&nginx.url("/v1/updates"), UPDATE_TYPE, &u.encode());
                    assert_eq!(status, 202, "update {i}: {body}");
                }
            });
        }
    });
    // Every replica moves on to the next round (each checked directly, so that the pack below
    // comes whole from whichever replicas nginx picks).
    let tasks: Vec<RoundTask> = replicas
        .iter()
        .map(|r| {
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let t = r.task();
                if t.round_id != task.round_id {
                    return t;
                }
                assert!(Instant::now() < until, "{} still serves round {}", r.url, task.round_id);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect();
    let next = tasks[0].clone();
    assert!(tasks.iter().all(|t| t.round_id == next.round_id), "the replicas disagree on the next round");
    let closed: f64 = replicas.iter().map(|r| metric_sum(r, "hearth_rounds_closed_total")).sum();
    assert_eq!(closed, 1.0, "exactly one replica closes the round");
    for _ in 0..2 * REPLICAS {
        assert_eq!(task_at(&nginx.url).round_id, next.round_id, "nginx serves the next round from every replica");
    }
    let (after, after_etag) = pack_at_url(&nginx.url);
    assert_ne!(after_etag, before_etag);
    assert_fedavg(&before.params, &after.params, 0.01, &mean(&updates));

    // One replica SIGKILLed among uploads; /readyz probed through nginx all along.
    let killed_at: OnceLock<Instant> = OnceLock::new();
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (attempts, probes) = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(ready_status(&nginx.url));
                std::thread::sleep(Duration::from_millis(20));
            }
            statuses
        });
        let uploaders: Vec<_> = (0..UPLOADERS as u64)
            .map(|t| {
                let (nginx, next, killed_at, acked) = (&nginx, &next, &killed_at, &acked);
                s.spawn(move || {
                    let mut attempts = Vec::new();
                    for a in 0..MAX_ATTEMPTS as u64 {
                        let body = honest_update(next, params, 10_000 + 100 * t + a, Encoding::F32).encode();
                        let sent = Instant::now();
                        let (status, _) = post(&nginx.url("/v1/updates"), UPDATE_TYPE, &body);
                        attempts.push(Attempt { sent, answered: Instant::now(), status });
                        if status == 202 {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        let after_kill = |a: &Attempt| killed_at.get().is_some_and(|k| a.sent > *k);
                        if attempts.len() >= RECOVERED
                            && attempts[attempts.len() - RECOVERED..].iter().all(|a| after_kill(a) && a.status == 202)
                        {
                            break;
                        }
                        std::thread::sleep(PACE);
                    }
                    attempts
                })
            })
            .collect();
        let until = Instant::now() + Duration::from_secs(10);
        while acked.load(Ordering::Relaxed) < UPLOADERS as u64 {
            assert!(Instant::now() < until, "uploads through nginx are not accepted before the kill");
            std::thread::sleep(Duration::from_millis(5));
        }
        killed_at.set(Instant::now()).unwrap();
        replicas[1].sigkill();
        let attempts: Vec<Vec<Attempt>> = uploaders.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        (attempts, prober.join().unwrap())
    });

    let killed_at = *killed_at.get().unwrap();
    let mut bad_gateway = 0;
    for (t, attempts) in attempts.iter().enumerate() {
        let statuses: Vec<u16> = attempts.iter().map(|a| a.status).collect();
        for a in attempts {
            match a.status {
                202 => {}
                // nginx does not pass on a POST it sent to the replica that died.
                502 if a.answered > killed_at && a.sent < killed_at + BAD_GATEWAY_WITHIN => bad_gateway += 1,
                _ => panic!(
                    "uploader {t}: {statuses:?}; one was answered {} after the kill",
                    a.answered.checked_duration_since(killed_at).map_or("before".into(), |d| format!("{d:?}"))
                ),
            }
        }
        let tail = &attempts[attempts.len().saturating_sub(RECOVERED)..];
        assert!(
            tail.len() == RECOVERED && tail.iter().all(|a| a.sent > killed_at && a.status == 202),
            "uploader {t}: no {RECOVERED} uploads accepted in a row after the kill: {statuses:?}"
        );
        let recovered = tail.last().unwrap().answered - killed_at;
        assert!(recovered < RECOVER_WITHIN, "uploader {t} recovered {} ms after the kill", recovered.as_millis());
    }
    assert!(probes.len() > 5, "too few /readyz probes: {probes:?}");
    assert!(probes.iter().all(|&s| s == 200), "/readyz through nginx answered {probes:?}");

    // Every accepted upload is counted; a 502 may or may not have been stored before the replica
    // died.
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let stored: i64 = db.query_one("SELECT accepted FROM rounds WHERE id = $1", &[&(next.round_id as i64)]).unwrap().get(0);
    let acked = acked.load(Ordering::Relaxed) as i64;
    assert!((acked..=acked + bad_gateway).contains(&stored), "round holds {stored}: {acked} accepted, {bad_gateway} 502s");

    let log = nginx.log();
    assert!(!log.contains("client:"), "nginx logged a client's address: {log}");
    eprintln!(
        "proxy: {acked} uploads accepted and {bad_gateway} answered 502 around the kill; {} /readyz probes all 200; \
         test took {} ms",
        probes.len(),
        started.elapsed().as_millis()
    );
}
