//! Runs the real `hearth-aggregator` binary on loopback and talks HTTP to it.
#![allow(dead_code)]

use hearth_core::learning::round::RoundTask;
use hearth_core::model::features::{FeatureSpec, HASH_NAME};
use hearth_core::model::pack::ModelPack;
use hearth_core::model::pack_dir;
use hearth_core::model::params::{Arch, Gaussian, Params};
use hearth_core::privacy::noise::Sampler;
use hearth_core::privacy::privatize::build_update;
use hearth_core::privacy::wire::{Encoding, Update};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const UPDATE_TYPE: &str = "application/vnd.hearth.update";
pub const REPORT_TYPE: &str = "application/vnd.hearth.report";

/// A scratch directory under the target dir, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A metrics sample line without its `replica` label (every sample has one), so tests name
/// samples as `name` or `name{label="…"}`.
pub fn without_replica(line: &str) -> String {
    let Some(start) = line.find("{replica=\"") else { return line.to_string() };
    let value = start + "{replica=\"".len();
    let end = value + line[value..].find('"').expect("a closed label value") + 1;
    match &line[end..] {
        rest if rest.starts_with(',') => format!("{}{{{}", &line[..start], &rest[1..]),
        rest => format!("{}{}", &line[..start], rest.strip_prefix('}').unwrap_or(rest)),
    }
}

/// The storage a suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `fn(Backend)` as two tests, `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name($crate::common::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name($crate::common::Backend::Postgres) })*
        }
    };
}

/// The file in a scratch directory that names its PostgreSQL database, when it has one.
const DATABASE_URL_FILE: &str = "database.url";

/// [`scratch`] whose servers use `backend`: for PostgreSQL, a database of its own in this test
/// binary's cluster, named in `dir/database.url` so that restarts find it.
pub fn scratch_on(name: &str, backend: Backend) -> PathBuf {
    let dir = scratch(&format!("{name}-{backend:?}").to_ascii_lowercase());
    if backend == Backend::Postgres {
        std::fs::write(dir.join(DATABASE_URL_FILE), postgres_database(name)).unwrap();
    }
    dir
}

/// A new database in this test binary's throwaway cluster (started at first use).
pub fn postgres_database(name: &str) -> String {
    // A directory per process: a finished binary's watcher removes its cluster's directory.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-{}", std::process::id()));
    hearth_testpg::Cluster::shared(&dir).database(name)
}

/// The `database` setting of servers in `dir`: its PostgreSQL URL, or `dir/hearth.db`.
pub fn database_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(DATABASE_URL_FILE)).unwrap_or_else(|_| dir.join("hearth.db").display().to_string())
}

/// Runs `sql` (statements separated by `;`) on the database of `dir`, whichever backend it is.
pub fn execute_sql(dir: &Path, sql: &str) {
    let db = database_of(dir);
    if db.starts_with("postgres://") {
        postgres::Client::connect(&db, postgres::NoTls).unwrap().batch_execute(sql).unwrap();
    } else {
        rusqlite::Connection::open(&db).unwrap().execute_batch(sql).unwrap();
    }
}

/// Upload ids the store in `dir` holds (every round's), read from the database itself.
pub fn stored_ids(dir: &Path) -> u64 {
    let db = database_of(dir);
    if db.starts_with("postgres://") {
        let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
        client.query_one("SELECT count(*) FROM updates", &[]).unwrap().get::<_, i64>(0) as u64
    } else {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("SELECT COUNT(*) FROM updates", [], |r| r.get(0)).unwrap()
    }
}

/// Writes a small pack (about 4,400 parameters) to `dir/pack` and returns that directory.
pub fn small_pack(dir: &Path) -> PathBuf {
    pack_of(dir, Arch { buckets: 512, dim: 8, hidden: 12 })
}

/// Writes a pack of `arch` to `dir/pack` and returns that directory.
pub fn pack_of(dir: &Path, arch: Arch) -> PathBuf {
    let spec = FeatureSpec {
        hash: HASH_NAME.into(),
        seed: 5,
        buckets: arch.buckets.try_into().unwrap(),
        user_slots: 8,
        context_slots: 4,
        ad_slots: 6,
    };
    let (onnx, manifest) = ModelPack::write(&Params::init(arch, 9), &spec, 1);
    let out = dir.join("pack");
    pack_dir::write(&out, &onnx, &manifest).unwrap();
    out
}

pub fn default_pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/default")
}

pub struct Server {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
}

/// The binary with `config` (TOML) written to `dir/aggregator.toml`, on a free loopback port,
/// its database `dir/hearth.db` (or the PostgreSQL database [`scratch_on`] named); no
/// `--init`, so it serves only a database that exists.
pub fn aggregator(dir: &Path, config: &str) -> Command {
    let file = dir.join("aggregator.toml");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hearth-aggregator"));
    command
        .arg("--config")
        .arg(&file)
        .env("HEARTH_AGG__LISTEN", "\"127.0.0.1:0\"")
        .env("HEARTH_AGG__DATABASE", format!("{:?}", database_of(dir)));
    command
}

