//! Replicas of one role sharing one PostgreSQL database. A round whose uploads are spread over
//! three replicas is closed by exactly one of them and every replica serves the new model soon
//! after. Under concurrent upload load, 20 SIGKILLs of a random replica and one crash restart of
//! PostgreSQL itself lose no acknowledged update and count none twice (the round's counter, its
//! ids and its partial sums agree, and the released model moves by exactly the mean of what is
//! stored), release no round below K, and the replicas that were up kept answering. With a K
//! the load reaches every few hundred milliseconds, rounds that close while replicas are killed
//! each hold at least K and end at the batch that reached it, every acknowledged update is in
//! the round it named, and each released model moved by exactly its round's stored updates.

mod common;

use common::*;
use hearth_core::learning::round::RoundTask;
use hearth_core::model::params::Gaussian;
use hearth_core::privacy::wire::{Encoding, Update};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
/// How long every replica may take to serve a model another replica released: it polls the
/// open round every `aggregate::TICK` (250 ms), so this is generous on a loaded 2-core machine.
const SEE_RELEASE_WITHIN: Duration = Duration::from_secs(5);

const KILLS: usize = 20;
const CLIENTS: u64 = 6;
/// K while replicas are killed: far above the load, so the round stays open throughout; the
/// replicas are restarted with K = stored + FINAL to close it.
const LOAD_K: u64 = 1_000_000;
const FINAL: u64 = 6;
const SEED: u64 = 18;
/// The longest a replica that is up may go without answering `/healthz`, PostgreSQL's restart
/// included (`/healthz` answers from memory, so only CPU starvation delays it).
const MAX_GAP: Duration = Duration::from_secs(15);
/// A client's pause after an upload that was not accepted.
const BACKOFF: Duration = Duration::from_millis(100);
/// K while replicas are killed in `rounds_close_at_k_while_replicas_are_killed`: the load
/// reaches it several times over the kills.
const ROUND_K: u64 = 30;
const ROUND_KILLS: usize = 8;
/// Uploads one store transaction holds at most (`aggregate::MAX_BATCH`): a single server's round
/// is released at the batch that brings it to K, so it holds fewer than K + this.
const MAX_BATCH: u64 = 64;
/// How long a kill waits for a request in flight to its victim before killing anyway.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);

