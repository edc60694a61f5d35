//! Rounds that miss their deadline, a privacy budget that runs out, restarts that keep every
//! published version.

mod common;

use common::*;
use hearth_aggregator::config::Config;
use hearth_aggregator::privacy::Budget;
use hearth_core::privacy::wire::Encoding;
use std::time::Duration;

const K: u64 = 10;

fn a_round_past_its_deadline_is_abandoned_and_releases_nothing(backend: Backend) {
    let dir = scratch_on("deadline", backend);
    let server =
        Server::start(&dir, &config(&small_pack(&dir), K, "").replace("min_events = 5", "min_events = 5\ndeadline_secs = 1"));
    let task = server.task();
    let d = fetch_pack(&server).0.params.values.len();
    let late = honest_update(&task, d, 1, Encoding::F32);
    for seed in 2..5 {
        assert_eq!(server.post(&honest_update(&task, d, seed, Encoding::F32).encode()).0, 202);
    }
    let next = server.wait_round_after(task.round_id);
    assert_eq!(next.model_version, task.model_version, "an abandoned round publishes no model");
    assert!(next.deadline_ms > task.deadline_ms);
    assert_eq!(server.metric("hearth_rounds_abandoned_total"), 1.0);
    assert_eq!(server.metric("hearth_round_updates"), 0.0);
    assert_eq!(server.metric("hearth_model_version"), 1.0);
    let (status, reply) = server.post(&late.encode());
    assert_eq!((status, reply["error"].as_str()), (409, Some("wrong_round")));
    let privacy: serde_json::Value = serde_json::from_slice(&get(&server.url("/v1/privacy")).2).unwrap();
    assert_eq!((privacy["rounds_released"].as_u64(), privacy["epsilon_spent"].as_f64()), (Some(0), Some(0.0)));
}

fn training_stops_when_the_budget_is_spent_and_restarts_keep_every_version(backend: Backend) {
    let dir = scratch_on("budget", backend);
    let pack = small_pack(&dir);
    // A budget between the ε of one and of two released rounds: exactly one round may close.
    let base = config(&pack, K, "");
    std::fs::write(dir.join("probe.toml"), &base).unwrap();
    let probe = Budget::new(&Config::load(Some(&dir.join("probe.toml")), []).unwrap(), None).unwrap();
    let (one, two) = (probe.epsilon_after(1).unwrap(), probe.epsilon_after(2).unwrap());
    let cfg = base.replace("epsilon_budget = 50.0", &format!("epsilon_budget = {}", (one + two) / 2.0));

    let server = Server::start(&dir, &cfg);
    let task = server.task();
    let d = fetch_pack(&server).0.params.values.len();
    for seed in 0..K {
        assert_eq!(server.post(&honest_update(&task, d, seed, Encoding::F32).encode()).0, 202);
    }
    // The round closed: a model was published and no next round opened.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while server.metric("hearth_model_version") < 2.0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _, body) = get(&server.url("/v1/round"));
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("privacy_budget_spent"));
    let (status, reply) = server.post(&honest_update(&task, d, 99, Encoding::F32).encode());
    assert_eq!((status, reply["error"].as_str()), (410, Some("privacy_budget_spent")));
    let privacy: serde_json::Value = serde_json::from_slice(&get(&server.url("/v1/privacy")).2).unwrap();
    assert_eq!(privacy["training"], false);
    assert_eq!(privacy["rounds_allowed"], 1);
    assert!((privacy["epsilon_spent"].as_f64().unwrap() - one).abs() < 1e-12);
    let served = fetch_pack(&server);
    server.kill();

    // After a kill, both versions are served and the budget is still spent.
    let server = Server::start(&dir, &cfg);
    let again = fetch_pack(&server);
    assert_eq!((again.0.manifest.model_version, &again.1), (2, &served.1));
    for v in [1, 2] {
        assert_eq!(get(&server.url(&format!("/v1/models/{v}/model.onnx"))).0, 200);
    }
    assert_eq!(get(&server.url("/v1/round")).0, 410);
}

on_both_backends!(
    a_round_past_its_deadline_is_abandoned_and_releases_nothing,
    training_stops_when_the_budget_is_spent_and_restarts_keep_every_version
);