impl Server {
    /// Starts the binary with `config` (TOML) written to `dir/aggregator.toml` and `--init`; the
    /// database lives in `dir` too, created at the first start, so a second start on the same
    /// `dir` is a restart.
    pub fn start(dir: &Path, config: &str) -> Server {
        Server::start_with_env(dir, config, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Server {
        let mut command = aggregator(dir, config);
        command.arg("--init").envs(env.iter().copied());
        Server::spawn(command, dir)
    }

    /// Runs `command` (from [`aggregator`]), its log appended to `dir/stderr.log`, and waits
    /// until it is healthy.
    pub fn spawn(mut command: Command, dir: &Path) -> Server {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("stderr.log")).unwrap();
        let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().rsplit(' ').next().unwrap_or_default().to_string();
        assert!(url.starts_with("http://"), "server did not start: {line:?}; see {}", dir.join("stderr.log").display());
        let server = Server { child, url, dir: dir.into() };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if get(&self.url("/healthz")).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server never became healthy");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn kill(mut self) {
        self.sigkill();
    }

    /// SIGTERM, as an orchestrator stops a server, and its exit status once it has drained.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        self.child.wait().unwrap()
    }

    pub fn task(&self) -> RoundTask {
        let (status, _, body) = get(&self.url("/v1/round"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("the task parses as hearth-core's RoundTask")
    }

    /// A gauge or counter from /metrics (first sample with that exact name and labels).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = get(&self.url("/metrics"));
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .map(without_replica)
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(str::to_string))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .unwrap()
    }

    pub fn post(&self, body: &[u8]) -> (u16, serde_json::Value) {
        post(&self.url("/v1/updates"), UPDATE_TYPE, body)
    }

    /// Uploads a secure-aggregation report to a leader.
    pub fn post_report(&self, body: &[u8]) -> (u16, serde_json::Value) {
        post(&self.url("/v1/updates"), REPORT_TYPE, body)
    }

