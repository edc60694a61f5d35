//! Private measurement through a leader and a helper as two processes over loopback HTTP:
//! devices' reports (built by hearth-core as the SDK builds them) are stored by the leader, a
//! period is collected on request, and the released counts are exactly the true counts plus the
//! two servers' seeded noise; hostile reports are refused at upload or dropped at aggregation,
//! each with its typed reason, and never counted.

mod common;
#[path = "common/measure.rs"]
mod measure;

use common::*;
use hearth_aggregator::noise::TEST_SEED_VARIABLE;
use hearth_core::measure::prio::codec::{Decode, Encode};
use hearth_core::measure::prio::field::{Field128, FieldElement};
use hearth_core::measure::prio::vdaf::Client;
use hearth_core::measure::report::seal_report;
use hearth_core::measure::{TaskParams, build_report, dap, hpke_dap::DapKeyPair};
use measure::*;
use std::time::{SystemTime, UNIX_EPOCH};

const K: u64 = 10;
const SEED: u64 = 20_261_717;
const DAY: u64 = 86_400;
const CAMPAIGNS: [&str; 3] = ["alpine-spring", "harbour-autumn", "meadow-summer"];
const SLOTS: [&str; 2] = ["in-article", "sidebar"];

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A seeded helper and a leader over a three-campaign catalog; `helper_extra` and
/// `leader_extra` lines go into their `[measure]` tables.
fn servers(name: &str, helper_extra: &str, leader_extra: &str) -> (Server, Server) {
    let dir = scratch(name);
    let helper_dir = dir.join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let env = [(TEST_SEED_VARIABLE, "20261717")];
    assert_eq!(SEED.to_string(), env[0].1);
    let helper = Server::start_with_env(&helper_dir, &helper_measure_config(&helper_dir, K, SIGMA, helper_extra), &env);
    catalog(&dir, &CAMPAIGNS);
    let config = leader_measure_config(&dir, &small_pack(&dir), K, &helper, (SIGMA, SIGMA), &SLOTS, leader_extra);
    let leader = Server::start_with_env(&dir, &config, &env);
    (helper, leader)
}

/// Device `i`'s honest measurement: every cell in [0, M].
fn measurement(task: &TaskParams, i: usize) -> Vec<u128> {
    (0..task.length()).map(|c| ((c * 7 + i * 3) as u64 % (task.max_count() + 1)) as u128).collect()
}

/// A report whose leader share is altered by `tamper` after sharding: what no honest device
/// sends, sealed as one would.
fn tampered(
    task: &TaskParams,
    leader: &dap::HpkeConfig,
    helper: &dap::HpkeConfig,
    time: u64,
    tamper: impl Fn(&mut Vec<u8>),
) -> Vec<u8> {
    let id: [u8; 16] = std::array::from_fn(|i| i as u8 ^ time as u8 ^ 0x5a);
    let (public, shares) = task.vdaf().unwrap().shard(&measurement(task, 0), &id).unwrap();
    let mut leader_share = shares[0].get_encoded().unwrap();
    tamper(&mut leader_share);
    let shares = [&leader_share[..], &shares[1].get_encoded().unwrap()[..]];
    seal_report(task, &id, time, &public.get_encoded().unwrap(), shares, leader, helper).unwrap()
}

