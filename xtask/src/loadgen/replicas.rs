//! What the PostgreSQL runs of `xtask bench-aggregator` stand on: one throwaway PostgreSQL
//! cluster for the whole run (hearth-testpg), a fresh database per role and run, several replicas
//! of one role on it, and nginx in front of them; plus the per-process figures read from /proc
//! (peak RSS, CPU time), which for PostgreSQL cover the whole cluster's process tree.

use super::start;
use hearth_testpg::Cluster;
use postgres::{Client, NoTls};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Linux reports CPU times in /proc/<pid>/stat in ticks of USER_HZ, which is 100 on every
/// architecture it runs on (sysconf(_SC_CLK_TCK)).
const TICKS_PER_S: f64 = 100.0;

/// The run's PostgreSQL cluster, with pg_stat_statements loaded when this PostgreSQL ships it.
pub(super) struct Pg {
    cluster: Cluster,
    /// The server's main process, whose children are all the cluster's other processes.
    postmaster: u32,
    /// Whether `pg_stat_statements` is queryable from the `postgres` database.
    pub(super) statements: bool,
}

impl Pg {
    /// Starts a cluster in `dir`. pg_stat_statements must be preloaded, which hearth-testpg's
    /// settings do not do: it is set with ALTER SYSTEM and the (still empty) cluster restarted.
    pub(super) fn start(dir: &Path) -> Result<Pg, String> {
        let cluster = Cluster::start(dir).map_err(|e| format!("PostgreSQL for the bench: {e}"))?;
        let mut pg = Pg { cluster, postmaster: 0, statements: false };
        pg.admin()?
            .batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            .map_err(|e| format!("ALTER SYSTEM: {e}"))?;
        pg.cluster.restart();
        let mut admin = pg.admin()?;
        // Without the extension (a PostgreSQL built without contrib) the statement counts are
        // left out, and the other per-upload figures still stand.
        pg.statements = admin.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").is_ok();
        // A backend's parent is the postmaster (hearth-testpg may have moved the cluster's
        // directory, so its pid file is not where it was asked for).
        let backend = backend_pid(&mut admin)?;
        pg.postmaster = stat_fields(backend)
            .and_then(|f| f.get(1)?.parse().ok())
            .ok_or_else(|| format!("no parent of PostgreSQL backend {backend} in /proc"))?;
        Ok(pg)
    }

    /// A client of the `postgres` database: statistics are cluster-wide views, so reading them
    /// from there keeps the reader's own work out of the measured database's counters.
    pub(super) fn admin(&self) -> Result<Client, String> {
        Client::connect(&self.url("postgres"), NoTls).map_err(|e| format!("PostgreSQL: {e}"))
    }

    /// A new, empty database; its URL.
    pub(super) fn database(&self, name: &str) -> String {
        self.cluster.database(name)
    }

    /// Drops the database of `url` (its servers are gone), so that the cluster stays small
    /// over the run.
    pub(super) fn drop_database(&self, url: &str) -> Result<(), String> {
        let name = db_name(url);
        self.admin()?
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .map_err(|e| format!("{name}: {e}"))
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://hearth@127.0.0.1:{}/{database}", self.cluster.port())
    }

    /// CPU seconds the cluster has spent, less the processes in `except` (the bench's own
    /// readers): its live processes' own time, plus what its exited backends spent (the
    /// postmaster reaps them, so their time is its children's time).
    pub(super) fn cpu_s(&self, except: &[u32]) -> f64 {
        let reaped = cpu_ticks(self.postmaster).map_or(0, |t| t.children);
        let tree = tree_of(self.postmaster);
        let own: u64 = tree.iter().filter(|p| !except.contains(p)).filter_map(|&p| cpu_ticks(p)).map(|t| t.own).sum();
        (own + reaped) as f64 / TICKS_PER_S
    }
}

/// The server process of `client`'s connection.
pub(super) fn backend_pid(client: &mut Client) -> Result<u32, String> {
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).map_err(|e| e.to_string())?.get(0);
    Ok(pid as u32)
}

/// `root` and its direct children.
fn tree_of(root: u32) -> Vec<u32> {
    std::iter::once(root).chain(children(root)).collect()
}

/// The database name in one of [`Pg::database`]'s URLs (its last path segment, `[a-z0-9_]`).
pub(super) fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// Direct children of `parent`, from /proc.
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(parent))
        .collect()
}