    /// Waits until the open round is no longer `round`.
    pub fn wait_round_after(&self, round: u64) -> RoundTask {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let t = self.task();
            if t.round_id != round {
                return t;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("round {round} never closed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// (status, headers as lower-case pairs, body)
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    let hs = resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
    (resp.status().as_u16(), hs, body)
}

pub fn get(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    get_with(url, &[])
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut resp = agent().post(url).header("Content-Type", content_type).send(body).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// An honest update for `task`: a random delta of norm about C, clipped, noised and encoded by
/// hearth-core, with a fresh nonce.
pub fn honest_update(task: &RoundTask, params: usize, seed: u64, encoding: Encoding) -> Update {
    let mut g = Gaussian::new(seed);
    let scale = task.clip_norm / (params as f32).sqrt();
    let delta = (0..params).map(|_| g.normal() as f32 * scale).collect();
    build_update(delta, task.model_version, task.round_id, task.clip_norm, task.noise_multiplier, encoding, &mut Sampler::os())
        .unwrap()
        .0
}

pub fn pack_at(onnx: &[u8], manifest: &[u8]) -> ModelPack {
    ModelPack::load(onnx, std::str::from_utf8(manifest).unwrap()).unwrap()
}

/// The current pack as served.
pub fn fetch_pack(server: &Server) -> (ModelPack, String) {
    let (s1, h, manifest) = get(&server.url("/v1/model/manifest.json"));
    let (s2, _, onnx) = get(&server.url("/v1/model/model.onnx"));
    assert_eq!((s1, s2), (200, 200));
    (pack_at(&onnx, &manifest), header(&h, "etag").unwrap().to_string())
}

/// Raw bytes over a fresh connection, for requests an HTTP client will not send; returns the
/// status line's code and the rest of the response.
pub fn raw(url: &str, chunks: &[(&[u8], Duration)]) -> (u16, String) {
    use std::io::Write;
    let addr = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for (bytes, pause) in chunks {
        // The server may answer and close early; later writes then fail, which is fine.
        if s.write_all(bytes).is_err() {
            break;
        }
        std::thread::sleep(*pause);
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

/// Mean of decoded updates, in f64.
pub fn mean(updates: &[Update]) -> Vec<f64> {
    let mut sum = vec![0f64; updates[0].values().len()];
    for u in updates {
        sum.iter_mut().zip(u.values()).for_each(|(s, v)| *s += f64::from(v));
    }
    sum.iter().map(|s| s / updates.len() as f64).collect()
}

/// Asserts that `after = before + lr · mean` parameter by parameter.
pub fn assert_fedavg(before: &Params, after: &Params, lr: f64, mean: &[f64]) {
    assert_eq!(before.values.len(), mean.len());
    for (i, ((b, a), m)) in before.values.iter().zip(&after.values).zip(mean).enumerate() {
        let want = f64::from(*b) + lr * m;
        assert!((f64::from(*a) - want).abs() <= 1e-6 + 1e-6 * want.abs(), "param {i}: {a} != {want}");
    }
}

/// Config for tests: K = `k`, FedAvg at lr 0.01, z = 1, C = 1, a budget that allows many rounds.
pub fn config(initial_model: &Path, k: u64, extra: &str) -> String {
    format!(
        "initial_model = {:?}\nbody_timeout_ms = 1500\n{extra}\n[round]\nmin_clients = {k}\nclip_norm = 1.0\nnoise_multiplier = 1.0\nmin_events = 5\n\
         [optimizer]\nkind = \"fed_avg\"\nlr = 0.01\n[privacy]\nepsilon_budget = 50.0\ndelta = 1e-6\n",
        initial_model
    )
}

/// The bearer token test leaders and helpers share.
pub const TOKEN: &str = "test-token-0123456789";

/// A helper's config: K = `k`, its noise `z`.
pub fn helper_config(k: u64, z: f32) -> String {
    format!("role = \"helper\"\n[round]\nmin_clients = {k}\n[secagg]\ntoken = {TOKEN:?}\nnoise_multiplier = {z}\n")
}

/// A leader's config over [`config`]: its helper, its noise `z`, no local noise.
pub fn leader_config(initial_model: &Path, k: u64, helper: &Server, z: f32) -> String {
    config(initial_model, k, "role = \"leader\"").replace("noise_multiplier = 1.0", "noise_multiplier = 0.0")
        + &format!("[secagg]\nhelper_url = {:?}\ntoken = {TOKEN:?}\nnoise_multiplier = {z}\n", helper.url("/"))
}

/// The helper's configuration, as a device fetches it from the helper.
pub fn fetch_helper_config(helper: &Server) -> hearth_core::learning::round::HelperConfig {
    let (status, _, body) = get(&helper.url("/v1/helper_config"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// POST with extra headers; (status, body bytes).
pub fn post_with(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap_or_default())
}

/// A report of a random update of norm about C (from `seed`), and its grid values.
pub fn random_report(
    b: &hearth_core::privacy::shares::Binding,
    key: &hearth_core::privacy::seal::HelperKey,
    seed: u64,
) -> (hearth_core::privacy::shares::Report, Vec<i64>) {
    let mut g = Gaussian::new(seed);
    let scale = b.clip_norm / (b.params as f32).sqrt();
    let delta = (0..b.params).map(|_| g.normal() as f32 * scale).collect();
    let built = hearth_core::privacy::shares::build_report(delta, b, key, &mut Sampler::os()).unwrap();
    (built.report, built.grid)
}

/// The noise `drawer` added to round `round`'s release when the servers ran with
/// `HEARTH_TEST_NOISE_SEED = seed`, recomputed.
pub fn seeded_noise(
    plan: &hearth_core::privacy::shares::Plan,
    drawer: hearth_aggregator::noise::Drawer,
    round: u64,
    seed: u64,
) -> Vec<u32> {
    use hearth_aggregator::noise::{Drawer, release_seed};
    let sigma = match drawer {
        Drawer::Leader => plan.sigma_leader,
        Drawer::Helper => plan.sigma_helper,
    };
    let mut n = hearth_core::privacy::shares::ShareSum::new(plan.params);
    let source = hearth_core::privacy::noise::SeededRandom::new(release_seed(seed, drawer, round));
    n.add_noise(sigma, &mut Sampler::from_source(source)).unwrap();
    n.values()
}

/// The mean a secure round of `k` reports must release when the servers ran with
/// `HEARTH_TEST_NOISE_SEED = seed`: Σ grid + leader noise + helper noise, mod 2^B, centred,
/// × step / k.
pub fn expected_secure_mean<'a>(
    plan: &hearth_core::privacy::shares::Plan,
    grids: impl IntoIterator<Item = &'a Vec<i64>>,
    round: u64,
    seed: u64,
    k: u64,
) -> Vec<f64> {
    use hearth_aggregator::noise::Drawer;
    let mut sum = vec![0i64; plan.params];
    for g in grids {
        sum.iter_mut().zip(g).for_each(|(s, v)| *s += v);
    }
    let (leader, helper) = (seeded_noise(plan, Drawer::Leader, round, seed), seeded_noise(plan, Drawer::Helper, round, seed));
    (0..plan.params)
        .map(|j| {
            let total = (sum[j] as u32).wrapping_add(leader[j]).wrapping_add(helper[j]);
            f64::from(hearth_core::privacy::shares::centred(total)) * plan.step / k as f64
        })
        .collect()
}

impl Server {
    /// The server process's id, to read its memory and descriptors under /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