#[test]
fn a_collected_period_releases_the_true_counts_plus_both_seeded_noises_and_nothing_hostile() {
    let (helper, leader) = servers("measure-release", "", "");
    let (task, task_id) = fetch_task(&leader);
    assert_eq!(task.campaigns, CAMPAIGNS);
    assert_eq!(task.slots, SLOTS);
    let (leader_key, helper_key) = (dap_key(&leader), dap_key(&helper));
    let id = task_id.to_string();
    // Yesterday: the period devices report in today.
    let period = now() - now() % DAY - DAY;

    let mut truth = vec![0i64; task.length()];
    let mut first = Vec::new();
    for i in 0..K as usize + 2 {
        let m = measurement(&task, i);
        truth.iter_mut().zip(&m).for_each(|(t, &v)| *t += v as i64);
        let report = build_report(&task, &m, period + 3600, &leader_key, &helper_key).unwrap();
        assert_eq!(upload(&leader, &id, dap::Report::MEDIA_TYPE, &report), (201, serde_json::Value::Null));
        if i == 0 {
            first = report;
        }
    }
    // Stored, but refused by the proof at aggregation: a cell above M (the first cell's low bit
    // made 2) and a proof share with a flipped byte.
    let above_m = tampered(&task, &leader_key, &helper_key, period, |share| {
        let mut cell = Field128::get_decoded(&share[..16]).unwrap();
        cell += Field128::one();
        share[..16].copy_from_slice(&cell.get_encoded().unwrap());
    });
    let forged = tampered(&task, &leader_key, &helper_key, period + 1, |share| {
        let at = share.len() - 20;
        share[at] ^= 1;
    });
    for hostile in [&above_m, &forged] {
        assert_eq!(upload(&leader, &id, dap::Report::MEDIA_TYPE, hostile).0, 201);
    }
    // A replayed report is refused before its period is collected.
    let (status, problem) = upload(&leader, &id, dap::Report::MEDIA_TYPE, &first);
    assert_eq!((status, problem["reason"].as_str()), (400, Some("report_replayed")), "{problem}");

    let (status, collected) = collect(&leader, &period.to_string(), ADMIN_TOKEN);
    assert_eq!(status, 200, "{collected}");
    let noise = seeded_count_noise(&task, period, SEED);
    let expected: Vec<i64> = truth.iter().zip(&noise).map(|(t, n)| t + n).collect();
    assert_eq!(released_counts(&collected, period), Some(expected.clone()));
    assert!(noise.iter().any(|&n| n != 0), "both servers added noise");
    assert_eq!(leader.metric("hearth_measure_reports_rejected_total{error=\"vdaf_prep_error\"}"), 2.0);
    assert_eq!(leader.metric("hearth_measure_periods_released_total"), 1.0);

    // Released once: asked again, the same counts; uploads to it are refused.
    let (status, again) = collect(&leader, &period.to_string(), ADMIN_TOKEN);
    assert_eq!((status, released_counts(&again, period)), (200, Some(expected.clone())));
    let late = build_report(&task, &measurement(&task, 1), period, &leader_key, &helper_key).unwrap();
    let (status, problem) = upload(&leader, &id, dap::Report::MEDIA_TYPE, &late);
    assert_eq!((status, problem["reason"].as_str()), (400, Some("period_collected")), "{problem}");
    assert_eq!(problem["type"], "urn:ietf:params:ppm:dap:error:reportRejected");

    // Today, below K: withheld, no counts, its reports gone.
    let today = now() - now() % DAY;
    for i in 0..3 {
        let report = build_report(&task, &measurement(&task, i), today, &leader_key, &helper_key).unwrap();
        assert_eq!(upload(&leader, &id, dap::Report::MEDIA_TYPE, &report).0, 201);
    }
    let (status, withheld) = collect(&leader, &today.to_string(), ADMIN_TOKEN);
    assert_eq!((status, released_counts(&withheld, today)), (200, None), "{withheld}");
    assert_eq!(leader.metric("hearth_measure_periods_withheld_total"), 1.0);

    // The collector's API, CSV and page show both periods.
    let (status, _, body) = get(&leader.url("/v1/measure/reports"));
    assert_eq!(status, 200);
    let reports: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reports["task_id"], id.as_str());
    assert_eq!(released_counts(&reports, period), Some(expected));
    assert_eq!(released_counts(&reports, today), None);
    let (status, headers, csv) = get(&leader.url("/v1/measure/reports.csv"));
    assert_eq!((status, header(&headers, "content-type")), (200, Some("text/csv; charset=utf-8")));
    assert_eq!(String::from_utf8(csv).unwrap().lines().count(), 1 + 2 * task.length());
    let (status, headers, _) = get(&leader.url("/reports/"));
    assert_eq!((status, header(&headers, "content-type")), (200, Some("text/html; charset=utf-8")));
    let stored: u64 = rusqlite::Connection::open(leader.dir.join("measure.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0, "a collected period's reports are deleted");
}

/// An upload and what it gets: task id, media type, body; status, DAP error type, Hearth reason.
type Refusal<'a> = (&'a str, &'a str, &'a [u8], u16, Option<&'a str>, &'a str);

