//! Concurrent uploads, SIGKILL mid-load, restart, many times over one database: every update
//! that got a 2xx is in the round, none twice, the database is intact, the recovered running sum
//! is exact (checked by closing the round at the end), and retried uploads are answered
//! consistently (202 if the first try never landed, 409 duplicate if it did).

mod common;

use common::*;
use hearth_core::model::params::Gaussian;
use hearth_core::privacy::wire::{Encoding, Update};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const KILLS: usize = 12;
const CLIENTS: usize = 16;

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Acked,
    Refused(String),
    /// No answer: the server died while the request was in flight.
    Lost,
}

fn load_config(pack: &Path, k: u64) -> String {
    // K far above the load, so the round stays open across kills.
    config(pack, k, "").replace("population = 100000", "population = 10000000")
}

/// Nonces of the updates stored for the open round, after checking the database's integrity
/// and that the round's counter matches its rows.
fn stored(db: &Path) -> (u64, HashSet<[u8; 16]>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let (round, accepted): (u64, u64) =
        conn.query_row("SELECT id, accepted FROM rounds WHERE state = 'open'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let mut stmt = conn.prepare("SELECT nonce FROM updates WHERE round_id = ?1 AND body IS NOT NULL").unwrap();
    let nonces: Vec<[u8; 16]> =
        stmt.query_map([round], |r| r.get::<_, Vec<u8>>(0)).unwrap().map(|n| n.unwrap().try_into().unwrap()).collect();
    let set: HashSet<_> = nonces.iter().copied().collect();
    assert_eq!(set.len(), nonces.len(), "a nonce is stored twice");
    assert_eq!(accepted, nonces.len() as u64, "the round's counter disagrees with its rows");
    (round, set)
}

/// Uploads from CLIENTS threads until the server stops answering; every attempt and its outcome.
fn load(server: &mut Server, seed: u64) -> Vec<(Update, Outcome)> {
    let task = server.task();
    let params = fetch_pack(server).0.params.values.len();
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..CLIENTS as u64)
        .map(|c| {
            let (url, task, stop, attempts) = (server.url("/v1/updates"), task.clone(), stop.clone(), attempts.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut out = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let u = honest_update(&task, params, seed * 1_000_000 + c * 10_000 + i, Encoding::F32);
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let outcome = match agent.post(&url).header("Content-Type", UPDATE_TYPE).send(&u.encode()[..]) {
                        Ok(r) if r.status().as_u16() == 202 => Outcome::Acked,
                        Ok(mut r) => {
                            let body: serde_json::Value =
                                serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or_default();
                            Outcome::Refused(body["error"].as_str().unwrap_or("?").to_string())
                        }
                        Err(_) => Outcome::Lost,
                    };
                    let lost = outcome == Outcome::Lost;
                    out.push((u, outcome));
                    if lost {
                        break;
                    }
                }
                out
            })
        })
        .collect();
    // Let the load build up, then kill at a varying moment.
    let mut g = Gaussian::new(seed);
    while attempts.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100 + (g.uniform() * 600.0) as u64));
    stop.store(true, Ordering::Relaxed);
    server.sigkill();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_update_and_counts_none_twice() {
    let dir = scratch("fault");
    let pack = small_pack(&dir);
    let db = dir.join("hearth.db");
    let mut sent: HashMap<[u8; 16], Update> = HashMap::new();
    let (mut acked, mut lost, mut refused, mut landed) = (0, 0, 0, 0);
    for kill in 0..KILLS {
        let mut server = Server::start(&dir, &load_config(&pack, 1_000_000));
        if kill > 0 {
            // The restarted keeper counts exactly what is stored (its running sum is checked below).
            assert_eq!(server.metric("hearth_round_updates"), stored(&db).1.len() as f64);
        }
        let attempts = load(&mut server, kill as u64 + 1);
        let (_, in_db) = stored(&db);
        let mut retry = Vec::new();
        for (u, outcome) in attempts {
            match &outcome {
                Outcome::Acked => {
                    acked += 1;
                    assert!(in_db.contains(&u.nonce), "kill {kill}: an acknowledged update is missing");
                }
                Outcome::Refused(code) => {
                    refused += 1;
                    assert!(!in_db.contains(&u.nonce), "kill {kill}: a refused update ({code}) was stored");
                }
                Outcome::Lost => {
                    lost += 1;
                    retry.push(u.clone());
                }
            }
            sent.insert(u.nonce, u);
        }
        // Retrying what got no answer: stored ones are duplicates, the rest are accepted now.
        let server = Server::start(&dir, &load_config(&pack, 1_000_000));
        for u in retry {
            let (status, body) = server.post(&u.encode());
            if in_db.contains(&u.nonce) {
                landed += 1;
                assert_eq!((status, body["error"].as_str()), (409, Some("duplicate_nonce")), "kill {kill}");
            } else {
                assert_eq!(status, 202, "kill {kill}: {body}");
            }
        }
        server.kill();
    }
    assert!(acked > 0 && lost > 0, "the load never overlapped a kill: {acked} acked, {lost} lost, {refused} refused");

    // Close the round with one more update: the published model must move by exactly the mean
    // of every stored update, so the recovered sum missed none and doubled none.
    let (_, in_db) = stored(&db);
    let mut members: Vec<Update> = in_db.iter().map(|n| sent[n].clone()).collect();
    let server = Server::start(&dir, &load_config(&pack, members.len() as u64 + 1));
    let (before, _) = fetch_pack(&server);
    let task = server.task();
    let last = honest_update(&task, before.params.values.len(), 7, Encoding::F32);
    assert_eq!(server.post(&last.encode()).0, 202);
    members.push(last);
    server.wait_round_after(task.round_id);
    let (after, _) = fetch_pack(&server);
    assert_fedavg(&before.params, &after.params, 0.01, &mean(&members));
    eprintln!(
        "{KILLS} kills: {acked} acknowledged, {lost} lost in flight ({landed} of them stored before the kill), {refused} refused; {} in the released round",
        members.len()
    );
}