/// `REPLICAS` server directories under `root`, each naming the database `url` (as
/// [`scratch_on`] names one), so that their servers are replicas of one store.
fn replica_dirs(root: &Path, url: &str) -> Vec<PathBuf> {
    (0..REPLICAS)
        .map(|i| {
            let dir = root.join(format!("replica-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("database.url"), url).unwrap();
            dir
        })
        .collect()
}

/// Starts a replica in each of `dirs` at once: the first `--init` creates the store, the
/// others find it there.
fn start_all(dirs: &[PathBuf], toml: &str) -> Vec<Server> {
    std::thread::scope(|s| {
        let starting: Vec<_> = dirs.iter().map(|dir| s.spawn(move || Server::start(dir, toml))).collect();
        starting.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `/healthz`'s status and body.
fn health(server: &Server) -> (u16, serde_json::Value) {
    let (status, _, body) = get(&server.url("/healthz"));
    (status, serde_json::from_slice(&body).unwrap())
}

/// Waits until `server`'s `/healthz` satisfies `want`.
fn wait_for(server: &Server, within: Duration, want: impl Fn(u16, &serde_json::Value) -> bool) {
    let start = Instant::now();
    loop {
        let (status, body) = health(server);
        if want(status, &body) {
            return;
        }
        assert!(start.elapsed() < within, "{} not there within {within:?}: {status} {body}", server.url);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A round as the database holds it: (id, state, accepted).
type Round = (i64, String, i64);

/// Every round, and the open round's stored ids, after checking that its counter, its ids and
/// its writers' partial sums agree.
fn read_store(url: &str) -> (Vec<Round>, HashSet<[u8; 16]>) {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let rounds: Vec<Round> = db
        .query("SELECT id, state, accepted FROM rounds ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let Some(&(open, _, accepted)) = rounds.iter().find(|r| r.1 == "open") else {
        return (rounds, HashSet::new());
    };
    let ids: HashSet<[u8; 16]> = db
        .query("SELECT id FROM updates WHERE round_id = $1", &[&open])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Vec<u8>>(0).try_into().unwrap())
        .collect();
    let partials: i64 =
        db.query_one("SELECT COALESCE(SUM(count), 0)::BIGINT FROM partials WHERE round_id = $1", &[&open]).unwrap().get(0);
    assert_eq!(accepted, ids.len() as i64, "round {open}: the counter disagrees with the stored ids");
    assert_eq!(partials, accepted, "round {open}: the writers' partial sums hold another number of uploads than counted");
    (rounds, ids)
}

/// Uploads `updates` from two threads per replica (update i to replica i mod 3); all must be
/// accepted.
fn upload_spread(replicas: &[Server], updates: &[Update]) {
    std::thread::scope(|s| {
        for t in 0..2 * REPLICAS {
            s.spawn(move || {
                for (i, u) in updates.iter().enumerate().skip(t).step_by(2 * REPLICAS) {
                    let (status, body) = replicas[i % REPLICAS].post(&u.encode());
                    assert_eq!(status, 202, "update {i}: {body}");
                }
            });
        }
    });
}

#[test]
fn replicas_share_rounds_and_one_closes_each() {
    const K: u64 = 24;
    let started = Instant::now();
    let root = scratch("replicas-basic");
    let url = postgres_database("replicas_basic");
    let dirs = replica_dirs(&root, &url);
    let replicas = start_all(&dirs, &config(&small_pack(&root), K, ""));
    let task = replicas[0].task();
    for r in &replicas {
        assert_eq!(r.task().round_id, task.round_id, "every replica serves the one open round");
    }
    let (before, _) = fetch_pack(&replicas[0]);
    let updates: Vec<Update> = (0..K).map(|i| honest_update(&task, before.params.values.len(), 100 + i, Encoding::F32)).collect();

    // Stored through one replica, replayed to another while the round is open.
    assert_eq!(replicas[0].post(&updates[0].encode()).0, 202);
    let (status, body) = replicas[1].post(&updates[0].encode());
    assert_eq!((status, body["error"].as_str()), (409, Some("duplicate_nonce")), "{body}");

    upload_spread(&replicas, &updates[1..]);
    let acked = Instant::now();
    let seen: Vec<Duration> = replicas
        .iter()
        .map(|r| {
            wait_for(r, SEE_RELEASE_WITHIN, |_, h| h["model_version"] == 2);
            acked.elapsed()
        })
        .collect();
    let seen_by_all = acked.elapsed();

    let closed: f64 = replicas.iter().map(|r| r.metric("hearth_rounds_closed_total")).sum();
    assert_eq!(closed, 1.0, "exactly one replica closes the round");
    let (rounds, _) = read_store(&url);
    let ended: Vec<_> = rounds.iter().filter(|r| r.1 != "open").collect();
    assert_eq!(ended, [&(task.round_id as i64, "closed".to_string(), K as i64)], "{rounds:?}");
    let next = replicas[0].task();
    assert_ne!(next.round_id, task.round_id);
    let (after, etag) = fetch_pack(&replicas[0]);
    assert_fedavg(&before.params, &after.params, 0.01, &mean(&updates));
    for r in &replicas[1..] {
        assert_eq!(fetch_pack(r).1, etag, "every replica serves the released model");
        assert_eq!(r.task().round_id, next.round_id, "every replica serves the next round");
    }

    // Update 1 went to replica 0 (the first of upload_spread's); its replay to replica 2 names
    // the ended round.
    let (status, body) = replicas[2].post(&updates[1].encode());
    assert_eq!((status, body["error"].as_str()), (409, Some("duplicate_nonce")), "{body}");
    eprintln!(
        "replicas: every replica served the released model {} ms after the last acknowledgement (each: {:?} ms); test took {} ms",
        seen_by_all.as_millis(),
        seen.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        started.elapsed().as_millis()
    );
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Acked,
    Refused(String),
    /// No HTTP answer: the replica died while the request was in flight, or before it came.
    NoAnswer,
}

/// Where a replica listens, as clients and the probe see it: `url` is `None` from just before
/// a kill until the restarted replica is healthy. `epoch` changes at each kill and restart, so
/// that the probe never measures a gap across one.
struct Slot {
    url: Option<String>,
    epoch: u64,
    /// When the replica of this epoch became healthy.
    since: Instant,
    /// Requests of this epoch sent and not yet answered: a kill waits for one, so that every
    /// kill interrupts a request in flight rather than only by chance.
    in_flight: usize,
}

type Fleet = Arc<Mutex<Vec<Slot>>>;

/// One client: uploads fresh honest updates to the replicas that are up, in turn, until `stop`;
/// every attempt and its outcome. Its updates are for `task` until one is refused for naming a
/// round other than the replica's: then for the round that replica serves, as a device does.
fn client(c: u64, fleet: Fleet, stop: Arc<AtomicBool>, mut task: RoundTask, params: usize) -> Vec<(Update, Outcome)> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(30))).build().into();
    let mut out = Vec::new();
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let picked = {
            let mut fleet = fleet.lock().unwrap();
            let at = (0..REPLICAS).map(|k| ((c + i) as usize + k) % REPLICAS).find(|&at| fleet[at].url.is_some());
            at.map(|at| {
                fleet[at].in_flight += 1;
                (at, fleet[at].epoch, fleet[at].url.clone().unwrap())
            })
        };
        let Some((at, epoch, url)) = picked else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let u = honest_update(&task, params, c << 32 | i, Encoding::F32);
        let outcome = match agent.post(format!("{url}/v1/updates")).header("Content-Type", UPDATE_TYPE).send(&u.encode()[..]) {
            Ok(r) if r.status().as_u16() == 202 => Outcome::Acked,
            Ok(mut r) => {
                let body: serde_json::Value =
                    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or_default();
                Outcome::Refused(body["error"].as_str().unwrap_or("?").to_string())
            }
            Err(_) => Outcome::NoAnswer,
        };
        {
            let mut fleet = fleet.lock().unwrap();
            if fleet[at].epoch == epoch {
                fleet[at].in_flight -= 1;
            }
        }
        let refused = outcome != Outcome::Acked;
        if let Outcome::Refused(code) = &outcome
            && matches!(code.as_str(), "wrong_round" | "stale_model" | "busy")
            && let Some(t) = open_round(&agent, &url)
        {
            task = t;
        }
        out.push((u, outcome));
        // As a device does: retry later, not at once.
        if refused {
            std::thread::sleep(BACKOFF);
        }
    }
    out
}

/// The task `url` serves, if it answers.
fn open_round(agent: &ureq::Agent, url: &str) -> Option<RoundTask> {
    let mut resp = agent.get(format!("{url}/v1/round")).call().ok().filter(|r| r.status().as_u16() == 200)?;
    serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()
}

/// `CLIENTS` clients uploading to `fleet` until `stop`, from `task` on.
fn start_clients(
    fleet: &Fleet,
    stop: &Arc<AtomicBool>,
    task: &RoundTask,
    params: usize,
) -> Vec<std::thread::JoinHandle<Vec<(Update, Outcome)>>> {
    (0..CLIENTS)
        .map(|c| {
            let (fleet, stop, task) = (fleet.clone(), stop.clone(), task.clone());
            std::thread::spawn(move || client(c, fleet, stop, task, params))
        })
        .collect()
}

/// A fleet entry per server, all up since now.
fn fleet_of(servers: &[Server]) -> Fleet {
    let now = Instant::now();
    Arc::new(Mutex::new(servers.iter().map(|s| Slot { url: Some(s.url.clone()), epoch: 0, since: now, in_flight: 0 }).collect()))
}

/// SIGKILLs replica `victim` while a request to it is in flight (waiting up to `IN_FLIGHT_WAIT`
/// for one), out of the fleet first, and starts it again with `toml`, back in the fleet once
/// healthy; how long the restart took.
fn kill_and_restart(servers: &mut [Server], victim: usize, dirs: &[PathBuf], toml: &str, fleet: &Fleet) -> Duration {
    let waiting = Instant::now();
    loop {
        let mut fleet = fleet.lock().unwrap();
        if fleet[victim].in_flight > 0 || waiting.elapsed() > IN_FLIGHT_WAIT {
            fleet[victim].url = None;
            fleet[victim].epoch += 1;
            // Killed under the lock: no request in flight can be answered and counted first.
            servers[victim].sigkill();
            break;
        }
        drop(fleet);
        std::thread::sleep(Duration::from_micros(200));
    }
    let t = Instant::now();
    servers[victim] = Server::start(&dirs[victim], toml);
    let took = t.elapsed();
    let mut fleet = fleet.lock().unwrap();
    let epoch = fleet[victim].epoch + 1;
    fleet[victim] = Slot { url: Some(servers[victim].url.clone()), epoch, since: Instant::now(), in_flight: 0 };
    took
}

/// A pause of 150 to 850 ms between faults.
fn pause(g: &mut Gaussian) {
    std::thread::sleep(Duration::from_millis(150 + (g.uniform() * 700.0) as u64));
}

/// A replica drawn at random.
fn victim(g: &mut Gaussian) -> usize {
    ((g.uniform() * REPLICAS as f64) as usize).min(REPLICAS - 1)
}

/// Polls replica `i`'s `/healthz` every 50 ms until `stop`; the longest time it went without
/// an HTTP answer (any status) while it was up.
fn probe(i: usize, fleet: Fleet, stop: Arc<AtomicBool>) -> Duration {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(2))).build().into();
    let (mut epoch, mut last) = {
        let fleet = fleet.lock().unwrap();
        (fleet[i].epoch, fleet[i].since)
    };
    let mut longest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let url = {
            let fleet = fleet.lock().unwrap();
            if fleet[i].epoch != epoch {
                (epoch, last) = (fleet[i].epoch, fleet[i].since);
            }
            fleet[i].url.clone()
        };
        if let Some(url) = url {
            let answered = agent.get(format!("{url}/healthz")).call().is_ok();
            let now = Instant::now();
            // An answer from before a kill that raced this request counts for nothing.
            if answered && fleet.lock().unwrap()[i].epoch == epoch {
                longest = longest.max(now - last);
                last = now;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A replica that stopped answering for good shows here.
    if fleet.lock().unwrap()[i].epoch == epoch {
        longest = longest.max(last.elapsed());
    }
    longest
}

#[test]
fn sigkill_of_replicas_and_a_postgres_restart_lose_no_acknowledged_update() {
    let started = Instant::now();
    let root = scratch("replicas-fault");
    // A cluster of this test's own: restarting the binary's shared one would break the others.
    let cluster = hearth_testpg::Cluster::start(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pg-replicas-fault"))
        .unwrap_or_else(|e| panic!("{e}"));
    let url = cluster.database("replicas_fault");
    let dirs = replica_dirs(&root, &url);
    let pack = small_pack(&root);
    let load_toml = config(&pack, LOAD_K, "");
    let mut servers = start_all(&dirs, &load_toml);
    let task = servers[0].task();
    let (before, _) = fetch_pack(&servers[0]);
    let params = before.params.values.len();

    let now = Instant::now();
    let fleet = fleet_of(&servers);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&fleet, &stop, &task, params);
    let probes: Vec<_> = (0..REPLICAS)
        .map(|i| {
            let (fleet, stop) = (fleet.clone(), stop.clone());
            std::thread::spawn(move || probe(i, fleet, stop))
        })
        .collect();

    let mut g = Gaussian::new(SEED);
    let (mut restarts, mut pg_restart) = (Duration::ZERO, Duration::ZERO);
    for kill in 0..KILLS {
        pause(&mut g);
        if kill == KILLS / 2 {
            let t = Instant::now();
            cluster.restart();
            pg_restart = t.elapsed();
            pause(&mut g);
        }
        let victim = victim(&mut g);
        restarts += kill_and_restart(&mut servers, victim, &dirs, &load_toml, &fleet);
    }
    stop.store(true, Ordering::Relaxed);
    let attempts: Vec<(Update, Outcome)> = clients.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let gaps: Vec<Duration> = probes.into_iter().map(|h| h.join().unwrap()).collect();
    let load_took = now.elapsed();
    let longest = gaps.iter().max().unwrap();
    eprintln!(
        "replicas: longest gap without an answer: {} ms (per replica: {:?} ms)",
        longest.as_millis(),
        gaps.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(*longest < MAX_GAP, "a replica that was up went {longest:?} without answering");

    // What the database holds after the kills: every acknowledged upload, no refused one.
    let (rounds, in_db) = read_store(&url);
    assert_eq!(rounds.len(), 1, "no round ended during the load: {rounds:?}");
    let mut sent: HashMap<[u8; 16], Update> = HashMap::new();
    let mut retry = Vec::new();
    let (mut acked, mut no_answer, mut refused) = (0u64, 0u64, HashMap::<String, u64>::new());
    for (u, outcome) in attempts {
        match &outcome {
            Outcome::Acked => {
                acked += 1;
                assert!(in_db.contains(&u.nonce), "an acknowledged upload is missing");
            }
            Outcome::NoAnswer => {
                no_answer += 1;
                retry.push((u.nonce, false));
            }
            Outcome::Refused(code) => {
                *refused.entry(code.clone()).or_default() += 1;
                // storage_unavailable after a failed commit: the commit may have happened, as
                // the refusal's "retry later" allows; the retry below tells which.
                if code == "storage_unavailable" {
                    retry.push((u.nonce, true));
                } else {
                    assert!(!in_db.contains(&u.nonce), "a refused upload ({code}) was stored");
                }
            }
        }
        assert!(sent.insert(u.nonce, u).is_none(), "a nonce was sent twice");
    }
    assert!(acked > 0 && no_answer > 0, "the load never overlapped a kill: {acked} acked, {no_answer} without an answer");
    assert!(refused.contains_key("storage_unavailable"), "the load never overlapped PostgreSQL's restart: {refused:?}");

    // Retries of what got no answer or a 503, on the replicas (all up and writable again):
    // a stored one is a duplicate, any other is accepted now.
    for s in &servers {
        wait_for(s, Duration::from_secs(30), |status, _| status == 200);
    }
    let answers: Vec<(bool, bool, u16, serde_json::Value)> = std::thread::scope(|s| {
        let retrying: Vec<_> = (0..2 * REPLICAS)
            .map(|t| {
                let (servers, retry, sent, in_db) = (&servers, &retry, &sent, &in_db);
                s.spawn(move || {
                    let mine = retry.iter().skip(t).step_by(2 * REPLICAS);
                    let answer = |(id, was_503): &([u8; 16], bool)| {
                        let (status, body) = servers[t % REPLICAS].post(&sent[id].encode());
                        (*was_503, in_db.contains(id), status, body)
                    };
                    mine.map(answer).collect::<Vec<_>>()
                })
            })
            .collect();
        retrying.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    // Of the uploads without an answer, and of those refused with a 503, how many were stored.
    let mut landed = [0u64; 2];
    for (was_503, was_stored, status, body) in answers {
        if was_stored {
            landed[usize::from(was_503)] += 1;
            assert_eq!((status, body["error"].as_str()), (409, Some("duplicate_nonce")), "a retry of a stored upload");
        } else {
            assert_eq!(status, 202, "a retry of an upload never stored: {body}");
        }
    }
    let (_, stored) = read_store(&url);
    assert_eq!(stored.len() as u64, in_db.len() as u64 + retry.len() as u64 - landed[0] - landed[1]);

    // Close the round with a final batch over all replicas: the released model moves by exactly
    // the mean of every stored update, so no partial sum missed one or doubled one.
    drop(servers);
    let k = stored.len() as u64 + FINAL;
    let servers = start_all(&dirs, &config(&pack, k, ""));
    let final_batch: Vec<Update> = (0..FINAL).map(|i| honest_update(&task, params, 1 << 40 | i, Encoding::F32)).collect();
    upload_spread(&servers, &final_batch);
    for s in &servers {
        wait_for(s, SEE_RELEASE_WITHIN, |_, h| h["model_version"] == 2);
    }
    let closed: f64 = servers.iter().map(|s| s.metric("hearth_rounds_closed_total")).sum();
    assert_eq!(closed, 1.0, "exactly one replica closes the round");
    let (rounds, _) = read_store(&url);
    let ended: Vec<_> = rounds.iter().filter(|r| r.1 != "open").collect();
    assert_eq!(ended, [&(task.round_id as i64, "closed".to_string(), k as i64)], "one round, released at K: {rounds:?}");
    let members: Vec<Update> =
        stored.iter().map(|id| sent.remove(id).expect("only sent uploads are stored")).chain(final_batch).collect();
    let (after, etag) = fetch_pack(&servers[0]);
    assert_fedavg(&before.params, &after.params, 0.01, &mean(&members));
    for s in &servers[1..] {
        assert_eq!(fetch_pack(s).1, etag);
    }

    eprintln!(
        "replicas: {KILLS} kills and a PostgreSQL restart ({} ms) in {} ms of load: {acked} acknowledged, \
         {no_answer} without an answer, refused {refused:?}; stored before their retry: {} without an answer, \
         {} refused with a 503; {} in the released round; replica restarts took {} ms on average; test took {} ms",
        pg_restart.as_millis(),
        load_took.as_millis(),
        landed[0],
        landed[1],
        members.len(),
        restarts.as_millis() / KILLS as u128,
        started.elapsed().as_millis()
    );
}

/// A round as the database holds it, with its model: (id, state, accepted, model_version).
type RoundOf = (i64, String, i64, i64);

#[test]
fn rounds_close_at_k_while_replicas_are_killed() {
    let started = Instant::now();
    let root = scratch("replicas-rounds");
    let url = postgres_database("replicas_rounds");
    let dirs = replica_dirs(&root, &url);
    let toml = config(&small_pack(&root), ROUND_K, "");
    let mut servers = start_all(&dirs, &toml);
    let task = servers[0].task();
    let params = fetch_pack(&servers[0]).0.params.values.len();

    let load = Instant::now();
    let fleet = fleet_of(&servers);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&fleet, &stop, &task, params);
    let mut g = Gaussian::new(SEED + 1);
    for _ in 0..ROUND_KILLS {
        pause(&mut g);
        let victim = victim(&mut g);
        kill_and_restart(&mut servers, victim, &dirs, &toml, &fleet);
    }
    stop.store(true, Ordering::Relaxed);
    let attempts: Vec<(Update, Outcome)> = clients.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let load_took = load.elapsed();

    // The rounds: every ended one released (no deadline passed), from at least K and ended at
    // the batch that reached K; one open round after them; a model per release.
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rounds: Vec<RoundOf> = db
        .query("SELECT id, state, accepted, model_version FROM rounds ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let (open, closed) = rounds.split_last().unwrap();
    assert_eq!(open.1, "open", "{rounds:?}");
    assert!(closed.len() >= 2, "fewer than two rounds closed during the kills: {rounds:?}");
    for (i, (id, state, accepted, model)) in closed.iter().enumerate() {
        assert_eq!(state, "closed", "round {id}: {rounds:?}");
        let k = ROUND_K as i64;
        assert!((k..k + MAX_BATCH as i64).contains(accepted), "round {id} released with {accepted} uploads (K = {k})");
        assert_eq!(*model, 1 + i as i64, "round {id} trained another model than the one before it released");
    }
    assert_eq!(open.3, 1 + closed.len() as i64, "the open round trains the last release");

    // The ids: each round holds exactly as many as it counted, together every stored id.
    let stored: HashMap<[u8; 16], i64> = db
        .query("SELECT id, round_id FROM updates", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0).try_into().unwrap(), r.get(1)))
        .collect();
    let mut per_round: HashMap<i64, i64> = HashMap::new();
    stored.values().for_each(|r| *per_round.entry(*r).or_default() += 1);
    for (id, _, accepted, _) in &rounds {
        assert_eq!(per_round.remove(id).unwrap_or(0), *accepted, "round {id}: its counter disagrees with its ids");
    }
    assert!(per_round.is_empty(), "ids of rounds that do not exist: {per_round:?}");
    assert_eq!(rounds.iter().map(|r| r.2).sum::<i64>(), stored.len() as i64);

    // The partial sums: only the open round's, holding what it counted.
    let partials: Vec<(i64, i64)> = db
        .query("SELECT round_id, SUM(count)::BIGINT FROM partials GROUP BY round_id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected = if open.2 > 0 { vec![(open.0, open.2)] } else { Vec::new() };
    assert_eq!(partials, expected, "partial sums of rounds other than the open one, or not adding up");

    // The uploads: every acknowledged one is stored in the round it named; no refused one is.
    let mut sent: HashMap<[u8; 16], Update> = HashMap::new();
    let (mut acked, mut no_answer, mut refused) = (0u64, 0u64, HashMap::<String, u64>::new());
    for (u, outcome) in attempts {
        match &outcome {
            Outcome::Acked => {
                acked += 1;
                assert_eq!(stored.get(&u.nonce), Some(&(u.round_id as i64)), "an acknowledged upload is not in its round");
            }
            Outcome::NoAnswer => no_answer += 1,
            Outcome::Refused(code) => {
                *refused.entry(code.clone()).or_default() += 1;
                // A 503 after a failed commit may hide a commit (the refusal says retry later).
                if code != "storage_unavailable" {
                    assert!(!stored.contains_key(&u.nonce), "a refused upload ({code}) was stored");
                }
            }
        }
        assert!(sent.insert(u.nonce, u).is_none(), "a nonce was sent twice");
    }
    assert!(no_answer > 0, "the load never overlapped a kill");

    // Each release moved the model by exactly the mean of its round's stored updates.
    let mut members: HashMap<i64, Vec<Update>> = HashMap::new();
    for (id, round) in &stored {
        members.entry(*round).or_default().push(sent.get(id).expect("only sent uploads are stored").clone());
    }
    let models: Vec<(i64, Option<i64>, Vec<u8>, String)> = db
        .query("SELECT version, from_round, onnx, manifest FROM models ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(models.len(), 1 + closed.len(), "a model per released round");
    for (pair, round) in models.windows(2).zip(closed) {
        let (before, after) = (&pair[0], &pair[1]);
        assert_eq!(after.1, Some(round.0), "model {} is not from round {}", after.0, round.0);
        let (before, after) = (pack_at(&before.2, before.3.as_bytes()), pack_at(&after.2, after.3.as_bytes()));
        assert_fedavg(&before.params, &after.params, 0.01, &mean(&members[&round.0]));
    }

    // Every replica serves the last release.
    let latest = models.len() as u64;
    for s in &servers {
        wait_for(s, SEE_RELEASE_WITHIN, |_, h| h["model_version"] == latest);
    }
    eprintln!(
        "replicas: {ROUND_KILLS} kills in {} ms of load at K = {ROUND_K}: {} rounds released holding {:?}; \
         {acked} acknowledged, {no_answer} without an answer, refused {refused:?}; test took {} ms",
        load_took.as_millis(),
        closed.len(),
        closed.iter().map(|r| r.2).collect::<Vec<_>>(),
        started.elapsed().as_millis()
    );
}