#[test]
fn uploads_and_collect_calls_are_refused_with_their_typed_reasons() {
    let (helper, leader) = servers("measure-refusals", "", "max_report_bytes = 65536\nmax_reports_per_period = 2");
    let (task, task_id) = fetch_task(&leader);
    let (leader_key, helper_key) = (dap_key(&leader), dap_key(&helper));
    let id = task_id.to_string();
    let period = now() - now() % DAY - DAY;
    let honest = |time: u64| build_report(&task, &measurement(&task, 1), time, &leader_key, &helper_key).unwrap();
    let report = honest(period);

    // The same report's shares under another time: HPKE binds the time, but the leader refuses
    // a time that is not a period's start before it opens anything.
    let decoded = dap::Report::get_decoded(&report).unwrap();
    let moved = dap::Report::new(
        dap::ReportMetadata::new(*decoded.metadata().id(), dap::Time::from_seconds_since_epoch(period + 1)),
        decoded.public_share().to_vec(),
        decoded.leader_encrypted_input_share().clone(),
        decoded.helper_encrypted_input_share().clone(),
    )
    .get_encoded()
    .unwrap();
    let other_task = TaskParams { min_reports: K + 1, ..task.clone() };
    let for_other_task = build_report(&other_task, &measurement(&task, 1), period, &leader_key, &helper_key).unwrap();
    let stale_key = DapKeyPair::generate(9).unwrap().config();
    let to_stale_key = build_report(&task, &measurement(&task, 1), period, &stale_key, &helper_key).unwrap();
    let unknown_task = dap::TaskId::from([7; 32]).to_string();
    let report_type = dap::Report::MEDIA_TYPE;
    // The helper's ciphertext one byte longer than an honest one: the leader cannot open it, but
    // it stores and forwards it, so it checks its size.
    let padded = {
        let ct = decoded.helper_encrypted_input_share();
        let mut payload = ct.payload().to_vec();
        payload.push(0);
        dap::Report::new(
            decoded.metadata().clone(),
            decoded.public_share().to_vec(),
            decoded.leader_encrypted_input_share().clone(),
            dap::HpkeCiphertext::new(*ct.config_id(), ct.encapsulated_key().to_vec(), payload),
        )
        .get_encoded()
        .unwrap()
    };

    let cases: [Refusal; 11] = [
        (&id, "application/octet-stream", &report, 415, None, "unsupported_media_type"),
        (&unknown_task, report_type, &report, 400, Some("unrecognizedTask"), "unknown_task"),
        ("not-a-task-id", report_type, &report, 400, Some("unrecognizedTask"), "unknown_task"),
        (&id, report_type, b"\x00\x01 not a report", 400, Some("invalidMessage"), "malformed_report"),
        (&id, report_type, &moved, 400, Some("reportRejected"), "time_not_truncated"),
        (&id, report_type, &honest(now() + 2 * DAY), 400, Some("reportTooEarly"), "report_too_early"),
        (&id, report_type, &honest(period - 2 * DAY), 400, Some("reportRejected"), "report_expired"),
        (&id, report_type, &for_other_task, 400, Some("reportRejected"), "decrypt_failed"),
        (&id, report_type, &to_stale_key, 400, Some("outdatedConfig"), "outdated_config"),
        (&id, report_type, &padded, 400, Some("invalidMessage"), "wrong_share_size"),
        (&id, report_type, &vec![0; 65_537], 413, None, "payload_too_large"),
    ];
    for (task, content_type, body, status, dap_type, reason) in cases {
        let (got, problem) = upload(&leader, task, content_type, body);
        assert_eq!((got, problem["reason"].as_str()), (status, Some(reason)), "{problem}");
        let want_type = dap_type.map_or("about:blank".to_string(), |t| format!("urn:ietf:params:ppm:dap:error:{t}"));
        assert_eq!(problem["type"], want_type.as_str(), "{reason}");
    }
    assert_eq!(upload(&leader, &id, report_type, &report).0, 201);
    let (status, problem) = upload(&leader, &id, report_type, &report);
    assert_eq!((status, problem["reason"].as_str()), (400, Some("report_replayed")));
    assert_eq!(leader.metric("hearth_measure_reports_refused_total{reason=\"report_replayed\"}"), 1.0);
    assert_eq!(leader.metric("hearth_measure_reports_accepted_total"), 1.0);
    // measure.max_reports_per_period = 2: the period takes one more, then none.
    assert_eq!(upload(&leader, &id, report_type, &honest(period)).0, 201);
    let (status, problem) = upload(&leader, &id, report_type, &honest(period));
    assert_eq!((status, problem["reason"].as_str()), (400, Some("period_full")), "{problem}");
    assert_eq!(problem["type"], "urn:ietf:params:ppm:dap:error:reportRejected");

    // The collect endpoint: the admin token, then a period's start that has begun.
    for (period, token, status, reason) in [
        (period.to_string(), "wrong-token-0123456789", 401, "unauthorized"),
        (String::new(), ADMIN_TOKEN, 400, "bad_period"),
        ((period + 1).to_string(), ADMIN_TOKEN, 400, "bad_period"),
        ((period + 3 * DAY).to_string(), ADMIN_TOKEN, 400, "bad_period"),
        ((period - 5 * DAY).to_string(), ADMIN_TOKEN, 404, "unknown_period"),
    ] {
        let (got, problem) = collect(&leader, &period, token);
        assert_eq!((got, problem["reason"].as_str()), (status, Some(reason)), "{problem}");
    }

    // Devices on any origin may upload (a CORS preflight for the PUT), never with credentials.
    let addr = leader.url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let preflight = format!(
        "OPTIONS /dap/tasks/{id}/reports HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://news.example\r\n\
         Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
    );
    let (status, response) = raw(&leader.url("/"), &[(preflight.as_bytes(), std::time::Duration::ZERO)]);
    let response = response.to_ascii_lowercase();
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("access-control-allow-origin: *"), "{response}");
    assert!(response.lines().any(|l| l.starts_with("access-control-allow-methods:") && l.contains("put")), "{response}");
    assert!(!response.contains("access-control-allow-credentials"), "{response}");
}