/// The fields of /proc/<pid>/stat after the command name (state first), which may itself hold
/// spaces and parentheses.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
}

struct Ticks {
    /// utime + stime.
    own: u64,
    /// cutime + cstime: waited-for children's.
    children: u64,
}

fn cpu_ticks(pid: u32) -> Option<Ticks> {
    let f = stat_fields(pid)?;
    // utime, stime, cutime, cstime: fields 14 to 17 of stat, 12 to 15 after the name.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Ticks { own: n(11)? + n(12)?, children: n(13)? + n(14)? })
}

/// CPU seconds one process has spent.
pub(super) fn process_cpu_s(pid: u32) -> f64 {
    cpu_ticks(pid).map_or(0.0, |t| t.own as f64 / TICKS_PER_S)
}

/// The proportional set size of `pid` (its private pages plus its share of pages it maps with
/// others): summed over processes that share memory, as PostgreSQL's do its shared buffers, it
/// counts each page once, where summed RSS would count the buffers once per backend.
fn pss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// Samples the cluster's summed PSS every [`Self::EVERY`] until [`PssPeak::stop`], which
/// returns the largest sum seen.
pub(super) struct PssPeak {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl PssPeak {
    const EVERY: Duration = Duration::from_millis(200);

    pub(super) fn start(pg: &Pg) -> PssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let (postmaster, flag) = (pg.postmaster, stop.clone());
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                let sum = tree_of(postmaster).into_iter().map(pss).sum();
                peak = peak.max(sum);
                std::thread::sleep(Self::EVERY);
            }
            peak
        });
        PssPeak { stop, thread }
    }

    pub(super) fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The `n` replicas of one role on the database at `url`, each with its own port; each is
