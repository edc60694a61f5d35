//! Measurement (DAP + Prio3) helpers for tests that run a leader and a helper as processes:
//! their configurations, the task and keys as a device fetches them, uploads, and the exact
//! noise seeded servers add.
#![allow(dead_code)]

use crate::common::{Server, TOKEN, config, get, helper_config};
use hearth_aggregator::noise::{Drawer, release_seed};
use hearth_core::measure::prio::codec::Decode;
use hearth_core::measure::{AggregateShare, TaskParams, dap, prepare};
use hearth_core::privacy::noise::{Sampler, SeededRandom};
use std::path::{Path, PathBuf};

/// The admin token test leaders accept on `POST /v1/measure/collect`.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// σ of each test server's noise: about the least the devices accept at M = 3 and 16 cells.
pub const SIGMA: f64 = 24.0;

/// Writes a catalog of one ad per campaign to `dir/catalog.json`.
pub fn catalog(dir: &Path, campaigns: &[&str]) -> PathBuf {
    let ads: Vec<_> =
        campaigns.iter().enumerate().map(|(i, c)| serde_json::json!({"id": format!("ad-{i}"), "campaign": c})).collect();
    let creatives: serde_json::Map<String, serde_json::Value> =
        (0..campaigns.len()).map(|i| (format!("ad-{i}"), serde_json::json!({}))).collect();
    let path = dir.join("catalog.json");
    std::fs::write(&path, serde_json::json!({"ads": ads, "creatives": creatives}).to_string()).unwrap();
    path
}

/// A measuring helper's configuration: K = `k`, its σ, its measurement file in `dir`; `extra`
/// lines go into its `[measure]` table.
pub fn helper_measure_config(dir: &Path, k: u64, sigma: f64, extra: &str) -> String {
    helper_config(k, 4.0)
        + &format!(
            "[measure]\nenabled = true\ndatabase = {:?}\nmin_reports = {k}\nnoise = {sigma:?}\n{extra}\n",
            dir.join("measure.db")
        )
}

/// A measuring leader's configuration over the catalog in `dir`: K = `k`, its σ and the
/// helper's, `slots`, the admin token; `extra` lines go into its `[measure]` table.
pub fn leader_measure_config(
    dir: &Path,
    initial_model: &Path,
    k: u64,
    helper: &Server,
    (sigma_leader, sigma_helper): (f64, f64),
    slots: &[&str],
    extra: &str,
) -> String {
    let top = format!("role = \"leader\"\ncatalog = {:?}", dir.join("catalog.json"));
    config(initial_model, k, &top).replace("noise_multiplier = 1.0", "noise_multiplier = 0.0")
        + &format!("[secagg]\nhelper_url = {:?}\ntoken = {TOKEN:?}\nnoise_multiplier = 4.0\n", helper.url("/"))
        + &format!(
            "[measure]\nenabled = true\ndatabase = {:?}\nmin_reports = {k}\nnoise = {sigma_leader:?}\nhelper_noise = {sigma_helper:?}\n\
             slots = {slots:?}\nadmin_token = {ADMIN_TOKEN:?}\n{extra}\n",
            dir.join("measure.db")
        )
}

/// The task as a device fetches it from the leader, its served id checked against its
/// parameters.
pub fn fetch_task(leader: &Server) -> (TaskParams, dap::TaskId) {
    let (status, _, body) = get(&leader.url("/v1/measure/task"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut served: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id: dap::TaskId = served.as_object_mut().unwrap().remove("task_id").unwrap().as_str().unwrap().parse().unwrap();
    let task: TaskParams = serde_json::from_value(served).expect("the task parses as hearth-core's TaskParams");
    assert_eq!(task.task_id(), id, "the served id commits to the served parameters");
    (task, id)
}

/// A server's DAP key (its `/dap/hpke_config`), as a device fetches it.
pub fn dap_key(server: &Server) -> dap::HpkeConfig {
    let (status, headers, body) = get(&server.url("/dap/hpke_config"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(crate::common::header(&headers, "content-type"), Some(dap::HpkeConfigList::MEDIA_TYPE));
    let list = dap::HpkeConfigList::get_decoded(&body).unwrap();
    assert_eq!(list.hpke_configs().len(), 1);
    list.hpke_configs()[0].clone()
}

/// `PUT` of `body` as `content_type` to the leader's upload path for `task_id` (any string):
/// the status and the problem document (`Null` for an empty body).
pub fn upload(leader: &Server, task_id: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp =
        agent.put(leader.url(&format!("/dap/tasks/{task_id}/reports"))).header("Content-Type", content_type).send(body).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// `POST /v1/measure/collect?period=…` with `token`: the status and the JSON answer.
pub fn collect(leader: &Server, period: &str, token: &str) -> (u16, serde_json::Value) {
    let (status, body) = crate::common::post_with(
        &leader.url(&format!("/v1/measure/collect?period={period}")),
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// The noise on each released count of `period` when both servers ran with
/// `HEARTH_TEST_NOISE_SEED = seed`: the leader's draw plus the helper's, recomputed.
pub fn seeded_count_noise(task: &TaskParams, period: u64, seed: u64) -> Vec<i64> {
    let drawn = |drawer, sigma| {
        let mut share = AggregateShare::zero(task);
        let source = SeededRandom::new(release_seed(seed, drawer, period));
        share.add_noise(sigma, &mut Sampler::from_source(source)).unwrap();
        share
    };
    prepare::unshard(&drawn(Drawer::Leader, task.leader_noise), &drawn(Drawer::Helper, task.helper_noise)).unwrap()
}

/// The released counts of `period` in a `/v1/measure/reports` (or collect) answer; `None` when
/// withheld, panics when the period is not there.
pub fn released_counts(reports: &serde_json::Value, period: u64) -> Option<Vec<i64>> {
    let periods = reports["periods"].as_array().expect("a periods list");
    let p = periods.iter().find(|p| p["start"] == period).unwrap_or_else(|| panic!("no period {period} in {reports}"));
    if p["released"] != true {
        return None;
    }
    Some(p["cells"].as_array().unwrap().iter().map(|c| c["count"].as_i64().unwrap()).collect())
}

/// Polls `/v1/measure/reports` until the leader has released (or withheld) `period`, for at most
/// a minute: its counts, `None` when withheld.
pub fn wait_for_release(leader: &Server, period: u64) -> Option<Vec<i64>> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, _, body) = get(&leader.url("/v1/measure/reports"));
        let reports: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if reports["periods"].as_array().unwrap().iter().any(|p| p["start"] == period) {
            return released_counts(&reports, period);
        }
        assert!(std::time::Instant::now() < until, "period {period} was never collected");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