#[test]
fn a_leader_refuses_a_task_devices_would_refuse_and_init_makes_the_measurement_file() {
    let dir = scratch("measure-epsilon");
    let helper_dir = dir.join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let helper = Server::start(&helper_dir, &helper_measure_config(&helper_dir, K, 2.0, ""));
    catalog(&dir, &CAMPAIGNS);
    // σ = 2 against Δ = 12: ε per period far above the devices' ceiling.
    let config = leader_measure_config(&dir, &small_pack(&dir), K, &helper, (SIGMA, 2.0), &SLOTS, "");
    let out = aggregator(&dir, &config).arg("--init").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("devices would refuse this task"), "{stderr}");

    // `--init` made both files before the task was refused. `init` refuses when both exist, and
    // makes measurement's alone beside an existing round store (turning measurement on later).
    let (rounds, measurement) = (dir.join("hearth.db"), dir.join("measure.db"));
    assert!(rounds.exists() && measurement.exists());
    assert!(!aggregator(&dir, &config).arg("init").output().unwrap().status.success());
    std::fs::remove_file(&measurement).unwrap();
    let out = aggregator(&dir, &config).arg("init").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(measurement.exists());
}

#[test]
fn a_period_is_collected_unasked_once_its_send_window_has_passed_and_the_leader_stops_cleanly() {
    // Ten-second periods: a period is due 20 s after it starts (its own and its send window).
    let (helper, leader) = servers("measure-schedule", "period_secs = 10", "period_secs = 10\ngrace_secs = 0");
    let (task, task_id) = fetch_task(&leader);
    let (leader_key, helper_key) = (dap_key(&leader), dap_key(&helper));
    let period = task.period_of(now());
    let mut truth = vec![0i64; task.length()];
    for i in 0..K as usize {
        let m = measurement(&task, i);
        truth.iter_mut().zip(&m).for_each(|(t, &v)| *t += v as i64);
        let report = build_report(&task, &m, period, &leader_key, &helper_key).unwrap();
        assert_eq!(upload(&leader, &task_id.to_string(), dap::Report::MEDIA_TYPE, &report).0, 201);
    }
    let released = wait_for_release(&leader, period);
    assert!(now() >= period + 20, "collected before its send window ended");
    let expected: Vec<i64> = truth.iter().zip(seeded_count_noise(&task, period, SEED)).map(|(t, n)| t + n).collect();
    assert_eq!(released, Some(expected));
    assert!(leader.terminate().success(), "the collection thread stops with the server");
}

