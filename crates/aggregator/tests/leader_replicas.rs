//! Replicas of the secure-aggregation roles sharing PostgreSQL databases. Two leaders that share
//! one database take exactly K reports into a round whichever replica each reached, and release
//! it once; two helpers that share one database release one share per round whichever replica
//! the leader asks, the same bytes to every asker.

mod common;

use common::*;
use hearth_aggregator::helper::{AggregateRequest, SealedSeed};
use hearth_aggregator::noise::TEST_SEED_VARIABLE;
use hearth_core::privacy::seal::HelperKey;
use hearth_core::privacy::shares::{Binding, SecAggTask, read_values};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Both roles' min_clients, and the plan's n.
const K: u64 = 10;
/// Reports sent at once to a round of K: the rest find it full, or ended.
const SENT: u64 = 15;
const LR: f64 = 0.01;
const SEED: u64 = 20_261_218;
/// How long a replica may take to serve a round another replica released: it reads the open
/// round every `aggregate::TICK` (250 ms), so this is generous on a loaded 2-core machine.
const SEE_RELEASE_WITHIN: Duration = Duration::from_secs(5);

/// A server directory under `root` whose servers use the database `url`.
fn dir_on(root: &Path, name: &str, url: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("database.url"), url).unwrap();
    dir
}

