//! hearth-testpg against the real PostgreSQL binaries: databases, restart, stop, cleanup, and
//! the watcher that stops a cluster whose process died without dropping it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_testpg::Cluster;
use postgres::{Client, NoTls};

/// Set (to a directory) when `orphan_child` is to start a cluster there and exit without
/// dropping it.
const ORPHAN_DIR: &str = "HEARTH_TESTPG_ORPHAN_DIR";

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn databases_survive_restart_and_stay_apart() {
    let dir = tmp("testpg-cluster");
    let cluster = Cluster::start(&dir).unwrap();
    let port = cluster.port();
    let a = cluster.database("Rows A!");
    let b = cluster.database("Rows A!");
    assert_ne!(a, b);
    let prefix = format!("postgres://hearth@127.0.0.1:{port}/rows_a__{}_", std::process::id());
    assert!(a.starts_with(&prefix), "{a} lacks the prefix {prefix}");

    let mut client = Client::connect(&a, NoTls).unwrap();
    client.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')").unwrap();
    drop(client);

    // An immediate stop: the committed row must come back through crash recovery.
    cluster.restart();
    assert_eq!(cluster.port(), port);
    let mut client = Client::connect(&a, NoTls).unwrap();
    let v: String = client.query_one("SELECT v FROM t", &[]).unwrap().get(0);
    assert_eq!(v, "kept");
    drop(client);

    let mut other = Client::connect(&b, NoTls).unwrap();
    let absent: bool = other.query_one("SELECT to_regclass('t') IS NULL", &[]).unwrap().get(0);
    assert!(absent, "database b sees a's table");
    drop(other);

    cluster.stop();
    cluster.stop();
    assert!(!accepts(port));
    assert!(dir.exists(), "stop removed the directory");
    drop(cluster);
    assert!(!dir.exists(), "drop left the directory");
}

/// The child half of `watcher_stops_cluster_of_dead_process` (passes doing nothing otherwise):
/// starts the shared cluster and exits at once, dropping nothing.
#[test]
fn orphan_child() {
    let Some(dir) = std::env::var_os(ORPHAN_DIR) else { return };
    let cluster = Cluster::shared(Path::new(&dir));
    println!("orphan port {}", cluster.port());
    std::process::exit(0);
}

#[test]
fn watcher_stops_cluster_of_dead_process() {
    let dir = tmp("testpg-orphan");
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "orphan_child", "--nocapture", "--test-threads=1"])
        .env(ORPHAN_DIR, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&child.stderr));
    let port: u16 = stdout
        .lines()
        .find_map(|line| line.split_once("orphan port ").map(|(_, port)| port))
        .unwrap_or_else(|| panic!("no port in the child's output: {stdout}"))
        .parse()
        .unwrap();

    // The watcher polls once a second; pg_ctl stop and rm take a moment more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepts(port) || dir.exists() {
        assert!(Instant::now() < deadline, "cluster of the dead child still up (port {port}) or {} left", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A checkout in a private directory (as `/root` is, mode 700) still gets a cluster: under
/// root the postgres user cannot search it, so the cluster runs in the temporary directory.
#[test]
fn a_cluster_asked_for_in_a_private_directory_still_runs() {
    use std::os::unix::fs::PermissionsExt;
    let private = tmp("private");
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cluster = Cluster::start(&private.join("pg")).unwrap();
    let mut client = Client::connect(&cluster.database("private"), NoTls).unwrap();
    assert_eq!(client.query_one("SELECT 1 + 1", &[]).unwrap().get::<_, i32>(0), 2);
    drop(client);
    drop(cluster);
    std::fs::remove_dir_all(&private).unwrap();
}
