//! Throwaway PostgreSQL clusters for Hearth's tests and benchmarks.
//!
//! A [`Cluster`] is a real PostgreSQL server (Debian's `initdb`, `pg_ctl` and `postgres`; no
//! mocks) in a directory of its own: data in `<dir>/data`, the server log in
//! `<dir>/postgres.log`, the unix socket in `<dir>`, TCP on a free port of 127.0.0.1, superuser
//! `hearth` with trust authentication. [`Cluster::database`] gives each test a database of its
//! own, so tests can share one cluster ([`Cluster::shared`]).
//!
//! The binaries come from `$HEARTH_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`,
//! else `PATH`; `scripts/setup.sh` installs Debian's `postgresql`. PostgreSQL refuses to run as
//! root, so under root the cluster runs as the `postgres` system user (through `runuser`), which
//! must be able to search every parent of the cluster's directory.
//!
//! A cluster never outlives the process that started it: a detached watcher process stops it and
//! removes its directory once that process is gone, also when the process was killed or exited
//! without dropping the cluster (as it never drops [`Cluster::shared`]'s).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::{env, fs, panic, process, thread};

/// Why a cluster could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `initdb` where the binaries are looked for.
    #[error(
        "no PostgreSQL server binaries (initdb) in {looked_in}: run scripts/setup.sh \
         (installs Debian's postgresql) or point HEARTH_PG_BIN at them"
    )]
    NoBinaries {
        /// Where they were looked for.
        looked_in: String,
    },
    /// Running as root, the cluster runs as the `postgres` user, which cannot search `dir`, a
    /// parent of the cluster's directory.
    #[error(
        "{} is not searchable by the postgres user, which runs the cluster when root starts it: \
         put the cluster elsewhere or make that directory searchable (chmod o+x)",
        dir.display()
    )]
    NotTraversable {
        /// The outermost parent the `postgres` user cannot search.
        dir: PathBuf,
    },
    /// A file system or network step failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done, with the path or address.
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
    /// `pg_ctl start` failed; the server's log usually says why.
    #[error("`{command}` failed ({status}): {stderr}\nlast lines of the server log:\n{log_tail}")]
    Start {
        /// The `pg_ctl start` command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
        /// The last lines of `<dir>/postgres.log`.
        log_tail: String,
    },
}

/// A running PostgreSQL cluster, stopped and deleted (directory and all) on drop.
///
/// Every method but [`Cluster::start`] panics on failure, with the [`Error`]: these are test
/// fixtures, and a test cannot go on without its database.
pub struct Cluster {
    server: Server,
    /// Whether the server is up: `stop` is idempotent, and `restart` starts a stopped server.
    running: Mutex<bool>,
    /// The watcher (see [`spawn_watcher`]); killed on drop, which does its work itself.
    watcher: Child,
}

impl Cluster {
    /// Creates a cluster in `dir` (removed first if present, after stopping any server left
    /// running there) with `initdb`, and starts it with `pg_ctl -w start` on a free port of
    /// 127.0.0.1, its unix socket in `dir`.
    ///
    /// `dir` is best short: a unix socket path (`<dir>/.s.PGSQL.<port>`) has at most 107 bytes.
    pub fn start(dir: &Path) -> Result<Cluster, Error> {
        let tools = Tools::find()?;
        let dir = std::path::absolute(dir).map_err(io_error(format!("resolve {}", dir.display())))?;
        let port = free_port()?;
        let mut server = Server { tools, dir, port };
        if let Err(e) = server.prepare_dir() {
            let Error::NotTraversable { dir: blocked } = e else { return Err(e) };
            // Under root, a checkout in a private home (/root is mode 700) cannot hold a cluster
            // the postgres user runs: the cluster goes to the system's temporary directory
            // instead, which the watcher removes like any other.
            static MOVED: AtomicU32 = AtomicU32::new(0);
            let _ = fs::remove_dir_all(&server.dir);
            let moved =
                env::temp_dir().join(format!("hearth-testpg-{}-{}", process::id(), MOVED.fetch_add(1, Ordering::Relaxed)));
            eprintln!(
                "hearth-testpg: the postgres user cannot search {}; the cluster for {} runs in {}",
                blocked.display(),
                server.dir.display(),
                moved.display()
            );
            server.dir = moved;
            server.prepare_dir()?;
        }
        let watcher = spawn_watcher(&server)?;
        // From here on, a failure drops the cluster, which kills the watcher and removes `dir`.
        let mut cluster = Cluster { server, running: Mutex::new(false), watcher };
        cluster.server.init()?;
        cluster.server.start()?;
        *cluster.running.get_mut().unwrap_or_else(PoisonError::into_inner) = true;
        Ok(cluster)
    }

