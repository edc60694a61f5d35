//! Task -> K updates built by hearth-core -> round closes -> a new pack, served with a new
//! ETag, that loads and ranks. Over real HTTP against the real binary.

mod common;

use common::*;
use hearth_aggregator::reason::Reason;
use hearth_core::device::catalog::Ad;
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{AdRef, Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use hearth_core::learning::round::participate;
use hearth_core::privacy::ledger::DevicePolicy;
use hearth_core::privacy::noise::Sampler;
use hearth_core::privacy::wire::{Encoding, Update};

const K: u64 = 10;

fn catalog() -> Vec<Ad> {
    ["sports", "travel", "food", "tech"]
        .iter()
        .flat_map(|topic| {
            (0..3).map(move |i| Ad {
                id: format!("{topic}-{i}"),
                campaign: Some(format!("{topic}-campaign")),
                advertiser: Some(format!("{topic}-shop")),
                category: Some(topic.to_string()),
                features: vec![format!("topic:{topic}"), format!("kw:{topic}{i}")],
            })
        })
        .collect()
}

/// A device that reads travel pages and clicks travel ads among all it is shown.
fn travel_reader(pack: hearth_core::model::pack::ModelPack) -> Engine {
    let ads = catalog();
    let mut e = Engine::new(pack, Profile::new(ProfileConfig::default()).unwrap()).unwrap();
    e.set_catalog(ads.clone()).unwrap();
    let mut ts = 1_700_000_000_000i64;
    for visit in 0..12 {
        ts += 3_600_000;
        e.record(Event {
            kind: EventKind::PageView,
            ts,
            topics: vec!["travel".into()],
            keywords: vec!["beach".into()],
            ad: None,
        })
        .unwrap();
        for ad in &ads {
            ts += 10_000;
            let r = AdRef {
                ad_id: ad.id.clone(),
                campaign: ad.campaign.clone(),
                advertiser: ad.advertiser.clone(),
                category: ad.category.clone(),
            };
            e.record(Event { kind: EventKind::Impression, ts, topics: vec![], keywords: vec![], ad: Some(r.clone()) }).unwrap();
            if ad.category.as_deref() == Some("travel") && visit % 3 != 2 {
                e.record(Event { kind: EventKind::Click, ts: ts + 2_000, topics: vec![], keywords: vec![], ad: Some(r) })
                    .unwrap();
            }
        }
    }
    e
}

fn rank_options() -> RankOptions {
    serde_json::from_value(serde_json::json!({"now_ms": 1_700_100_000_000i64, "k": 5})).unwrap()
}

fn k_updates_close_the_round_and_publish_a_pack_that_scores(backend: Backend) {
    let dir = scratch_on("round-trip", backend);
    let server = Server::start(&dir, &config(&default_pack(), K, ""));

    // 1. The task, as a device parses it.
    let task = server.task();
    assert_eq!((task.model_version, task.clip_norm, task.noise_multiplier, task.min_events), (1, 1.0, 1.0, 5));
    assert!(task.deadline_ms.is_some_and(|d| d > 0));
    let (before, etag) = fetch_pack(&server);
    let (status, h, _) = get_with(&server.url("/v1/model/manifest.json"), &[("If-None-Match", &etag)]);
    assert_eq!(status, 304, "a matching ETag revalidates");
    assert_eq!(header(&h, "etag"), Some(etag.as_str()));

    // 2. K updates: one from a device that really trained, the rest random honest ones.
    let mut device = travel_reader(before.clone());
    let real = participate(&mut device, &task, None, &DevicePolicy::RELEASE, &mut Sampler::os()).unwrap();
    let d = before.params.values.len();
    let mut sent: Vec<Update> = vec![Update::decode(&real.upload).unwrap()];
    sent.extend((1..K).map(|i| honest_update(&task, d, i, Encoding::F32)));
    for (i, u) in sent.iter().enumerate() {
        let (status, body) = server.post(&u.encode());
        assert_eq!(status, 202, "update {i}: {body}");
        assert_eq!(body["accepted"], i as u64 + 1);
        assert_eq!(body["round_id"], task.round_id);
    }

    // 3. The round closes and the next one trains the new model.
    let next = server.wait_round_after(task.round_id);
    assert_eq!(next.model_version, 2);

    // 4. A new pack with a new ETag, moved by exactly lr · mean.
    let (after, new_etag) = fetch_pack(&server);
    assert_ne!(new_etag, etag);
    assert_eq!(after.manifest.model_version, 2);
    assert_fedavg(&before.params, &after.params, 0.01, &mean(&sent));
    let (status, _, _) = get_with(&server.url("/v1/model/manifest.json"), &[("If-None-Match", &etag)]);
    assert_eq!(status, 200, "the old ETag no longer matches");

    // 5. The new pack loads and ranks; the device takes it for the next round.
    device.set_model(after).unwrap();
    let ranked = device.rank(&Default::default(), &rank_options()).unwrap();
    assert_eq!(ranked.len(), 5);
    assert!(ranked.iter().all(|r| r.score.is_finite() && (0.0..=1.0).contains(&r.probability)));
    let again = participate(&mut device, &next, None, &DevicePolicy::RELEASE, &mut Sampler::os()).unwrap();
    assert_eq!(server.post(&again.upload).0, 202);

    // The old version stays available, immutable; the privacy status counts the release.
    let (status, h, body) = get(&server.url("/v1/models/1/manifest.json"));
    assert_eq!(status, 200);
    assert!(header(&h, "cache-control").unwrap().contains("immutable"));
    assert_eq!(pack_at(&get(&server.url("/v1/models/1/model.onnx")).2, &body).params.values, before.params.values);
    assert_eq!(get(&server.url("/v1/models/7/manifest.json")).0, 404);
    let (_, _, body) = get(&server.url("/v1/privacy"));
    let privacy: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(privacy["rounds_released"], 1);
    assert!(privacy["epsilon_spent"].as_f64().unwrap() > 0.0);
    assert!(privacy["epsilon_spent"].as_f64() < privacy["epsilon_budget"].as_f64());
    assert_eq!(server.metric("hearth_rounds_closed_total"), 1.0);
    assert_eq!(server.metric("hearth_updates_accepted_total"), K as f64 + 1.0);
    assert_eq!(server.metric("hearth_round_updates"), 1.0);
    assert_eq!(server.metric("hearth_model_version"), 2.0);

    // The log tells the round's story without naming any caller.
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(log.contains("round closed, model published"), "{log}");
    // (A PostgreSQL database's URL names its server, on loopback here: those lines aside.)
    let db = database_of(&dir);
    let requests: Vec<&str> = log.lines().filter(|l| !l.contains(&db)).collect();
    assert!(!requests.iter().any(|l| l.contains("127.0.0.1")), "a request address was logged: {log}");
}

#[test]
fn the_openapi_document_lists_every_route_and_each_route_answers() {
    let dir = scratch("openapi");
    let catalog = dir.join("catalog.json");
    std::fs::write(&catalog, r#"{"ads": [], "creatives": {}}"#).unwrap();
    let server = Server::start(&dir, &config(&small_pack(&dir), K, &format!("catalog = {catalog:?}")));
    let (status, _, body) = get(&server.url("/v1/openapi.json"));
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .collect();
    // The document is one for every role: the leader's and the helper's measurement routes
    // share `GET /dap/hpke_config`, listed once.
    let mut served: Vec<(String, String)> = hearth_aggregator::http::ROUTES
        .iter()
        .chain(hearth_aggregator::http::HELPER_ROUTES)
        .chain(hearth_aggregator::measure::routes::ROUTES)
        .chain(hearth_aggregator::measure::helper::ROUTES)
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    served.sort();
    served.dedup();
    assert_eq!(documented, served);
    let mut documented_codes: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    documented_codes.sort();
    codes.sort();
    assert_eq!(documented_codes, codes, "openapi.json's Error enum and hearth_aggregator::reason::Reason differ");
    for (method, path) in hearth_aggregator::http::ROUTES {
        let url = server.url(&path.replace("{version}", "1"));
        let status = if *method == "get" { get(&url).0 } else { post(&url, UPDATE_TYPE, b"").0 };
        assert!(status != 404 && status != 405, "{method} {path} answered {status}");
    }
    let helper_dir = dir.join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let measure_db = helper_dir.join("measure.db");
    let helper =
        Server::start(&helper_dir, &format!("{}[measure]\nenabled = true\ndatabase = {measure_db:?}\n", helper_config(K, 4.0)));
    for (method, path) in hearth_aggregator::http::HELPER_ROUTES {
        let status = if *method == "get" { get(&helper.url(path)).0 } else { post(&helper.url(path), "application/json", b"").0 };
        assert!(status != 404 && status != 405, "helper: {method} {path} answered {status}");
    }
    // Unauthenticated and empty: each answers (200 or a refusal), never 404 or 405.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for (method, path) in hearth_aggregator::measure::helper::ROUTES {
        let url = helper.url(&path.replace("{task_id}", "t").replace("{job_id}", "j"));
        let request = ureq::http::Request::builder().method(method.to_uppercase().as_str()).uri(url).body(Vec::new()).unwrap();
        let status = agent.run(request).unwrap().status().as_u16();
        assert!(status != 404 && status != 405, "helper: {method} {path} answered {status}");
    }
    let metrics = String::from_utf8(get(&server.url("/metrics")).2).unwrap();
    assert!(metrics.contains("# TYPE hearth_upload_seconds histogram"));
    assert!(metrics.lines().any(|l| without_replica(l) == "hearth_updates_rejected_total{reason=\"malformed_update\"} 1"));
    // Every sample names the replica it comes from.
    let samples: Vec<&str> = metrics.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(samples.iter().all(|l| l.contains("{replica=\"")), "{metrics}");
}

on_both_backends!(k_updates_close_the_round_and_publish_a_pack_that_scores);