/// started with `--init` (the first creates the store, the others find it made), one after
/// another so that the store exists before the second opens it.
pub(super) fn start_replicas(
    binary: &Path,
    dir: &Path,
    url: &str,
    env: &[(&'static str, String)],
    n: usize,
) -> Result<Vec<(Child, String)>, String> {
    let mut env = env.to_vec();
    env.push(("HEARTH_AGG__DATABASE", format!("{url:?}")));
    let mut started = Vec::new();
    for i in 0..n {
        match start(binary, &dir.join(format!("replica-{i}")), &env, None) {
            Ok(r) => started.push(r),
            Err(e) => {
                for (mut child, _) in started {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// The deployment's own proxy configuration (docs/operations.md), which the bench runs as
/// written but for its ports: nginx's and the three replicas', these four numbers in the file.
const NGINX_CONF: &str = include_str!("../../../deploy/nginx-replicas.conf");
const CONF_FRONT_PORT: &str = "8100";
const CONF_REPLICA_PORTS: [&str; 3] = ["8101", "8102", "8103"];

/// nginx in front of the replicas: a child process with its prefix (pid, temporary files, the
/// configuration with this run's ports) in a directory of its own; stopped on drop.
pub(super) struct Nginx {
    master: Child,
    pub(super) url: String,
}

impl Nginx {
    /// Starts `binary` (Debian's /usr/sbin/nginx) in `dir` in front of the replicas at
    /// `upstreams` (`http://127.0.0.1:<port>` each, as many as the file names), and waits until
    /// it accepts.
    pub(super) fn start(binary: &Path, dir: &Path, upstreams: &[String]) -> Result<Nginx, String> {
        if upstreams.len() != CONF_REPLICA_PORTS.len() {
            return Err(format!(
                "deploy/nginx-replicas.conf fronts {} replicas, not {}",
                CONF_REPLICA_PORTS.len(),
                upstreams.len()
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let dir = std::path::absolute(dir).map_err(|e| e.to_string())?;
        // The file listens on every address, as a deployment does.
        let port = TcpListener::bind("0.0.0.0:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let mut ports = vec![(CONF_FRONT_PORT, port.to_string())];
        for (from, url) in CONF_REPLICA_PORTS.iter().zip(upstreams) {
            ports.push((from, url.rsplit(':').next().unwrap_or_default().trim_end_matches('/').to_string()));
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, with_ports(NGINX_CONF, &ports)?).map_err(|e| e.to_string())?;
        let log = dir.join("nginx.stderr");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let master = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            // Debian's build opens /var/log/nginx/error.log before it reads the configuration's
            // `error_log`: this keeps even that in `dir`.
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("{}: {e} (scripts/setup.sh installs Debian's nginx)", binary.display()))?;
        let mut nginx = Nginx { master, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = nginx.master.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("nginx did not start ({exited:?}): {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// The summed peak RSS of the master and its workers.
    pub(super) fn peak_rss(&self) -> u64 {
        tree_of(self.master.id()).into_iter().map(super::peak_rss).sum()
    }
}

impl Drop for Nginx {
    /// SIGTERM (a fast shutdown: the master stops its workers); SIGKILL would leave the workers
    /// running without it.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.master.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.master.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// `conf` with every number that is one of `ports`' first halves (a whole run of digits, so
/// that neither a longer number containing one nor a port written in is touched) made the
/// second; each must occur.
fn with_ports(conf: &str, ports: &[(&str, String)]) -> Result<String, String> {
    if let Some((missing, _)) = ports.iter().find(|(from, _)| !conf.contains(from)) {
        return Err(format!("deploy/nginx-replicas.conf no longer mentions port {missing}"));
    }
    let mut out = String::with_capacity(conf.len());
    let mut digits = String::new();
    for c in conf.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        match ports.iter().find(|(from, _)| *from == digits) {
            Some((_, to)) => out.push_str(to),
            None => out.push_str(&digits),
        }
        digits.clear();
        out.push(c);
    }
    out.pop();
    Ok(out)
}

/// Samples, every [`Self::EVERY`] from its own connection, how many backends of one database
/// wait on a heavyweight lock (`pg_stat_activity.wait_event_type = 'Lock'`: a row lock, an
/// advisory lock, a transaction id); the sum over samples of waiting backends times the time
/// since the previous sample estimates the lock wait, in microseconds.
pub(super) struct LockWait {
    stop: Arc<AtomicBool>,
    micros: Arc<AtomicU64>,
    /// The sampler's backend: its CPU is the bench's, not the aggregator's.
    pub(super) backend: u32,
    thread: JoinHandle<()>,
}

impl LockWait {
    const EVERY: Duration = Duration::from_millis(10);

    pub(super) fn start(pg: &Pg, database: &str) -> Result<LockWait, String> {
        let mut client = pg.admin()?;
        let backend = backend_pid(&mut client)?;
        let query = client
            .prepare("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'")
            .map_err(|e| e.to_string())?;
        let (stop, micros) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (flag, sum, database) = (stop.clone(), micros.clone(), database.to_string());
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Self::EVERY);
                let Ok(row) = client.query_one(&query, &[&database]) else { break };
                let now = Instant::now();
                let waiting = row.get::<_, i64>(0) as u64;
                sum.fetch_add(waiting * (now - last).as_micros() as u64, Ordering::Relaxed);
                last = now;
            }
        });
        Ok(LockWait { stop, micros, backend, thread })
    }

    /// Lock wait so far, in ms.
    pub(super) fn ms(&self) -> f64 {
        self.micros.load(Ordering::Relaxed) as f64 / 1e3
    }

    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deployment's file gets this run's four ports, each wherever the file has it, and no
    /// other number changes (a port written in that contains one of the file's is left alone).
    #[test]
    fn the_deployed_proxy_configuration_gets_the_runs_ports() {
        let ports: Vec<(&str, String)> =
            vec![("8100", "38101".into()), ("8101", "48100".into()), ("8102", "8103".into()), ("8103", "5000".into())];
        let conf = with_ports(NGINX_CONF, &ports).unwrap();
        for line in ["listen 38101;", "server 127.0.0.1:48100 ", "server 127.0.0.1:8103 ", "server 127.0.0.1:5000 "] {
            assert!(conf.contains(line), "{line}: {conf}");
        }
        let numbers: Vec<&str> = conf.split(|c: char| !c.is_ascii_digit()).collect();
        assert!(!numbers.iter().any(|n| ["8100", "8101", "8102"].contains(n)), "{conf}");
        assert_eq!(conf.lines().count(), NGINX_CONF.lines().count());
        assert_eq!(with_ports("a 12 b", &[("12", "3".into())]).unwrap(), "a 3 b");
        assert_eq!(with_ports("a 123 b 12", &[("12", "3".into())]).unwrap(), "a 123 b 3");
        assert!(with_ports("a 1 b", &[("12", "3".into())]).is_err());
    }

    #[test]
    fn a_database_url_names_its_database() {
        assert_eq!(db_name("postgres://hearth@127.0.0.1:5432/bench_1_2"), "bench_1_2");
    }
}