    /// The process's one shared cluster, started in `dir` by the first call (later calls return
    /// it whatever their `dir`). Statics are never dropped: the watcher stops the cluster and
    /// removes `dir` once the process has ended.
    pub fn shared(dir: &Path) -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start(dir).unwrap_or_else(|e| panic!("hearth-testpg: {e}")))
    }

    /// Creates a database named after `name` (lowercased, anything but ASCII letters and digits
    /// made `_`, cut to 32 characters) plus this process's id and a counter, so that every call
    /// gets a new, empty one. Returns its URL, `postgres://hearth@127.0.0.1:<port>/<database>`,
    /// as the `postgres` and `tokio-postgres` crates take it.
    pub fn database(&self, name: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base: String =
            name.chars().take(32).map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let database = format!("{base}_{}_{}", process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let admin = self.url("postgres");
        // Through the `postgres` client rather than the `createdb` binary: the aggregator builds
        // that client anyway, it needs no process per database, and it checks the very URL form
        // this returns. It runs on a thread of its own because the client blocks on a tokio
        // runtime of its own, which panics on a thread that is already in one (#[tokio::test]).
        let created = thread::scope(|scope| {
            scope
                .spawn(|| -> Result<(), postgres::Error> {
                    let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
                    // `database` is only [a-z0-9_]: quoting cannot be escaped from.
                    client.batch_execute(&format!("CREATE DATABASE \"{database}\""))
                })
                .join()
        });
        match created {
            Ok(Ok(())) => self.url(&database),
            Ok(Err(e)) => panic!("hearth-testpg: CREATE DATABASE {database} at {admin}: {e}"),
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// The port the server listens on at 127.0.0.1 (the same across restarts).
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// Stops the server with `pg_ctl stop -m immediate` (no shutdown checkpoint: the next start
    /// runs crash recovery, as after a power cut) and starts it again on the same port and data.
    /// For fault tests: PostgreSQL restarting under load. Starts a stopped server.
    pub fn restart(&self) {
        let mut running = self.lock();
        if *running {
            self.server.stop("immediate").unwrap_or_else(|e| panic!("hearth-testpg: {e}"));
            *running = false;
        }
        self.server.start().unwrap_or_else(|e| panic!("hearth-testpg: {e}"));
        *running = true;
    }

    /// Stops the server with `pg_ctl stop -m fast` (clients disconnected, a clean shutdown);
    /// does nothing when it is already stopped. The directory stays until drop.
    pub fn stop(&self) {
        let mut running = self.lock();
        if *running {
            self.server.stop("fast").unwrap_or_else(|e| panic!("hearth-testpg: {e}"));
            *running = false;
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // A failed stop or start panics while holding the lock, with the flag still saying
        // whether the server is up: poisoning means nothing here.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://hearth@127.0.0.1:{}/{database}", self.server.port)
    }
}

impl Drop for Cluster {
    /// Stops the server and removes the directory. Failures are printed, not raised: a panic
    /// in drop while a test already panics would abort the whole test binary.
    fn drop(&mut self) {
        let running = *self.running.get_mut().unwrap_or_else(PoisonError::into_inner);
        // Immediate rather than fast: the data is deleted next, so a shutdown checkpoint (an
        // fsync of everything the test wrote) would only cost time.
        if running && let Err(e) = self.server.stop("immediate") {
            eprintln!("hearth-testpg: {e}");
        }
        // Errors ignored: kill fails only when the watcher has already exited, which is what
        // it is for; wait reaps it.
        let _ = self.watcher.kill();
        let _ = self.watcher.wait();
        if let Err(e) = fs::remove_dir_all(&self.server.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            eprintln!("hearth-testpg: remove {}: {e}", self.server.dir.display());
        }
    }
}

/// The PostgreSQL binaries, and whom they run as.
struct Tools {
    bin: PathBuf,
    /// Whether commands run as the `postgres` user (through `runuser`): we are root, and
    /// PostgreSQL refuses root.
    as_postgres: bool,
}

impl Tools {
    fn find() -> Result<Tools, Error> {
        Ok(Tools { bin: find_bin()?, as_postgres: rustix::process::geteuid().is_root() })
    }

    /// The command line running `program args` as the cluster's user.
    fn argv(&self, program: &OsStr, args: &[&OsStr]) -> Vec<OsString> {
        let runuser: &[&str] = if self.as_postgres { &["runuser", "-u", "postgres", "--"] } else { &[] };
        let runuser = runuser.iter().map(OsString::from);
        let command = std::iter::once(program).chain(args.iter().copied()).map(OsStr::to_owned);
        runuser.chain(command).collect()
    }
}

/// The directory holding `initdb`: `$HEARTH_PG_BIN`, else the highest version's under Debian's
/// /usr/lib/postgresql, else the first on `PATH`.
fn find_bin() -> Result<PathBuf, Error> {
    if let Some(bin) = env::var_os("HEARTH_PG_BIN") {
        let bin = PathBuf::from(bin);
        if bin.join("initdb").is_file() {
            return Ok(bin);
        }
        return Err(Error::NoBinaries { looked_in: format!("HEARTH_PG_BIN={}", bin.display()) });
    }
    let debian = fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten();
    let newest = debian
        .filter_map(|entry| {
            // Versions are "15", or "9.6" before 10: compared part by part as numbers.
            let version: Vec<u32> =
                entry.file_name().to_str()?.split('.').map(|part| part.parse().ok()).collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max();
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    env::var_os("PATH")
        .iter()
        .flat_map(env::split_paths)
        .find(|dir| dir.join("initdb").is_file())
        .ok_or_else(|| Error::NoBinaries { looked_in: "/usr/lib/postgresql/*/bin or PATH".into() })
}

/// One cluster's binaries, directory and port.
struct Server {
    tools: Tools,
    /// Absolute.
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// `pg_ctl -D <data> args` as the cluster's user.
    fn pg_ctl(&self, args: &[&OsStr]) -> Vec<OsString> {
        let data = self.data();
        let args: Vec<&OsStr> = [OsStr::new("-D"), data.as_os_str()].into_iter().chain(args.iter().copied()).collect();
        self.tools.argv(self.tools.bin.join("pg_ctl").as_os_str(), &args)
    }

    /// An empty `dir` the cluster's user owns. A server still running on an old cluster there
    /// (a test process killed along with its watcher) is stopped first, best effort: if it is
    /// not, it shuts itself down once it finds its data directory gone.
    fn prepare_dir(&self) -> Result<(), Error> {
        if self.data().join("postmaster.pid").exists() {
            let _ = run(&self.pg_ctl(&[OsStr::new("-m"), OsStr::new("immediate"), OsStr::new("stop")]));
        }
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::Io { action: format!("remove {}", self.dir.display()), source: e });
            }
            _ => {}
        }
        fs::create_dir_all(&self.dir).map_err(io_error(format!("create {}", self.dir.display())))?;
        if self.tools.as_postgres {
            self.check_searchable()?;
            run(&[OsString::from("chown"), OsString::from("postgres:"), self.dir.clone().into()])?;
        }
        Ok(())
    }

    /// Checks that the `postgres` user can search every parent of `dir`, outermost first. One
    /// shell as that user tests them all (permission bits, groups and ACLs alike) and exits 3
    /// naming the first it cannot search; other failures (no such user) are `runuser`'s.
    fn check_searchable(&self) -> Result<(), Error> {
        const SCRIPT: &str = r#"for d; do [ -x "$d" ] || { printf '%s' "$d" >&2; exit 3; }; done"#;
        let mut parents: Vec<&OsStr> = self.dir.ancestors().skip(1).map(Path::as_os_str).collect();
        parents.reverse();
        let args: Vec<&OsStr> = [OsStr::new("-c"), OsStr::new(SCRIPT), OsStr::new("sh")].into_iter().chain(parents).collect();
        match run(&self.tools.argv(OsStr::new("sh"), &args)) {
            Err(Error::Command { status, stderr, .. }) if status.code() == Some(3) => {
                Err(Error::NotTraversable { dir: stderr.into() })
            }
            result => result,
        }
    }

    /// initdb, then the server's settings appended to its postgresql.conf.
    fn init(&self) -> Result<(), Error> {
        let data = self.data();
        let args = [
            OsStr::new("-D"),
            data.as_os_str(),
            OsStr::new("-U"),
            OsStr::new("hearth"),
            OsStr::new("--auth=trust"),
            OsStr::new("-E"),
            OsStr::new("UTF8"),
            // The C locale: the caller's (which runuser passes on) may not be installed, and
            // tests should not sort by it.
            OsStr::new("--no-locale"),
            // Only initdb skips its fsyncs, for speed; the server keeps fsync on (below).
            OsStr::new("--no-sync"),
        ];
        run(&self.tools.argv(self.tools.bin.join("initdb").as_os_str(), &args))?;
        // unix_socket_directories is a list: the path double-quoted so that a comma or space in
        // it stays part of it.
        let socket_dir = format!("\"{}\"", self.dir.to_string_lossy().replace('"', "\"\""));
        let settings = format!(
            "\n# hearth-testpg\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {socket_dir}\n\
             # Enough for several aggregator processes with their connections, plus tests' own.\n\
             max_connections = 300\n\
             # Small enough for a 2-core, 24 GiB CI machine running several clusters.\n\
             shared_buffers = 128MB\n\
             # The log goes where pg_ctl -l sends stderr.\n\
             logging_collector = off\n\
             # The default, stated: fault tests (restart, kills) rely on real durability.\n\
             fsync = on\n",
            port = self.port,
            socket_dir = conf_string(&socket_dir),
        );
        let conf = data.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .map_err(io_error(format!("append to {}", conf.display())))
    }

    /// `pg_ctl -w start`, logging to `<dir>/postgres.log`.
    fn start(&self) -> Result<(), Error> {
        let log = self.log();
        match run(&self.pg_ctl(&[OsStr::new("-l"), log.as_os_str(), OsStr::new("-w"), OsStr::new("start")])) {
            Err(Error::Command { command, status, stderr }) => {
                Err(Error::Start { command, status, stderr, log_tail: self.log_tail() })
            }
            result => result,
        }
    }

    /// `pg_ctl -w stop -m <mode>`.
    fn stop(&self, mode: &str) -> Result<(), Error> {
        run(&self.pg_ctl(&[OsStr::new("-m"), OsStr::new(mode), OsStr::new("-w"), OsStr::new("stop")]))
    }

    fn log_tail(&self) -> String {
        let log = fs::read(self.log()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Starts the watcher: a shell in a session of its own (so that the terminal's Ctrl-C or hang-up,
/// which may kill the test process, does not reach it) that polls the test process once a second
/// and, once it is gone, stops the server (`pg_ctl stop -m immediate`) and removes `dir`.
/// Drop kills it after doing both itself. `setsid` execs the shell in place (the new child is
/// no process group leader), so the child's pid is the shell's.
fn spawn_watcher(server: &Server) -> Result<Child, Error> {
    const SCRIPT: &str = r#"pid=$1 dir=$2
shift 2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" >/dev/null 2>&1
rm -rf "$dir""#;
    let stop = server.pg_ctl(&[OsStr::new("-m"), OsStr::new("immediate"), OsStr::new("-w"), OsStr::new("stop")]);
    Command::new("setsid")
        .args(["sh", "-c", SCRIPT, "sh"])
        .arg(process::id().to_string())
        .arg(&server.dir)
        .args(&stop)
        .current_dir("/")
        // No inherited stdout or stderr: cargo test would wait for the watcher to close them.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_error("run setsid sh (the cluster's watcher)".into()))
}

/// Runs `argv`, from / (a directory every user can enter: the `postgres` user may not be able
/// to enter ours), and fails with its stderr when it does.
fn run(argv: &[OsString]) -> Result<(), Error> {
    let command = argv.iter().map(|arg| arg.to_string_lossy()).collect::<Vec<_>>().join(" ");
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .map_err(io_error(format!("run {command}")))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(Error::Command { command, status: output.status, stderr })
    }
}

/// A port nothing listens on at 127.0.0.1 now. The kernel picks it among the ephemeral ports
/// and may hand it to someone else before the server binds it; that window is a few hundred
/// milliseconds among some 28,000 ports.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(io_error("find a free port on 127.0.0.1".into()))
}

/// `value` as a postgresql.conf string literal.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn io_error(action: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { action, source }
}
