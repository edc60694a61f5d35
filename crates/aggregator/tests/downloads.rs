//! Model downloads (issue 14, item 3): clients that ask for a published model and never read
//! it cost the server neither a copy of the model each nor a database handle.

mod common;

use common::*;
use hearth_core::model::params::Arch;
use hearth_core::privacy::wire::Encoding;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const K: u64 = 10;
/// Connections in the flood.
const FLOOD: usize = 100;
/// Growth of the server's resident memory allowed during the flood. A copy of the model per
/// response would be FLOOD × 6.6 MB = 660 MB; sharing one costs only the connections' own state.
const RSS_GROWTH_BOUND_KIB: u64 = 100 * 1024;

/// A pack of 6.6 MB: more than loopback's socket buffers take in (about 4 MB), so a response to
/// a client that does not read stays in the server's memory until the client reads or leaves.
fn large_pack(dir: &std::path::Path) -> std::path::PathBuf {
    pack_of(dir, Arch { buckets: 65536, dim: 24, hidden: 16 })
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The server's open descriptors: all of them, and those on its database files.
fn descriptors(server: &Server) -> (usize, usize) {
    let db = server.dir.join("hearth.db").canonicalize().unwrap();
    let links: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    let on_db = links.iter().filter(|l| l.to_string_lossy().starts_with(&*db.to_string_lossy())).count();
    (links.len(), on_db)
}

#[test]
fn clients_that_never_read_an_old_model_cost_no_memory_or_handles_of_their_own() {
    let dir = scratch("downloads");
    let server = Server::start(&dir, &config(&large_pack(&dir), K, ""));
    // Publish version 2, so version 1 is an old version, served from the model cache.
    let task = server.task();
    let params = fetch_pack(&server).0.params.values.len();
    // One noised update, sent K times under fresh nonces: noising 1.6 M values takes a while.
    let mut update = honest_update(&task, params, 0, Encoding::F32);
    for i in 0..K {
        update.nonce = [i as u8 + 1; 16];
        let (status, body) = server.post(&update.encode());
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(server.wait_round_after(task.round_id).model_version, 2);
    let path = "/v1/models/1/model.onnx";
    let (status, _, onnx) = get(&server.url(path));
    assert_eq!(status, 200);
    assert!(onnx.len() > 6_000_000, "{} bytes", onnx.len());

    let pid = server.pid();
    let rss_before = status_field(pid, "VmRSS:");
    let (fds_before, db_fds_before) = descriptors(&server);
    let addr = server.url("").trim_start_matches("http://").to_string();
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).unwrap();
            s
        })
        .collect();
    // Every request is being answered once its connection has bytes to read.
    let until = Instant::now() + Duration::from_secs(30);
    let answered = |s: &TcpStream| {
        s.set_nonblocking(true).unwrap();
        let answered = s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
        s.set_nonblocking(false).unwrap();
        answered
    };
    while !flood.iter().all(answered) {
        assert!(Instant::now() < until, "the flood's requests were not all answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the server holds while the clients sit on their answers.
    std::thread::sleep(Duration::from_secs(1));
    let growth = status_field(pid, "VmRSS:").saturating_sub(rss_before);
    let (fds, db_fds) = descriptors(&server);
    // Another client is served meanwhile.
    assert_eq!(get(&server.url("/v1/models/1/manifest.json")).0, 200);
    assert!(growth < RSS_GROWTH_BOUND_KIB, "resident memory grew by {growth} KiB for {FLOOD} unread downloads");
    assert!(fds <= fds_before + FLOOD + 8, "{fds} descriptors open, {fds_before} before the flood");
    assert_eq!(db_fds, db_fds_before, "database handles opened for downloads");

    drop(flood);
    let until = Instant::now() + Duration::from_secs(20);
    while descriptors(&server).0 > fds_before + 8 {
        assert!(Instant::now() < until, "descriptors still held after the clients left: {:?}", descriptors(&server));
        std::thread::sleep(Duration::from_millis(100));
    }
}
