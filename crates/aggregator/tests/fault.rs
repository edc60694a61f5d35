//! Concurrent uploads, SIGKILL mid-load, restart, many times over one database, for a single
//! server and for a leader with its helper: every upload that got a 2xx is in the round, none
//! twice, the database is intact, the recovered running sum is exact (checked by closing the
//! round at the end), and retried uploads are answered consistently (202 if the first try never
//! landed, 409 duplicate if it did). The leader's helper is killed too, once while the round
//! closes: the leader retries and the round is released once, exactly.

mod common;

use common::*;
use hearth_aggregator::noise::TEST_SEED_VARIABLE;
use hearth_core::model::params::Gaussian;
use hearth_core::privacy::seal::HelperKey;
use hearth_core::privacy::shares::Binding;
use hearth_core::privacy::wire::{Encoding, Update};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const KILLS: usize = 12;
const CLIENTS: usize = 16;
/// The leader's K: above what the load sends, so the round stays open across kills; the test
/// tops it up at the end.
const LEADER_K: u64 = 2_500;
/// Uploads per load at most, for the leader (LEADER_KILLS of them stay below LEADER_K).
const LEADER_LOAD_CAP: u64 = 350;
const LEADER_KILLS: usize = 6;
const SEED: u64 = 77;

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Acked,
    Refused(String),
    /// No answer: the server died while the request was in flight.
    Lost,
}

/// One upload as a client built it, and what it adds to the round in exact terms.
#[derive(Clone)]
struct Sent {
    id: [u8; 16],
    body: Vec<u8>,
    adds: Adds,
}

#[derive(Clone)]
enum Adds {
    Plain(Update),
    Grid(Vec<i64>),
}

type Make = Arc<dyn Fn(u64) -> Sent + Send + Sync>;

fn load_config(pack: &Path, k: u64) -> String {
    // K far above the load, so the round stays open across kills.
    config(pack, k, "")
}

