//! Slow bodies (issue 14, item 2): a sender that trickles its upload is cut off with 408 before
//! it can hold an upload slot, so honest uploads beside a crowd of them still go through; and an
//! upload that finds every slot taken is told to retry (503 `busy`, Retry-After) instead of
//! waiting without bound. The same holds for the helper's `/v1/aggregate`.

mod common;

use common::*;
use hearth_core::model::params::Arch;
use hearth_core::privacy::wire::Encoding;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const K: u64 = 10;
/// Slow connections in the crowd.
const TRICKLERS: usize = 100;
/// How long anything here may take before it counts as starved: far beyond what the new rules
/// need (about a second), far below what the old ones took (minutes).
const CEILING: Duration = Duration::from_secs(30);

/// Few slots and a long whole-upload deadline: before the fix, each trickler held one of the 4
/// slots for the whole 60 s, and everyone else queued behind.
fn slow_client_settings(pack: &std::path::Path) -> String {
    config(pack, K, "upload_concurrency = 4\nupload_wait_ms = 10000\nbody_grace_ms = 1000")
}

const LONG_DEADLINE: (&str, &str) = ("HEARTH_AGG__BODY_TIMEOUT_MS", "60000");

/// The head of a request with a body of `len` bytes.
fn head(path: &str, content_type: &str, len: usize, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{extra}\r\n")
}

/// `n` connections that each send `head`, then one byte every half second until the server
/// answers; each one's status code (0: closed without an answer), `None` if none came within
/// [`CEILING`].
fn trickle(url: &str, head: &str, n: usize) -> Vec<Option<u16>> {
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let mut conns: Vec<(TcpStream, Vec<u8>, Option<u16>)> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, Vec::new(), None)
        })
        .collect();
    let until = Instant::now() + CEILING;
    while Instant::now() < until && conns.iter().any(|c| c.2.is_none()) {
        for (s, got, status) in conns.iter_mut().filter(|c| c.2.is_none()) {
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => *status = Some(0),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(got);
                    if let Some(code) = text.split(' ').nth(1).filter(|_| text.contains("\r\n")) {
                        *status = Some(code.parse().unwrap_or(0));
                    }
                }
                // Nothing yet: the next byte. A write refused once the server closed is fine.
                Err(e) if e.kind() == ErrorKind::WouldBlock => drop(s.write(b"0")),
                Err(_) => *status = Some(0),
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    conns.into_iter().map(|c| c.2).collect()
}

/// Runs `f` on its own thread; its result, or `None` if it took longer than [`CEILING`].
fn within_ceiling<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || drop(tx.send(f())));
    rx.recv_timeout(CEILING).ok()
}

#[test]
fn tricklers_are_cut_off_and_honest_uploads_go_through_beside_them() {
    let dir = scratch("slow-clients-trickle");
    let pack = small_pack(&dir);
    let server = Server::start_with_env(&dir, &slow_client_settings(&pack), &[LONG_DEADLINE]);
    let task = server.task();
    let (current, _) = fetch_pack(&server);
    let params = current.params.values.len();
    let len = honest_update(&task, params, 0, Encoding::F32).encode().len();

    let url = server.url("");
    let crowd = std::thread::spawn(move || trickle(&url, &head("/v1/updates", UPDATE_TYPE, len, ""), TRICKLERS));
    // Let the crowd connect and start trickling first: before the fix it then held every slot.
    std::thread::sleep(Duration::from_millis(300));
    let updates: Vec<Vec<u8>> = (1..=3).map(|seed| honest_update(&task, params, seed, Encoding::F32).encode()).collect();
    let target = server.url("/v1/updates");
    let honest = within_ceiling(move || updates.iter().map(|u| post(&target, UPDATE_TYPE, u)).collect::<Vec<_>>());
    let honest = honest.expect("honest uploads starved while the tricklers were connected");
    for (status, body) in &honest {
        assert_eq!(*status, 202, "{body}");
    }

    let statuses = crowd.join().unwrap();
    let cut = statuses.iter().filter(|s| **s == Some(408)).count();
    assert_eq!(cut, TRICKLERS, "tricklers answered 408 within {CEILING:?}: {cut}; all: {statuses:?}");
    assert_eq!(server.metric("hearth_updates_rejected_total{reason=\"body_timeout\"}"), TRICKLERS as f64);
    assert_eq!(server.metric("hearth_updates_accepted_total"), 3.0);
}

#[test]
fn an_upload_that_finds_every_slot_taken_is_told_to_retry() {
    let dir = scratch("slow-clients-busy");
    // Updates of about 150 KB: more than is read before a slot is taken.
    let pack = pack_of(&dir, Arch { buckets: 4096, dim: 8, hidden: 12 });
    let settings = config(&pack, K, "upload_concurrency = 1\nupload_wait_ms = 500");
    let server = Server::start_with_env(&dir, &settings, &[LONG_DEADLINE]);
    let task = server.task();
    let params = fetch_pack(&server).0.params.values.len();
    let update = honest_update(&task, params, 1, Encoding::F32).encode();
    assert!(update.len() > 2 * 64 * 1024);

    // The only slot: an upload whose first 100 KB came at once. That is ahead of the minimum
    // rate for seconds (2 s of grace, then 3 s at 32 KiB/s), so it keeps the slot while it pauses.
    let addr = server.url("").trim_start_matches("http://").to_string();
    let mut holder = TcpStream::connect(&addr).unwrap();
    holder.write_all(head("/v1/updates", UPDATE_TYPE, update.len(), "").as_bytes()).unwrap();
    holder.write_all(&update[..100 * 1024]).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let other = honest_update(&task, params, 2, Encoding::F32).encode();
    let target = server.url("/v1/updates");
    let started = Instant::now();
    let answer = within_ceiling(move || post_with(&target, &[("Content-Type", UPDATE_TYPE)], &other));
    let (status, body) = answer.expect("an upload waited for a slot without bound");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((status, body["error"].as_str()), (503, Some("busy")), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(500), "answered before upload_wait_ms");
    drop(holder);
    assert_eq!(server.metric("hearth_updates_rejected_total{reason=\"busy\"}"), 1.0);
}

#[test]
fn the_helper_cuts_off_a_trickling_batch_and_answers_the_next() {
    let dir = scratch("slow-clients-helper");
    let helper = Server::start_with_env(&dir, &helper_config(K, 4.0), &[LONG_DEADLINE, ("HEARTH_AGG__BODY_GRACE_MS", "1000")]);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let url = helper.url("");
    // Before the fix the trickler held the helper's one batch slot for the whole 60 s.
    let crowd = std::thread::spawn(move || trickle(&url, &head("/v1/aggregate", "application/json", 100_000, &auth), 1));
    std::thread::sleep(Duration::from_millis(300));
    let target = helper.url("/v1/aggregate");
    let bearer = format!("Bearer {TOKEN}");
    let answer =
        within_ceiling(move || post_with(&target, &[("Content-Type", "application/json"), ("Authorization", &bearer)], b"{}"));
    let (status, body) = answer.expect("the helper's next batch waited behind a trickler");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(crowd.join().unwrap(), vec![Some(408)]);
}
