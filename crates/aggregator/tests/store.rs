//! The database is never silently started afresh or lost unnoticed: a server opens only the
//! store `hearth-aggregator init` made for its role, and refuses (exit 1, naming the absolute
//! path) a missing, empty, read-only or other role's file; a store removed or replaced under a
//! running server makes `/healthz` and uploads answer 503 instead of writing to a file no one
//! will read.

mod common;

use common::*;
use hearth_core::privacy::wire::Encoding;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const K: u64 = 10;
const BIN: &str = env!("CARGO_BIN_EXE_hearth-aggregator");
/// Longest wait for a verdict: generous, so a busy machine cannot fail a test that passes.
const CEILING: Duration = Duration::from_secs(30);

/// A command's exit code, stdout and stderr. One still running after [`CEILING`] started
/// instead of refusing: it is killed and the test fails.
fn finish(mut command: Command) -> (Option<i32>, String, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let until = Instant::now() + CEILING;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            let mut out = String::new();
            let _ = child.stdout.take().unwrap().read_to_string(&mut out);
            panic!("still running after {CEILING:?}: it started instead of refusing ({out:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err)
}

/// Asserts that `command` refuses to start: exit status 1, never listening, and an error naming
/// `db` with every one of `words`.
fn assert_refused(command: Command, db: &Path, words: &[&str]) {
    let (code, out, err) = finish(command);
    assert_eq!(code, Some(1), "{err}");
    assert!(!out.contains("listening"), "it listened: {out}");
    let line = err.lines().find(|l| l.starts_with("hearth-aggregator: ")).unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert!(line.contains(&db.display().to_string()), "the error does not name {}: {line}", db.display());
    for w in words {
        assert!(line.contains(w), "the error lacks {w:?}: {line}");
    }
}

/// `hearth-aggregator init` with `config` in `dir`; asserts it succeeded.
fn init(dir: &Path, config: &str) {
    let (code, out, err) = finish({
        let mut c = aggregator(dir, config);
        c.arg("init");
        c
    });
    assert_eq!(code, Some(0), "init failed: {err}");
    assert!(out.is_empty(), "init served: {out}");
}

/// `/healthz` once it stops answering 200, within [`CEILING`].
fn unhealthy(server: &Server) -> serde_json::Value {
    let until = Instant::now() + CEILING;
    loop {
        let (status, _, body) = get(&server.url("/healthz"));
        if status != 200 {
            assert_eq!(status, 503);
            return serde_json::from_slice(&body).unwrap();
        }
        assert!(Instant::now() < until, "/healthz still says ok {CEILING:?} later: {}", String::from_utf8_lossy(&body));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn upload(server: &Server, seed: u64) -> (u16, serde_json::Value) {
    let task = server.task();
    let d = fetch_pack(server).0.params.values.len();
    server.post(&honest_update(&task, d, seed, Encoding::F32).encode())
}

#[test]
fn a_database_removed_under_a_running_server_refuses_uploads_and_the_restart() {
    let dir = scratch("store-removed");
    let cfg = config(&small_pack(&dir), K, "");
    let server = Server::start(&dir, &cfg);
    assert_eq!(upload(&server, 1).0, 202);
    for f in ["hearth.db", "hearth.db-wal", "hearth.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    // Stored only in the unlinked file, so never acknowledged.
    let (status, reply) = upload(&server, 2);
    assert_eq!((status, reply["error"].as_str()), (503, Some("storage_unavailable")), "{reply}");
    let health = unhealthy(&server);
    assert_eq!(health["status"], "store_lost", "{health}");
    assert!(health["detail"].as_str().unwrap().contains("removed"), "{health}");
    server.kill();
    assert!(std::fs::read_to_string(dir.join("stderr.log")).unwrap().contains("ERROR"), "the loss was not logged");
    assert_refused(aggregator(&dir, &cfg), &dir.join("hearth.db"), &["does not exist", "hearth-aggregator init"]);
}

#[test]
fn a_helper_store_removed_under_a_running_helper_is_reported_and_never_restarted_afresh() {
    let dir = scratch("store-helper-removed");
    let helper = Server::start(&dir, &helper_config(K, 4.0));
    for f in ["hearth.db", "hearth.db-wal", "hearth.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let health = unhealthy(&helper);
    assert_eq!((health["status"].as_str(), health["role"].as_str()), (Some("store_lost"), Some("helper")), "{health}");
    helper.kill();
    // A fresh helper store would mean a new key and no memory of the report ids it counted.
    assert_refused(aggregator(&dir, &helper_config(K, 4.0)), &dir.join("hearth.db"), &["does not exist"]);
}

#[test]
fn an_empty_database_file_is_refused_even_with_init() {
    let dir = scratch("store-empty");
    let cfg = config(&small_pack(&dir), K, "");
    let db = dir.join("hearth.db");
    std::fs::File::create(&db).unwrap();
    assert_refused(aggregator(&dir, &cfg), &db, &["empty"]);
    // --init creates only a missing file: an existing one is checked as it is.
    let mut with_init = aggregator(&dir, &cfg);
    with_init.arg("--init");
    assert_refused(with_init, &db, &["empty"]);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0);
}

#[test]
fn the_default_relative_path_from_another_directory_is_refused_not_created() {
    let dir = scratch("store-elsewhere");
    std::fs::write(dir.join("aggregator.toml"), config(&small_pack(&dir), K, "")).unwrap();
    let mut command = Command::new(BIN);
    command.args(["--config", "aggregator.toml"]).current_dir(&dir).env("HEARTH_AGG__LISTEN", "\"127.0.0.1:0\"");
    let db = dir.canonicalize().unwrap().join("target/aggregator/hearth.db");
    assert_refused(command, &db, &["does not exist", "hearth-aggregator init"]);
    assert!(!db.exists(), "a fresh database was created");
}

#[test]
fn a_read_only_database_is_refused_at_start() {
    let dir = scratch("store-read-only");
    let cfg = config(&small_pack(&dir), K, "");
    init(&dir, &cfg);
    let db = dir.join("hearth.db");
    let mut perms = std::fs::metadata(&db).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&db, perms).unwrap();
    let server = aggregator(&dir, &cfg);
    let uid = Command::new("id").arg("-u").output().unwrap();
    let command = if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        // Root writes whatever the mode says: run as nobody, to whom the file (mode 444) and its
        // directory (root's, 755) are read-only.
        let as_nobody = || {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            c
        };
        match as_nobody().args([BIN, "--version"]).output() {
            Ok(o) if o.status.success() => {}
            other => {
                eprintln!("skipped: root, and the binary cannot run as nobody through setpriv ({other:?})");
                return;
            }
        }
        let mut c = as_nobody();
        c.arg(server.get_program()).args(server.get_args());
        c.envs(server.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
        c
    } else {
        server
    };
    assert_refused(command, &db, &["cannot be written"]);
}

#[test]
fn a_database_replaced_under_a_running_server_is_reported_lost() {
    let dir = scratch("store-replaced");
    let cfg = config(&small_pack(&dir), K, "");
    let server = Server::start(&dir, &cfg);
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    init(&other, &cfg);
    std::fs::rename(other.join("hearth.db"), dir.join("hearth.db")).unwrap();
    // The watchdog finds it, with no upload to trip over it.
    let health = unhealthy(&server);
    assert_eq!(health["status"], "store_lost", "{health}");
    assert!(health["detail"].as_str().unwrap().contains("replaced"), "{health}");
    let (status, reply) = upload(&server, 1);
    assert_eq!((status, reply["error"].as_str()), (503, Some("storage_unavailable")), "{reply}");
}

#[test]
fn a_helper_store_is_refused_by_a_single_server() {
    let dir = scratch("store-role");
    init(&dir, &helper_config(K, 4.0));
    assert_refused(aggregator(&dir, &config(&small_pack(&dir), K, "")), &dir.join("hearth.db"), &["helper store", "single"]);
}

#[test]
fn init_twice_refuses_the_second_and_leaves_the_store_as_it_was() {
    let dir = scratch("store-init-twice");
    let cfg = config(&small_pack(&dir), K, "");
    let db = dir.join("hearth.db");
    init(&dir, &cfg);
    let before = std::fs::read(&db).unwrap();
    let mut again = aggregator(&dir, &cfg);
    again.arg("init");
    assert_refused(again, &db, &["already exists"]);
    assert!(std::fs::read(&db).unwrap() == before, "the second init changed the store");
    // What init made is served without --init.
    let server = Server::spawn(aggregator(&dir, &cfg), &dir);
    assert_eq!(fetch_pack(&server).0.manifest.model_version, 1);
}

/// The same refusals on PostgreSQL, where the store is a database an operator made: `init`
/// fills an empty one and refuses one that holds a store (or Hearth's tables without one); a
/// server refuses a database without a store, another role's, or one of a newer schema, naming
/// the database without its password.
#[test]
fn postgres_stores_are_made_once_and_refused_when_foreign_or_newer() {
    let dir = scratch_on("store-pg", Backend::Postgres);
    let db = database_of(&dir);
    let cfg = config(&small_pack(&dir), K, "");
    let location = db.clone();

    // No store yet: serving refuses, and says how to make one.
    assert_refused(aggregator(&dir, &cfg), Path::new(&location), &["no store identity", "hearth-aggregator init"]);
    init(&dir, &cfg);
    let (code, _, err) = finish({
        let mut c = aggregator(&dir, &cfg);
        c.arg("init");
        c
    });
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already exists"), "{err}");

    // Another role's store.
    let helper_dir = scratch_on("store-pg-helper", Backend::Postgres);
    init(&helper_dir, &helper_config(K, 4.0));
    let single_on_helper = {
        let mut c = aggregator(&helper_dir, &cfg);
        c.env("HEARTH_AGG__ROLE", "\"single\"");
        c
    };
    assert_refused(single_on_helper, Path::new(&database_of(&helper_dir)), &["helper store", "single"]);

    // A schema written by a newer build.
    let mut client = ::postgres::Client::connect(&db, ::postgres::NoTls).unwrap();
    client.execute("UPDATE store_identity SET schema_version = 99", &[]).unwrap();
    assert_refused(aggregator(&dir, &cfg), Path::new(&location), &["schema version 99", "newer build"]);
    client.execute("UPDATE store_identity SET schema_version = 1", &[]).unwrap();

    // Hearth's tables without an identity (a half-restored dump): init refuses to build on it.
    let other = scratch_on("store-pg-tables", Backend::Postgres);
    let mut c = ::postgres::Client::connect(&database_of(&other), ::postgres::NoTls).unwrap();
    c.batch_execute("CREATE TABLE rounds (id BIGINT)").unwrap();
    let (code, _, err) = finish({
        let mut cmd = aggregator(&other, &cfg);
        cmd.arg("init");
        cmd
    });
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a Hearth store") && err.contains("rounds"), "{err}");

    // A password never reaches the log or the error (trust authentication ignores it here).
    let with_password = db.replace("hearth@", "hearth:s3cret@");
    let (code, _, err) = finish({
        let mut cmd = aggregator(&dir, &cfg);
        cmd.arg("init").env("HEARTH_AGG__DATABASE", format!("{with_password:?}"));
        cmd
    });
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("hearth:***@") && err.contains("already exists") && !err.contains("s3cret"), "{err}");
    // And the store, once right, serves.
    let server = Server::start(&dir, &cfg);
    assert_eq!(server.task().round_id, 1);
}

/// A database that lost this server's last commits (restored from a backup, or failed over to
/// a copy behind it) is never overwritten with the sum the server holds in memory: the server's
/// next batch starts a new partial-sum row, so the round still adds up and releases exactly the
/// mean of the uploads the database holds. (Before the check, the server wrote its memory back
/// and the round, its count and its sums disagreeing, was abandoned at K.)
fn a_database_behind_the_server_gets_a_new_partial_not_the_servers_memory(backend: Backend) {
    let dir = scratch_on("store-behind", backend);
    let server = Server::start(&dir, &config(&small_pack(&dir), K, ""));
    let task = server.task();
    let (before, _) = fetch_pack(&server);
    let d = before.params.values.len();
    let updates: Vec<_> = (1..=K + 1).map(|seed| honest_update(&task, d, seed, Encoding::F32)).collect();
    for u in &updates[..2] {
        assert_eq!(server.post(&u.encode()).0, 202);
    }
    // The database as a backup taken before those two uploads has it.
    execute_sql(&dir, "DELETE FROM updates; DELETE FROM partials; UPDATE rounds SET accepted = 0 WHERE state = 'open'");
    let kept: Vec<_> = updates.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, u)| u.clone()).collect();
    for u in &kept {
        assert_eq!(server.post(&u.encode()).0, 202, "the database no longer holds this upload");
    }
    let next = server.wait_round_after(task.round_id);
    assert_eq!(next.model_version, task.model_version + 1, "the round released");
    let (after, _) = fetch_pack(&server);
    assert_fedavg(&before.params, &after.params, 0.01, &mean(&kept));
}

on_both_backends!(a_database_behind_the_server_gets_a_new_partial_not_the_servers_memory);