#[test]
fn a_collection_cut_short_by_a_helper_outage_and_a_leader_crash_resumes_and_releases_once() {
    let dir = scratch("measure-resume");
    let helper_dir = dir.join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let seed = SEED.to_string();
    let env = [(TEST_SEED_VARIABLE, seed.as_str())];
    let helper_toml = helper_measure_config(&helper_dir, K, SIGMA, "");
    let mut helper = Server::start_with_env(&helper_dir, &helper_toml, &env);
    // A restarted helper listens where the leader's configuration says it is.
    let listen = format!("{:?}", helper.url.trim_start_matches("http://"));
    let helper_env = [(TEST_SEED_VARIABLE, seed.as_str()), ("HEARTH_AGG__LISTEN", listen.as_str())];
    catalog(&dir, &CAMPAIGNS);
    let leader_toml = leader_measure_config(&dir, &small_pack(&dir), K, &helper, (SIGMA, SIGMA), &SLOTS, "");
    let mut leader = Server::start_with_env(&dir, &leader_toml, &env);
    let (task, task_id) = fetch_task(&leader);
    let (leader_key, helper_key) = (dap_key(&leader), dap_key(&helper));
    let period = now() - now() % DAY - DAY;
    let mut truth = vec![0i64; task.length()];
    for i in 0..K as usize + 1 {
        let m = measurement(&task, i);
        truth.iter_mut().zip(&m).for_each(|(t, &v)| *t += v as i64);
        let report = build_report(&task, &m, period, &leader_key, &helper_key).unwrap();
        assert_eq!(upload(&leader, &task_id.to_string(), dap::Report::MEDIA_TYPE, &report).0, 201);
    }

    helper.sigkill();
    let (status, problem) = collect(&leader, &period.to_string(), ADMIN_TOKEN);
    assert_eq!((status, problem["reason"].as_str()), (503, Some("collection_failed")), "{problem}");
    // The period stays closed while its collection waits for the helper.
    let late = build_report(&task, &measurement(&task, 0), period, &leader_key, &helper_key).unwrap();
    let (status, problem) = upload(&leader, &task_id.to_string(), dap::Report::MEDIA_TYPE, &late);
    assert_eq!((status, problem["reason"].as_str()), (400, Some("period_collected")), "{problem}");
    leader.sigkill();

    let _helper = Server::start_with_env(&helper_dir, &helper_toml, &helper_env);
    let leader = Server::start_with_env(&dir, &leader_toml, &env);
    let released = wait_for_release(&leader, period);
    let expected: Vec<i64> = truth.iter().zip(seeded_count_noise(&task, period, SEED)).map(|(t, n)| t + n).collect();
    assert_eq!(released, Some(expected.clone()));
    let (status, again) = collect(&leader, &period.to_string(), ADMIN_TOKEN);
    assert_eq!((status, released_counts(&again, period)), (200, Some(expected)));
}

#[test]
fn a_period_whose_collection_the_helper_keeps_refusing_fails_after_a_bounded_number_of_tries() {
    // The helper takes no period shorter than two days; the leader's task has one of a day.
    let (helper, leader) = servers("measure-refused", "period_secs = 172800", "");
    let (task, task_id) = fetch_task(&leader);
    let (leader_key, helper_key) = (dap_key(&leader), dap_key(&helper));
    let period = now() - now() % DAY - DAY;
    for i in 0..K as usize {
        let report = build_report(&task, &measurement(&task, i), period, &leader_key, &helper_key).unwrap();
        assert_eq!(upload(&leader, &task_id.to_string(), dap::Report::MEDIA_TYPE, &report).0, 201);
    }
    // Each forced collection is one try (the collection thread may add its own, after its
    // backoff); the fifth refusal ends it: recorded as failed, with the helper's reason.
    let mut tries = 0;
    let failed = loop {
        let (status, answer) = collect(&leader, &period.to_string(), ADMIN_TOKEN);
        if status == 200 {
            break answer;
        }
        assert_eq!((status, answer["reason"].as_str()), (503, Some("collection_failed")), "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("period_too_short"), "{answer}");
        tries += 1;
        assert!(tries < 5, "still retried after {tries} refusals");
    };
    let shown = &failed["periods"][0];
    assert_eq!((&shown["start"], &shown["released"]), (&serde_json::json!(period), &serde_json::json!(false)), "{failed}");
    let why = shown["failed"].as_str().unwrap();
    assert!(why.contains("refused its collection 5 times") && why.contains("period_too_short"), "{why}");
    let (_, _, body) = get(&leader.url("/v1/measure/reports"));
    let reports: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reports["periods"][0]["failed"], why);
    let (_, _, csv) = get(&leader.url("/v1/measure/reports.csv"));
    assert!(String::from_utf8(csv).unwrap().lines().skip(1).all(|l| l.contains(",failed,")));
    let (_, _, page) = get(&leader.url("/reports/"));
    assert!(String::from_utf8(page).unwrap().contains("collection failed, not released"));
    let stored: u64 = rusqlite::Connection::open(leader.dir.join("measure.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0, "a failed period's reports are deleted");
    let failures = leader.metric("hearth_measure_collection_failures_total");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(leader.metric("hearth_measure_collection_failures_total"), failures, "no retry after the period failed");
    assert_eq!(leader.metric("hearth_measure_periods_failed_total"), 1.0);
}
