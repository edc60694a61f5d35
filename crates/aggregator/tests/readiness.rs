//! `/readyz` against a PostgreSQL server that goes away and comes back: the replica says it is
//! not ready while the database does not answer, refuses uploads meanwhile (never a 2xx it could
//! not store), and takes uploads again once the database is back, over new connections.

mod common;

use common::*;
use hearth_core::privacy::wire::Encoding;
use hearth_testpg::Cluster;
use std::time::{Duration, Instant};

/// Polls `url` until `ok` holds for its (status, JSON body), or panics after 30 s.
fn wait_for(url: &str, what: &str, ok: impl Fn(u16, &serde_json::Value) -> bool) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get(url);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if ok(status, &body) {
            return body;
        }
        assert!(Instant::now() < until, "{what}: still {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_replica_is_unready_while_postgres_is_down_and_serves_again_after() {
    let dir = scratch("readiness");
    // A cluster of this test's own: it is stopped in the middle.
    let cluster = Cluster::start(&dir.join("pg")).unwrap();
    std::fs::write(dir.join("database.url"), cluster.database("readiness")).unwrap();
    let server = Server::start(&dir, &config(&small_pack(&dir), 100, "replica = \"r-one\""));
    let task = server.task();
    let d = fetch_pack(&server).0.params.values.len();

    let ready = wait_for(&server.url("/readyz"), "ready at start", |s, _| s == 200);
    assert_eq!((ready["status"].as_str(), ready["replica"].as_str()), (Some("ready"), Some("r-one")));
    let first = honest_update(&task, d, 1, Encoding::F32).encode();
    assert_eq!(server.post(&first).0, 202);

    cluster.stop();
    let unready = wait_for(&server.url("/readyz"), "unready without PostgreSQL", |s, _| s == 503);
    // Said by the ping, or by the keeper's write probe if it failed first.
    assert!(matches!(unready["status"].as_str(), Some("database_unreachable" | "store_unwritable")), "{unready}");
    // An upload now cannot be stored, so it is refused, never acknowledged.
    let refused = honest_update(&task, d, 2, Encoding::F32).encode();
    let (status, reply) = server.post(&refused);
    assert_eq!((status, reply["error"].as_str()), (503, Some("storage_unavailable")), "{reply}");

    cluster.restart();
    wait_for(&server.url("/readyz"), "ready once PostgreSQL is back", |s, _| s == 200);
    // The keeper reconnects too: the refused upload is taken now, and the first is a duplicate.
    let until = Instant::now() + Duration::from_secs(30);
    while server.post(&refused).0 != 202 {
        assert!(Instant::now() < until, "the keeper never stored again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, reply) = server.post(&first);
    assert_eq!((status, reply["error"].as_str()), (409, Some("duplicate_nonce")));
    wait_for(&server.url("/healthz"), "healthy again", |s, _| s == 200);
    assert_eq!(server.metric("hearth_round_updates"), 2.0);
}

/// Stopping a PostgreSQL-backed server the usual way (SIGTERM) drains and exits cleanly, for
/// the rounds roles and the helper. (The synchronous client's connections, dropped on an async
/// worker with the router, panicked: exit status 101 for a single server.)
#[test]
fn servers_on_postgres_stop_cleanly() {
    let root = scratch_on("pg-shutdown", Backend::Postgres);
    let (hdir, sdir) = (root.join("helper"), root.join("single"));
    for (dir, name) in [(&hdir, "shutdown-helper"), (&sdir, "shutdown-single")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("database.url"), postgres_database(name)).unwrap();
    }
    let helper = Server::start(&hdir, &helper_config(10, 4.0));
    let single = Server::start(&sdir, &config(&small_pack(&sdir), 10, ""));
    // Both connections in use: the request handlers' one too.
    for server in [&helper, &single] {
        assert_eq!(get(&server.url("/readyz")).0, 200);
    }
    for (server, dir) in [(single, &sdir), (helper, &hdir)] {
        let status = server.terminate();
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
        assert!(status.success() && !log.contains("panicked"), "{status}: {log}");
    }
}