/// Starts a server in each of `dirs` at once (the first `--init` creates the store, the others
/// find it), all with `toml` and `env`.
fn start_together(dirs: &[PathBuf], toml: &str, env: &[(&str, &str)]) -> Vec<Server> {
    std::thread::scope(|s| {
        let starting: Vec<_> = dirs.iter().map(|dir| s.spawn(move || Server::start_with_env(dir, toml, env))).collect();
        starting.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

fn count(db: &mut postgres::Client, sql: &str) -> i64 {
    db.query_one(sql, &[]).unwrap().get(0)
}

/// `(id, round_id)` of every row of `table`.
fn ids_by_round(db: &mut postgres::Client, table: &str) -> HashMap<[u8; 16], i64> {
    db.query(&format!("SELECT id, round_id FROM {table}"), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0).try_into().unwrap(), r.get(1)))
        .collect()
}

#[test]
fn two_leader_replicas_release_exactly_k_reports_once() {
    let started = Instant::now();
    let root = scratch("leader-replicas");
    let (helper_db, leader_db) = (postgres_database("leader_replicas_helper"), postgres_database("leader_replicas_leader"));
    let seed = SEED.to_string();
    let env = [(TEST_SEED_VARIABLE, seed.as_str())];
    let helper = Server::start_with_env(&dir_on(&root, "helper", &helper_db), &helper_config(K, 4.0), &env);
    let dirs = [dir_on(&root, "leader-0", &leader_db), dir_on(&root, "leader-1", &leader_db)];
    let leaders = start_together(&dirs, &leader_config(&small_pack(&root), K, &helper, 5.0), &env);
    let task = leaders[0].task();
    assert_eq!(leaders[1].task().round_id, task.round_id, "both leaders serve the one open round");
    let (before, _) = fetch_pack(&leaders[0]);
    let d = before.params.values.len();
    let b = task.binding(d).expect("a leader's task is a secure round");
    let plan = b.plan().unwrap();
    let key = HelperKey::from_config(&fetch_helper_config(&helper).hpke).unwrap();
    let reports: Vec<_> = (0..SENT).map(|s| random_report(&b, &key, s)).collect();

    // Every report at once, alternately to each leader.
    let gate = Barrier::new(SENT as usize);
    let answers: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let sending: Vec<_> = reports
            .iter()
            .enumerate()
            .map(|(i, (r, _))| {
                let (leader, body, gate) = (&leaders[i % 2], r.encode(), &gate);
                s.spawn(move || {
                    gate.wait();
                    leader.post_report(&body)
                })
            })
            .collect();
        sending.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // Exactly K are taken, at positions 1..=K of the one round across both replicas. The rest
    // found the round full (503 busy, still open while it is released), or ended: 409
    // wrong_round from a replica that had not seen the release yet, 409 stale_model from one
    // that had.
    let mut acked = HashSet::new();
    let mut positions = Vec::new();
    let mut per_leader = [0; 2];
    let mut refused: HashMap<String, u64> = HashMap::new();
    for (i, ((r, _), (status, body))) in reports.iter().zip(&answers).enumerate() {
        if *status == 202 {
            assert_eq!(body["round_id"].as_u64(), Some(task.round_id), "{body}");
            positions.push(body["accepted"].as_u64().unwrap());
            acked.insert(r.report_id);
            per_leader[i % 2] += 1;
            continue;
        }
        let code = body["error"].as_str().unwrap_or_default();
        match (*status, code) {
            (503, "busy") => {
                assert!(body["detail"].as_str().unwrap().contains("round is full"), "a busy that is not the cap: {body}")
            }
            (409, "wrong_round" | "stale_model") => {}
            _ => panic!("a report refused with {status} {body}"),
        }
        *refused.entry(code.to_string()).or_default() += 1;
    }
    positions.sort_unstable();
    assert_eq!(positions, (1..=K).collect::<Vec<_>>(), "the round took exactly K, each at its own position");
    // Each leader was sent more reports than were refused in all: both partial sums are in it.
    assert!(per_leader.iter().all(|n| *n > 0), "accepted per leader: {per_leader:?}");

    // Both replicas move to the next round, on the released model.
    let nexts: Vec<_> = leaders
        .iter()
        .map(|l| {
            let seen = Instant::now();
            let next = l.wait_round_after(task.round_id);
            assert!(seen.elapsed() < SEE_RELEASE_WITHIN, "{} saw the release after {:?}", l.url, seen.elapsed());
            next
        })
        .collect();
    assert_eq!(nexts[0].round_id, nexts[1].round_id);
    assert_eq!((nexts[0].model_version, nexts[1].model_version), (task.model_version + 1, task.model_version + 1));
    let closed: f64 = leaders.iter().map(|l| l.metric("hearth_rounds_closed_total")).sum();
    let abandoned: f64 = leaders.iter().map(|l| l.metric("hearth_rounds_abandoned_total")).sum();
    assert_eq!((closed, abandoned), (1.0, 0.0), "exactly one replica released the round");

    // The model moved by exactly the acknowledged reports' sum plus both servers' noise: the
    // two writers' partial sums were merged, none missed or doubled.
    let (after, etag) = fetch_pack(&leaders[0]);
    assert_eq!(fetch_pack(&leaders[1]).1, etag, "both leaders serve the released model");
    let grids = reports.iter().filter(|(r, _)| acked.contains(&r.report_id)).map(|(_, g)| g);
    let mean = expected_secure_mean(&plan, grids, task.round_id, SEED, K);
    assert_fedavg(&before.params, &after.params, LR, &mean);

    // The leaders' database: one closed round of exactly the acknowledged ids, its seeds and
    // partials gone, an empty next round on the new model.
    let round = task.round_id as i64;
    let mut db = connect(&leader_db);
    let rounds: Vec<(i64, String, i64, i64)> = db
        .query("SELECT id, state, accepted, model_version FROM rounds ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let next = (nexts[0].round_id as i64, "open".to_string(), 0, 2);
    assert_eq!(rounds, [(round, "closed".to_string(), K as i64, 1), next]);
    let stored = ids_by_round(&mut db, "updates");
    assert_eq!(stored.keys().copied().collect::<HashSet<_>>(), acked, "the stored ids are the acknowledged ones");
    assert!(stored.values().all(|r| *r == round));
    assert_eq!(count(&mut db, "SELECT count(*) FROM updates WHERE seed IS NOT NULL"), 0, "a seed outlived its round");
    assert_eq!(count(&mut db, "SELECT count(*) FROM partials"), 0, "a partial sum outlived its round");
    let model: (i64, Option<i64>) = db
        .query_one("SELECT version, from_round FROM models ORDER BY version DESC LIMIT 1", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(model, (2, Some(round)));

    // The helper's database: one release, for that round, of exactly those reports.
    let mut db = connect(&helper_db);
    let releases: Vec<i64> = db.query("SELECT round_id FROM releases", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(releases, [round]);
    let counted = ids_by_round(&mut db, "reports");
    assert_eq!(counted.keys().copied().collect::<HashSet<_>>(), acked);
    assert!(counted.values().all(|r| *r == round));

    eprintln!(
        "leader replicas: {SENT} reports at once to two leaders: {K} accepted ({per_leader:?} per leader), refused {refused:?}; \
         test took {} ms",
        started.elapsed().as_millis()
    );
}

/// What a helper answers `/v1/aggregate`: status, error code, body.
fn aggregate(helper: &Server, request: &AggregateRequest) -> (u16, Option<String>, Vec<u8>) {
    let body = serde_json::to_vec(request).unwrap();
    let auth = format!("Bearer {TOKEN}");
    let (status, body) =
        post_with(&helper.url("/v1/aggregate"), &[("Authorization", &auth), ("Content-Type", "application/json")], &body);
    let error = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(String::from));
    (status, error, body)
}

#[test]
fn two_helper_replicas_release_one_share_per_round() {
    // Several rounds, each asked of both replicas at once, so that both often pass the check for
    // an earlier release and draw their own noise before one records: the other must answer with
    // what was recorded.
    const ROUNDS: std::ops::Range<u64> = 5..9;
    const PARAMS: u64 = 4_000;
    let started = Instant::now();
    let root = scratch("helper-replicas");
    let url = postgres_database("helper_replicas");
    let dirs = [dir_on(&root, "helper-0", &url), dir_on(&root, "helper-1", &url)];
    let helpers = start_together(&dirs, &helper_config(K, 4.0), &[]);
    let config = fetch_helper_config(&helpers[0]);
    assert_eq!(fetch_helper_config(&helpers[1]), config, "both replicas serve the one key of their store");
    let key = HelperKey::from_config(&config.hpke).unwrap();
    let secagg = SecAggTask { clients: K, leader_noise: 5.0, helper_noise: 4.0 };

    for round in ROUNDS {
        let binding = Binding { round_id: round, model_version: 1, params: PARAMS, clip_norm: 1.0, local_noise: 0.0, secagg };
        let seeds: Vec<SealedSeed> = (0..K).map(|s| SealedSeed::of(&random_report(&binding, &key, round << 8 | s).0)).collect();
        let request = AggregateRequest { binding, reports: seeds.clone() };
        let gate = Barrier::new(helpers.len());
        let answers: Vec<_> = std::thread::scope(|s| {
            let asking: Vec<_> = helpers
                .iter()
                .map(|h| {
                    let (request, gate) = (&request, &gate);
                    s.spawn(move || {
                        gate.wait();
                        aggregate(h, request)
                    })
                })
                .collect();
            asking.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (status, error, _) in &answers {
            assert_eq!((*status, error.as_deref()), (200, None), "round {round}");
        }
        let share = &answers[0].2;
        assert_eq!(read_values(share).len() as u64, PARAMS);
        assert_eq!(&answers[1].2, share, "round {round}: both replicas answer the one recorded release");

        // Afterwards, from either replica: the same batch gets the same bytes, another batch
        // for the round is refused.
        let mut other = seeds.clone();
        other[K as usize - 1] = SealedSeed::of(&random_report(&binding, &key, round << 8 | 0xff).0);
        let other = AggregateRequest { binding, reports: other };
        for h in &helpers {
            assert_eq!(&aggregate(h, &request).2, share, "round {round}: a retry to {}", h.url);
            let (status, error, _) = aggregate(h, &other);
            assert_eq!((status, error.as_deref()), (409, Some("round_already_aggregated")), "round {round}: {}", h.url);
        }
    }

    // The store: one release per round, each counting exactly its K reports.
    let mut db = connect(&url);
    let releases: Vec<i64> =
        db.query("SELECT round_id FROM releases ORDER BY round_id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(releases, ROUNDS.map(|r| r as i64).collect::<Vec<_>>());
    let per_round: Vec<(i64, i64)> = db
        .query("SELECT round_id, count(*) FROM reports GROUP BY round_id ORDER BY round_id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(per_round, ROUNDS.map(|r| (r as i64, K as i64)).collect::<Vec<_>>());
    // Each replica logs the releases it recorded: one per round between them.
    let logged: usize = dirs
        .iter()
        .map(|d| std::fs::read_to_string(d.join("stderr.log")).unwrap().matches("aggregate share released").count())
        .sum();
    assert_eq!(logged, ROUNDS.count(), "releases recorded by the two replicas together");
    eprintln!("helper replicas: {} rounds asked of both at once; test took {} ms", ROUNDS.count(), started.elapsed().as_millis());
}