/// Ids of the uploads stored for the open round, after checking the database's integrity
/// and that the round's counter matches its rows.
fn stored(db: &Path) -> (u64, HashSet<[u8; 16]>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let (round, accepted): (u64, u64) =
        conn.query_row("SELECT id, accepted FROM rounds WHERE state = 'open'", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let mut stmt = conn.prepare("SELECT nonce FROM updates WHERE round_id = ?1").unwrap();
    let nonces: Vec<[u8; 16]> =
        stmt.query_map([round], |r| r.get::<_, Vec<u8>>(0)).unwrap().map(|n| n.unwrap().try_into().unwrap()).collect();
    let set: HashSet<_> = nonces.iter().copied().collect();
    assert_eq!(set.len(), nonces.len(), "a nonce is stored twice");
    assert_eq!(accepted, nonces.len() as u64, "the round's counter disagrees with its rows");
    let summed: u64 =
        conn.query_row("SELECT COALESCE(SUM(count), 0) FROM partials WHERE round_id = ?1", [round], |r| r.get(0)).unwrap();
    assert_eq!(summed, accepted, "the partial sums hold another number of uploads than the round counted");
    (round, set)
}

/// Uploads from CLIENTS threads until the server stops answering; every attempt and its outcome.
fn load(server: &mut Server, seed: u64, make: &Make, content_type: &'static str, cap: u64) -> Vec<(Sent, Outcome)> {
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..CLIENTS as u64)
        .map(|c| {
            let (url, make, stop, attempts) = (server.url("/v1/updates"), make.clone(), stop.clone(), attempts.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut out = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) || attempts.fetch_add(1, Ordering::Relaxed) >= cap {
                        break;
                    }
                    let u = make(seed * 1_000_000 + c * 10_000 + i);
                    let outcome = match agent.post(&url).header("Content-Type", content_type).send(&u.body[..]) {
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

/// Every attempt's outcome checked against the database; the uploads that got no answer are
/// retried after a restart. Returns every upload sent, by id.
#[allow(clippy::too_many_arguments)] // one kill cycle of either role
fn kill_cycle(
    kill: usize,
    server: &mut Server,
    restart: &dyn Fn() -> Server,
    db: &Path,
    make: &Make,
    content_type: &'static str,
    cap: u64,
    tally: &mut [u64; 4],
) -> HashMap<[u8; 16], Sent> {
    let attempts = load(server, kill as u64 + 1, make, content_type, cap);
    let (_, in_db) = stored(db);
    let mut retry = Vec::new();
    let mut sent = HashMap::new();
    for (u, outcome) in attempts {
        match &outcome {
            Outcome::Acked => {
                tally[0] += 1;
                assert!(in_db.contains(&u.id), "kill {kill}: an acknowledged upload is missing");
            }
            Outcome::Refused(code) => {
                tally[2] += 1;
                assert!(!in_db.contains(&u.id), "kill {kill}: a refused upload ({code}) was stored");
            }
            Outcome::Lost => {
                tally[1] += 1;
                retry.push(u.clone());
            }
        }
        sent.insert(u.id, u);
    }
    // Retrying what got no answer: stored ones are duplicates, the rest are accepted now.
    let server = restart();
    for u in retry {
        let (status, body) = post(&server.url("/v1/updates"), content_type, &u.body);
        if in_db.contains(&u.id) {
            tally[3] += 1;
            assert_eq!((status, body["error"].as_str()), (409, Some("duplicate_nonce")), "kill {kill}");
        } else {
            assert_eq!(status, 202, "kill {kill}: {body}");
        }
    }
    server.kill();
    sent
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_update_and_counts_none_twice() {
    let dir = scratch("fault");
    let pack = small_pack(&dir);
    let db = dir.join("hearth.db");
    let mut sent: HashMap<[u8; 16], Sent> = HashMap::new();
    let mut tally = [0u64; 4];
    let probe = Server::start(&dir, &load_config(&pack, 1_000_000));
    let (task, params) = (probe.task(), fetch_pack(&probe).0.params.values.len());
    probe.kill();
    let make: Make = Arc::new(move |seed| {
        let u = honest_update(&task, params, seed, Encoding::F32);
        Sent { id: u.nonce, body: u.encode(), adds: Adds::Plain(u) }
    });
    let restart = || Server::start(&dir, &load_config(&pack, 1_000_000));
    for kill in 0..KILLS {
        let mut server = restart();
        if kill > 0 {
            // The restarted keeper counts exactly what is stored (its running sum is checked below).
            assert_eq!(server.metric("hearth_round_updates"), stored(&db).1.len() as f64);
        }
        sent.extend(kill_cycle(kill, &mut server, &restart, &db, &make, UPDATE_TYPE, u64::MAX, &mut tally));
    }
    let [acked, lost, refused, landed] = tally;
    assert!(acked > 0 && lost > 0, "the load never overlapped a kill: {acked} acked, {lost} lost, {refused} refused");

    // Close the round with one more update: the published model must move by exactly the mean
    // of every stored update, so the recovered sum missed none and doubled none.
    let (_, in_db) = stored(&db);
    let mut members: Vec<Update> = in_db
        .iter()
        .map(|n| match &sent[n].adds {
            Adds::Plain(u) => u.clone(),
            Adds::Grid(_) => unreachable!("a single server takes plaintext updates"),
        })
        .collect();
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

#[test]
fn sigkill_of_leader_or_helper_loses_no_acknowledged_report_and_releases_once() {
    let root = scratch("fault-secagg");
    let (hdir, ldir) = (root.join("helper"), root.join("leader"));
    std::fs::create_dir_all(&hdir).unwrap();
    std::fs::create_dir_all(&ldir).unwrap();
    let seed = SEED.to_string();
    let env = [(TEST_SEED_VARIABLE, seed.as_str())];
    let pack = small_pack(&ldir);
    let db = ldir.join("hearth.db");
    let mut helper = Server::start_with_env(&hdir, &helper_config(10, 4.0), &env);
    let leader_toml = leader_config(&pack, LEADER_K, &helper, 5.0);
    // A restarted helper listens where the leader's configuration says it is.
    let listen = format!("{:?}", helper.url.trim_start_matches("http://"));
    let helper_env = [(TEST_SEED_VARIABLE, seed.as_str()), ("HEARTH_AGG__LISTEN", listen.as_str())];
    let restart_helper = || Server::start_with_env(&hdir, &helper_config(10, 4.0), &helper_env);
    let restart = || Server::start_with_env(&ldir, &leader_toml, &env);
    let probe = restart();
    let task = probe.task();
    let (before, _) = fetch_pack(&probe);
    probe.kill();
    let binding: Binding = task.binding(before.params.values.len()).unwrap();
    let key = HelperKey::from_config(&fetch_helper_config(&helper).hpke).unwrap();
    let make: Make = Arc::new(move |seed| {
        let (report, grid) = random_report(&binding, &key, seed);
        Sent { id: report.report_id, body: report.encode(), adds: Adds::Grid(grid) }
    });
    let mut sent: HashMap<[u8; 16], Sent> = HashMap::new();
    let mut tally = [0u64; 4];
    for kill in 0..LEADER_KILLS {
        let mut leader = restart();
        if kill > 0 {
            assert_eq!(leader.metric("hearth_round_updates"), stored(&db).1.len() as f64);
        }
        sent.extend(kill_cycle(kill, &mut leader, &restart, &db, &make, REPORT_TYPE, LEADER_LOAD_CAP, &mut tally));
        // The helper dies too, between rounds: it holds nothing of an open round to lose.
        if kill % 2 == 1 {
            helper.sigkill();
            helper = restart_helper();
        }
    }
    let [acked, lost, refused, landed] = tally;
    assert!(acked > 0 && lost > 0, "the load never overlapped a kill: {acked} acked, {lost} lost, {refused} refused");

    // Top the round up to K with the helper down: the leader keeps the full round open and
    // retries; the helper comes back and the round is released once.
    let leader = restart();
    let (_, mut in_db) = stored(&db);
    helper.sigkill();
    let mut seed = 1 << 40;
    while (in_db.len() as u64) < LEADER_K {
        let u = make(seed);
        seed += 1;
        assert_eq!(leader.post_report(&u.body).0, 202);
        in_db.insert(u.id);
        sent.insert(u.id, u);
    }
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(leader.task().round_id, task.round_id, "nothing is released while the helper is down");
    let _helper = restart_helper();
    leader.wait_round_after(task.round_id);
    let (after, _) = fetch_pack(&leader);
    assert_eq!(after.manifest.model_version, 2);

    let plan = binding.plan().unwrap();
    let grids = in_db.iter().map(|id| match &sent[id].adds {
        Adds::Grid(g) => g,
        Adds::Plain(_) => unreachable!("a leader takes reports"),
    });
    let mean = expected_secure_mean(&plan, grids, task.round_id, SEED, LEADER_K);
    assert_fedavg(&before.params, &after.params, 0.01, &mean);
    eprintln!(
        "{LEADER_KILLS} leader kills: {acked} acknowledged, {lost} lost in flight ({landed} stored before the kill), {refused} refused"
    );
}
