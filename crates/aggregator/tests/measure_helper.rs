//! The helper's side of private measurement, as a real process: this test plays the leader and
//! the collector with hand-built DAP-09 messages (reports from hearth-core's `build_report`, the
//! leader's half prepared with `leader_init`), and checks what the helper counts, refuses and
//! releases.

mod common;

use common::{Server, TOKEN, header, scratch};
use hearth_aggregator::noise::{Drawer, release_seed};
use hearth_core::measure::dap::{self, query_type::TimeInterval};
use hearth_core::measure::hpke_dap::{self, DapKeyPair};
use hearth_core::measure::prio::codec::{Decode, Encode};
use hearth_core::measure::prio::field::{Field128, FieldElement};
use hearth_core::measure::prio::vdaf::Client;
use hearth_core::measure::report::seal_report;
use hearth_core::measure::{AggregateShare, LeaderState, OutputShare, TaskParams, build_report, prepare};
use hearth_core::privacy::noise::{Sampler, SeededRandom};

/// The helper's noise σ and its K (above hearth-core's floor of 10, so a task may undercut it).
const SIGMA: f64 = 3.0;
const K: u64 = 12;
/// The test noise seed both the helper and this test derive the helper's noise from.
const SEED: u64 = 17;
const PERIOD_SECS: u64 = 3600;
/// The helper's job size.
const JOB_SIZE: usize = 64;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The hour's start when the tests began: a period the helper has not expired, the same for
/// every report of a test.
fn period() -> u64 {
    static START: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| now() / PERIOD_SECS * PERIOD_SECS);
    *START
}

const JOB_INIT: &str = "application/dap-aggregation-job-init-req";
const SHARE_REQ: &str = "application/dap-aggregate-share-req";

/// A helper taking periods of `period_secs` and more, expiring them `grace_secs` after
/// [`EXPIRY_PERIODS`] periods.
fn helper_config(dir: &std::path::Path, period_secs: u64, grace_secs: u64) -> String {
    format!(
        "role = \"helper\"\n[round]\nmin_clients = {K}\n[secagg]\ntoken = {TOKEN:?}\n\
         [measure]\nenabled = true\ndatabase = {:?}\nmin_reports = {K}\nnoise = {SIGMA}\nbits = 2\nmax_cells = 16\n\
         job_size = {JOB_SIZE}\nperiod_secs = {period_secs}\ngrace_secs = {grace_secs}\n",
        dir.join("measure.db")
    )
}

fn start_helper(name: &str) -> Server {
    let dir = scratch(name);
    Server::start_with_env(&dir, &helper_config(&dir, PERIOD_SECS, 600), &[("HEARTH_TEST_NOISE_SEED", &SEED.to_string())])
}

/// (status, headers, body) of a request whose head declares `length` body bytes that are never
/// sent: what a server that refuses by the declared length answers.
fn head_only(method: &str, url: &str, headers: &[(&str, &str)], length: usize) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    stream.write_all(format!("{head}\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let hs = lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
    (status, hs, answer[split + 4..].to_vec())
}

/// (status, headers, body) of any request.
fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = agent.run(req.body(body.to_vec()).unwrap()).unwrap();
    let hs = resp.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
    (resp.status().as_u16(), hs, body)
}

/// A problem document's DAP type (after the URN prefix) and Hearth reason.
fn problem(status: u16, headers: &[(String, String)], body: &[u8]) -> (u16, String, String) {
    assert_eq!(header(headers, "content-type"), Some("application/problem+json"), "{}", String::from_utf8_lossy(body));
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["status"], status);
    let kind = v["type"].as_str().unwrap();
    (
        status,
        kind.strip_prefix("urn:ietf:params:ppm:dap:error:").unwrap_or(kind).to_string(),
        v["reason"].as_str().unwrap().into(),
    )
}

/// The leader and collector, played by the test.
struct Leader {
    helper: Server,
    task: TaskParams,
    task_id: dap::TaskId,
    key: DapKeyPair,
    collector: DapKeyPair,
    helper_hpke: dap::HpkeConfig,
    verify_key: [u8; hearth_core::measure::VERIFY_KEY_LEN],
}

/// One report as the leader holds it: its helper part (ready for a job) and its own state.
struct Prepared {
    id: dap::ReportId,
    init: dap::PrepareInit,
    state: LeaderState,
    measurement: Vec<u128>,
}

impl Leader {
    fn new(helper: Server) -> Leader {
        Leader::with_period(helper, PERIOD_SECS)
    }

    /// A leader whose task has periods of `period_secs`.
    fn with_period(helper: Server, period_secs: u64) -> Leader {
        let collector = DapKeyPair::generate(9).unwrap();
        let campaigns = ["c-alpha", "c-beta", "c-gamma"].map(String::from);
        let slots = ["in-article", "sidebar"].map(String::from);
        let task = TaskParams::new(campaigns, slots, 2, period_secs, K, 16, 2.0, SIGMA, 1e-9, &collector.config()).unwrap();
        let (status, headers, body) = send("GET", &helper.url("/dap/hpke_config"), &[], &[]);
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), Some("application/dap-hpke-config-list"));
        let list = dap::HpkeConfigList::get_decoded(&body).unwrap();
        let task_id = task.task_id();
        let leader = Leader {
            helper,
            verify_key: prepare::verify_key(TOKEN.as_bytes(), &task_id),
            task_id,
            task,
            key: DapKeyPair::generate(1).unwrap(),
            collector,
            helper_hpke: list.hpke_configs()[0].clone(),
        };
        assert_eq!(leader.provision(&leader.task), 201);
        leader
    }

    fn provision(&self, task: &TaskParams) -> u16 {
        let body = serde_json::to_vec(task).unwrap();
        let url = self.helper.url(&format!("/dap/tasks/{}?job_size={JOB_SIZE}", task.task_id()));
        send("PUT", &url, &[("Authorization", &format!("Bearer {TOKEN}")), ("Content-Type", "application/json")], &body).0
    }

    /// A measurement with a few nonzero cells (at most M), from `seed`.
    fn measurement(&self, seed: u64) -> Vec<u128> {
        let mut m = vec![0u128; self.task.length()];
        for j in 0..4 {
            let cell = (seed as usize * 7 + j * 5) % m.len();
            m[cell] = u128::from((seed + j as u64) % 4);
        }
        m
    }

    /// Opens the leader's share of an encoded report and starts its preparation.
    fn prepare_encoded(&self, encoded: &[u8], measurement: Vec<u128>) -> Prepared {
        let report = dap::Report::get_decoded(encoded).unwrap();
        let (metadata, public) = (report.metadata(), report.public_share());
        let input = prepare::open_input_share(
            &self.task_id,
            &self.key,
            dap::Role::Leader,
            metadata,
            public,
            report.leader_encrypted_input_share(),
        )
        .unwrap();
        let (state, message) = prepare::leader_init(&self.task, &self.verify_key, metadata, public, &input).unwrap();
        let share = dap::ReportShare::new(metadata.clone(), public.to_vec(), report.helper_encrypted_input_share().clone());
        Prepared { id: *metadata.id(), init: dap::PrepareInit::new(share, message), state, measurement }
    }

    /// An honest report of period `period` from `seed`, prepared.
    fn honest(&self, seed: u64, period: u64) -> Prepared {
        let m = self.measurement(seed);
        let encoded = build_report(&self.task, &m, period, &self.key.config(), &self.helper_hpke).unwrap();
        self.prepare_encoded(&encoded, m)
    }

    fn job_url(&self, task_id: &dap::TaskId, job: u8) -> String {
        let job = dap::AggregationJobId::from([job; 16]);
        self.helper.url(&format!("/dap/tasks/{task_id}/aggregation_jobs/{job}"))
    }

    /// PUTs a job of these reports' helper parts: (status, headers, body).
    fn put_job(&self, task_id: &dap::TaskId, job: u8, inits: Vec<dap::PrepareInit>) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let req = dap::AggregationJobInitializeReq::<TimeInterval>::new(
            Vec::new(),
            dap::PartialBatchSelector::new_time_interval(),
            inits,
        );
        let headers = [("Authorization", format!("Bearer {TOKEN}")), ("Content-Type", JOB_INIT.into())];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        send("PUT", &self.job_url(task_id, job), &headers, &req.get_encoded().unwrap())
    }

    /// Runs a job that must succeed: each report's result, in order.
    fn job(&self, job: u8, inits: Vec<dap::PrepareInit>) -> Vec<dap::PrepareStepResult> {
        let sent: Vec<dap::ReportId> = inits.iter().map(|i| *i.report_share().metadata().id()).collect();
        let (status, headers, body) = self.put_job(&self.task_id, job, inits);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        assert_eq!(header(&headers, "content-type"), Some("application/dap-aggregation-job-resp"));
        let resp = dap::AggregationJobResp::get_decoded(&body).unwrap();
        let ids: Vec<_> = resp.prepare_resps().iter().map(|r| *r.report_id()).collect();
        assert_eq!(ids, sent);
        resp.prepare_resps().iter().map(|r| r.result().clone()).collect()
    }

    /// The leader finishes continued reports: the sum of its output shares.
    fn finish(&self, reports: Vec<Prepared>, results: &[dap::PrepareStepResult]) -> AggregateShare {
        let mut sum = AggregateShare::zero(&self.task);
        for (r, result) in reports.into_iter().zip(results) {
            let dap::PrepareStepResult::Continue { message } = result else {
                panic!("report {} was not continued: {result:?}", r.id)
            };
            let output: OutputShare = prepare::leader_finish(&self.task, r.state, message).unwrap();
            sum.add(&output).unwrap();
        }
        sum
    }

    fn share_request(&self, period: u64, count: u64, ids: &[dap::ReportId]) -> Vec<u8> {
        let interval =
            dap::Interval::new(dap::Time::from_seconds_since_epoch(period), dap::Duration::from_seconds(self.task.period_secs))
                .unwrap();
        dap::AggregateShareReq::<TimeInterval>::new(
            dap::BatchSelector::new_time_interval(interval),
            Vec::new(),
            count,
            prepare::checksum(ids.iter().copied()),
        )
        .get_encoded()
        .unwrap()
    }

    fn post_share(&self, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let url = self.helper.url(&format!("/dap/tasks/{}/aggregate_shares", self.task_id));
        send("POST", &url, &[("Authorization", &format!("Bearer {TOKEN}")), ("Content-Type", SHARE_REQ)], body)
    }

    /// The collector opens the helper's sealed aggregate share of `period`.
    fn open_share(&self, period: u64, body: &[u8]) -> AggregateShare {
        let sealed = dap::AggregateShare::get_decoded(body).unwrap();
        let interval =
            dap::Interval::new(dap::Time::from_seconds_since_epoch(period), dap::Duration::from_seconds(self.task.period_secs))
                .unwrap();
        let aad = dap::AggregateShareAad::new(
            self.task_id,
            Vec::new(),
            dap::BatchSelector::<TimeInterval>::new_time_interval(interval),
        )
        .get_encoded()
        .unwrap();
        let plain = self
            .collector
            .open(sealed.encrypted_aggregate_share(), &hpke_dap::aggregate_share_info(dap::Role::Helper), &aad)
            .unwrap();
        AggregateShare::decode(&self.task, &plain).unwrap()
    }

    /// The helper's noise on `period`'s share, recomputed from the test seed.
    fn helper_noise(&self, period: u64) -> Vec<i64> {
        let zero = AggregateShare::zero(&self.task);
        let mut noise = zero.clone();
        let source = SeededRandom::new(release_seed(SEED, Drawer::Helper, period));
        noise.add_noise(SIGMA, &mut Sampler::from_source(source)).unwrap();
        prepare::unshard(&zero, &noise).unwrap()
    }
}

fn sum(reports: &[Prepared]) -> Vec<i64> {
    let mut total = vec![0i64; reports[0].measurement.len()];
    for r in reports {
        total.iter_mut().zip(&r.measurement).for_each(|(t, &v)| *t += v as i64);
    }
    total
}

fn inits<'a>(reports: impl IntoIterator<Item = &'a Prepared>) -> Vec<dap::PrepareInit> {
    reports.into_iter().map(|r| r.init.clone()).collect()
}

fn assert_rejected(results: &[dap::PrepareStepResult], expected: &[Option<dap::PrepareError>]) {
    let got: Vec<Option<dap::PrepareError>> = results
        .iter()
        .map(|r| match r {
            dap::PrepareStepResult::Reject(e) => Some(*e),
            _ => None,
        })
        .collect();
    assert_eq!(got, expected);
}

/// Shards `m` with prio's client, lets `tamper` alter the encoded (leader, helper) input shares,
/// and seals them as a device would: a report no honest device sends.
fn hostile(leader: &Leader, id: [u8; 16], m: Vec<u128>, tamper: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>)) -> Prepared {
    let (public, shares) = leader.task.vdaf().unwrap().shard(&m, &id).unwrap();
    let (mut leader_share, mut helper_share) = (shares[0].get_encoded().unwrap(), shares[1].get_encoded().unwrap());
    tamper(&mut leader_share, &mut helper_share);
    let public = public.get_encoded().unwrap();
    let sealed = seal_report(
        &leader.task,
        &id,
        period(),
        &public,
        [&leader_share, &helper_share],
        &leader.key.config(),
        &leader.helper_hpke,
    )
    .unwrap();
    leader.prepare_encoded(&sealed, m)
}

#[test]
fn a_job_continues_every_honest_report_and_the_period_is_released_once_with_the_helpers_noise() {
    let leader = Leader::new(start_helper("measure-helper-honest"));
    let (status, headers, _) =
        send("GET", &leader.helper.url("/dap/hpke_config"), &[("Origin", "https://publisher.example")], &[]);
    assert_eq!((status, header(&headers, "access-control-allow-origin")), (200, Some("*")));
    // Provisioning again is harmless: the id commits to the same parameters.
    assert_eq!(leader.provision(&leader.task), 200);

    let reports: Vec<Prepared> = (0..K + 2).map(|i| leader.honest(i, period())).collect();
    let (first, second) = reports.split_at(7);
    let results_1 = leader.job(1, inits(first));
    let results_2 = leader.job(2, inits(second));
    assert_rejected(&results_1, &[None; 7]);
    assert_rejected(&results_2, &vec![None; second.len()]);
    // The same job again gets the same bytes; another body under its id is a conflict.
    assert_eq!(leader.job(1, inits(first)), results_1);
    let (status, headers, body) = leader.put_job(&leader.task_id, 1, inits(&first[..3]));
    assert_eq!(problem(status, &headers, &body), (409, "about:blank".into(), "request_conflict".into()));

    let truth = sum(&reports);
    let ids: Vec<dap::ReportId> = reports.iter().map(|r| r.id).collect();
    let results: Vec<_> = results_1.into_iter().chain(results_2).collect();
    let leader_sum = leader.finish(reports, &results);

    let request = leader.share_request(period(), ids.len() as u64, &ids);
    let (status, headers, released) = leader.post_share(&request);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&released));
    assert_eq!(header(&headers, "content-type"), Some("application/dap-aggregate-share"));
    let helper_share = leader.open_share(period(), &released);
    let counts = prepare::unshard(&leader_sum, &helper_share).unwrap();
    let expected: Vec<i64> = truth.iter().zip(leader.helper_noise(period())).map(|(t, n)| t + n).collect();
    assert_eq!(counts, expected, "the released share is the true sum plus exactly the helper's seeded noise");
    assert_ne!(counts, truth, "the helper added noise");

    // The same request again: the same bytes, never a fresh noise draw (a fresh seal would differ).
    assert_eq!(leader.post_share(&request).2, released);
    // Another request for the released period is refused.
    let (status, headers, body) = leader.post_share(&leader.share_request(period(), K, &ids[..K as usize]));
    assert_eq!(problem(status, &headers, &body), (409, "about:blank".into(), "request_conflict".into()));
}

/// Alters an honest report's public share, encapsulated key and payload.
type Alter = dyn Fn(&mut Vec<u8>, &mut Vec<u8>, &mut Vec<u8>);

#[test]
fn hostile_reports_are_rejected_one_by_one_with_their_dap_error_and_never_counted() {
    use dap::PrepareError::*;
    use hearth_core::measure::prio::topology::ping_pong::PingPongMessage;
    let leader = Leader::new(start_helper("measure-helper-hostile"));
    let bits = leader.task.bits as usize;

    // A cell at 2^bits. prio's client refuses to shard it, so an honest shard of a cell at 2
    // gets 1 added to the leader's share of that cell's high bit (a cell's bits are LSB first,
    // each a 16-byte field element at the start of the leader's share): the two shares now
    // sum to a "bit" of 2, i.e. a cell of 2 + 2 = 4. No proof can hold for it.
    let mut m = vec![0u128; leader.task.length()];
    m[3] = 2;
    let above = hostile(&leader, [0xA1; 16], m, |leader_share, _| {
        let at = (3 * bits + 1) * 16;
        let bit = Field128::get_decoded(&leader_share[at..at + 16]).unwrap() + Field128::one();
        leader_share[at..at + 16].copy_from_slice(&bit.get_encoded().unwrap());
    });
    // A forged proof: a byte of the helper's share (its seeds) flipped.
    let forged_share = hostile(&leader, [0xB2; 16], leader.measurement(1), |_, helper_share| helper_share[0] ^= 1);
    // A helper share that opens but is no Prio3 input share of this task.
    let undecodable =
        hostile(&leader, [0xC3; 16], leader.measurement(4), |_, helper_share| *helper_share = b"not a share".to_vec());
    // A forged leader prep share: a byte of the leader's message flipped.
    let forged_prep = {
        let r = leader.honest(2, period());
        let PingPongMessage::Initialize { prep_share } = r.init.message() else { panic!("the leader starts with Initialize") };
        let mut prep_share = prep_share.clone();
        prep_share[0] ^= 1;
        dap::PrepareInit::new(r.init.report_share().clone(), PingPongMessage::Initialize { prep_share })
    };
    // An honest report's helper part with its public share or ciphertext altered by `alter`.
    let altered = |seed: u64, alter: &Alter| {
        let r = leader.honest(seed, period());
        let share = r.init.report_share();
        let ct = share.encrypted_input_share();
        let (mut public, mut key, mut payload) =
            (share.public_share().to_vec(), ct.encapsulated_key().to_vec(), ct.payload().to_vec());
        alter(&mut public, &mut key, &mut payload);
        let ct = dap::HpkeCiphertext::new(*ct.config_id(), key, payload);
        dap::PrepareInit::new(dap::ReportShare::new(share.metadata().clone(), public, ct), r.init.message().clone())
    };
    // A helper ciphertext that does not open.
    let unopenable = altered(3, &|_, _, payload| payload[0] ^= 1);
    // Parts of another size than an honest report's: refused before anything is opened (a
    // longer payload would otherwise fail to open, as above).
    let longer_payload = altered(6, &|_, _, payload| payload.push(0));
    let longer_key = altered(7, &|_, key, _| key.push(0));
    let longer_public = altered(8, &|public, _, _| public.push(0));
    // A report of another task (provisioned here too) in this task's job: its shares are bound
    // to that task.
    let other_task = {
        let config = leader.collector.config();
        let other =
            TaskParams::new(["c-other".to_string()], Vec::<String>::new(), 2, PERIOD_SECS, K, 16, 2.0, SIGMA, 1e-9, &config)
                .unwrap();
        assert_eq!(leader.provision(&other), 201);
        let encoded =
            build_report(&other, &vec![1u128; other.length()], period(), &leader.key.config(), &leader.helper_hpke).unwrap();
        let report = dap::Report::get_decoded(&encoded).unwrap();
        let share = dap::ReportShare::new(
            report.metadata().clone(),
            report.public_share().to_vec(),
            report.helper_encrypted_input_share().clone(),
        );
        // Beside the leader's message of one of this task's reports: only the helper's part is foreign.
        dap::PrepareInit::new(share, leader.honest(5, period()).init.message().clone())
    };

    let honest: Vec<Prepared> = (10..10 + K - 1).map(|i| leader.honest(i, period())).collect();
    let refused = [
        above.init.clone(),
        forged_share.init.clone(),
        undecodable.init.clone(),
        forged_prep,
        unopenable,
        other_task,
        longer_payload,
        longer_key,
        longer_public,
    ];
    let refused_ids: Vec<dap::ReportId> = refused.iter().map(|i| *i.report_share().metadata().id()).collect();
    let results = leader.job(1, inits(&honest).into_iter().chain(refused).collect());
    let mut expected = vec![None; honest.len()];
    expected.extend([
        Some(VdafPrepError),
        Some(VdafPrepError),
        Some(InvalidMessage),
        Some(VdafPrepError),
        Some(HpkeDecryptError),
        Some(HpkeDecryptError),
        Some(InvalidMessage),
        Some(InvalidMessage),
        Some(InvalidMessage),
    ]);
    assert_rejected(&results, &expected);

    // A replay: an id counted in job 1 is refused in a later job; a fresh report beside it counts.
    let fresh = leader.honest(30, period());
    assert_rejected(&leader.job(2, vec![honest[0].init.clone(), fresh.init.clone()]), &[Some(ReportReplayed), None]);
    // One id twice in one job is a malformed job.
    let (status, headers, body) = leader.put_job(&leader.task_id, 3, vec![fresh.init.clone(), fresh.init.clone()]);
    assert_eq!(problem(status, &headers, &body), (400, "invalidMessage".into(), "invalid_message".into()));

    // Only the honest reports were counted: a batch that includes the refused ones does not
    // match; the honest ones' count and checksum do.
    let ids: Vec<dap::ReportId> = honest.iter().map(|r| r.id).chain([fresh.id]).collect();
    let with_refused: Vec<dap::ReportId> = ids.iter().copied().chain(refused_ids).collect();
    let (status, headers, body) = leader.post_share(&leader.share_request(period(), with_refused.len() as u64, &with_refused));
    assert_eq!(problem(status, &headers, &body), (400, "batchMismatch".into(), "batch_mismatch".into()));
    let (status, _, body) = leader.post_share(&leader.share_request(period(), ids.len() as u64, &ids));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // A fresh report of the released period: its batch was collected. The next period's counts.
    let late = leader.honest(40, period());
    let next = leader.honest(41, period() + PERIOD_SECS);
    assert_rejected(&leader.job(4, inits([&late, &next])), &[Some(BatchCollected), None]);
}

#[test]
fn a_batch_below_k_an_unknown_task_a_caller_without_the_token_and_a_lax_task_are_refused() {
    let leader = Leader::new(start_helper("measure-helper-refusals"));
    let reports: Vec<Prepared> = (0..K - 1).map(|i| leader.honest(i, period())).collect();
    assert_rejected(&leader.job(1, inits(&reports)), &vec![None; reports.len()]);
    let ids: Vec<dap::ReportId> = reports.iter().map(|r| r.id).collect();
    let request = leader.share_request(period(), ids.len() as u64, &ids);
    let (status, headers, body) = leader.post_share(&request);
    assert_eq!(problem(status, &headers, &body), (400, "invalidBatchSize".into(), "too_few_reports".into()));
    // A batch interval of two periods (the duration follows the query type and the start).
    let mut wide = request.clone();
    wide[9..17].copy_from_slice(&(2 * PERIOD_SECS).to_be_bytes());
    let (status, headers, body) = leader.post_share(&wide);
    assert_eq!(problem(status, &headers, &body), (400, "batchInvalid".into(), "batch_not_one_period".into()));

    // A job for a task never provisioned here.
    let unknown = dap::TaskId::from([7; 32]);
    let (status, headers, body) = leader.put_job(&unknown, 2, inits([&leader.honest(20, period())]));
    assert_eq!(problem(status, &headers, &body), (400, "unrecognizedTask".into(), "unknown_task".into()));

    // Without the leader's bearer token nothing is read; garbage from the leader is typed.
    let url = leader.job_url(&leader.task_id, 3);
    let bearer = format!("Bearer {TOKEN}");
    for (authorization, expected) in [
        (None, (401, "unauthorizedRequest".to_string(), "unauthorized".to_string())),
        (Some("Bearer wrong-token-0123456789"), (401, "unauthorizedRequest".into(), "unauthorized".into())),
        (Some(bearer.as_str()), (400, "invalidMessage".into(), "invalid_message".into())),
    ] {
        let mut headers = vec![("Content-Type", JOB_INIT)];
        headers.extend(authorization.map(|a| ("Authorization", a)));
        let (status, hs, body) = send("PUT", &url, &headers, b"not a job");
        assert_eq!(problem(status, &hs, &body), expected);
    }
    let (status, hs, body) = send("PUT", &url, &[("Authorization", &bearer), ("Content-Type", "application/json")], b"{}");
    assert_eq!(problem(status, &hs, &body), (415, "about:blank".into(), "unsupported_media_type".into()));

    // Tasks the helper does not take: another noise, a K below its own, a bound above its own,
    // a period shorter than its own, an id that is not the parameters', a leader sending larger
    // jobs than the helper takes.
    let config = leader.collector.config();
    let task_of = |bits: u32, k: u64, noise: f64, period_secs: u64| {
        TaskParams::new(["c".to_string()], Vec::<String>::new(), bits, period_secs, k, 16, 2.0, noise, 1e-9, &config).unwrap()
    };
    let task = |bits: u32, k: u64, noise: f64| task_of(bits, k, noise, PERIOD_SECS);
    let provision_with = |t: &TaskParams, id: &dap::TaskId, job_size: usize| {
        let url = leader.helper.url(&format!("/dap/tasks/{id}?job_size={job_size}"));
        let (status, hs, body) = send(
            "PUT",
            &url,
            &[("Authorization", &bearer), ("Content-Type", "application/json")],
            &serde_json::to_vec(t).unwrap(),
        );
        problem(status, &hs, &body)
    };
    let provision = |t: &TaskParams, id: &dap::TaskId| provision_with(t, id, JOB_SIZE);
    let invalid = |reason: &str| (400, "invalidTask".to_string(), reason.to_string());
    for (t, reason) in [
        (task(2, K, SIGMA + 1.0), "noise_mismatch"),
        (task(2, K - 1, SIGMA), "min_reports_too_low"),
        (task(3, K, SIGMA), "bound_too_high"),
        (task_of(2, K, SIGMA, PERIOD_SECS / 2), "period_too_short"),
    ] {
        assert_eq!(provision(&t, &t.task_id()), invalid(reason));
    }
    assert_eq!(provision(&task(2, K, SIGMA), &unknown), invalid("task_id_mismatch"));
    let fine = task(2, K, SIGMA);
    assert_eq!(provision_with(&fine, &fine.task_id(), JOB_SIZE + 1), invalid("job_size_too_large"));
    assert_eq!(leader.provision(&fine), 201, "the same task with the helper's job size");

    // A job's body is bounded by the task's honest report size (a few kB each here), not by the
    // largest upload a leader takes: 2 MiB for a job of at most 64 reports is refused unread.
    let honest_job = {
        let reports: Vec<Prepared> = (50..50 + JOB_SIZE as u64).map(|i| leader.honest(i, period())).collect();
        dap::AggregationJobInitializeReq::<TimeInterval>::new(
            Vec::new(),
            dap::PartialBatchSelector::new_time_interval(),
            inits(&reports),
        )
        .get_encoded()
        .unwrap()
    };
    let headers = [("Authorization", bearer.as_str()), ("Content-Type", JOB_INIT)];
    // Only the head is sent: the helper answers from the declared length and closes, so a client
    // still writing 2 MiB would see a broken pipe instead of the answer.
    let (status, hs, body) = head_only("PUT", &leader.job_url(&leader.task_id, 4), &headers, 2 << 20);
    assert_eq!(problem(status, &hs, &body), (413, "about:blank".into(), "payload_too_large".into()));
    let (status, _, body) = send("PUT", &leader.job_url(&leader.task_id, 5), &headers, &honest_job);
    assert_eq!(status, 201, "a full job of honest reports fits: {}", String::from_utf8_lossy(&body));
}

#[test]
fn an_expired_periods_unreleased_aggregate_is_deleted_and_its_reports_are_dropped() {
    // Ten-second periods and no grace: a period expires 4 periods (40 s) after its start.
    let dir = scratch("measure-helper-expiry");
    let helper = Server::start_with_env(&dir, &helper_config(&dir, 10, 0), &[("HEARTH_TEST_NOISE_SEED", &SEED.to_string())]);
    let leader = Leader::with_period(helper, 10);
    let current = now() / 10 * 10;
    // Two periods back: counted now, expired within 20 s. A period long past: expired already.
    let (kept, gone) = (current - 20, current - 100);
    let reports: Vec<Prepared> = (0..K).map(|i| leader.honest(i, kept)).collect();
    assert_rejected(&leader.job(1, inits(&reports)), &vec![None; reports.len()]);
    let late = leader.honest(90, gone);
    assert_rejected(&leader.job(2, inits([&late])), &[Some(dap::PrepareError::ReportDropped)]);

    let db = rusqlite::Connection::open(leader.helper.dir.join("measure.db")).unwrap();
    let rows = |sql: &str, period: u64| -> u64 { db.query_row(sql, [period], |r| r.get(0)).unwrap() };
    let aggregates = "SELECT COUNT(*) FROM aggregates WHERE period_start = ?1";
    let jobs = "SELECT COUNT(*) FROM jobs WHERE period_start = ?1";
    let counted = "SELECT COUNT(*) FROM reports WHERE period_start = ?1";
    assert_eq!((rows(aggregates, kept), rows(jobs, kept), rows(aggregates, gone)), (1, 1, 0));

    // Once the kept period has expired, the next request sweeps its aggregate and job away;
    // its counted ids stay, to refuse replays.
    while now() < kept + 40 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_rejected(&leader.job(3, inits([&leader.honest(91, now() / 10 * 10)])), &[None]);
    assert_eq!((rows(aggregates, kept), rows(jobs, kept), rows(counted, kept)), (0, 0, K));
    // Its aggregate share is never released, and the same job again counts nothing.
    let ids: Vec<dap::ReportId> = reports.iter().map(|r| r.id).collect();
    let (status, headers, body) = leader.post_share(&leader.share_request(kept, K, &ids));
    assert_eq!(problem(status, &headers, &body), (400, "batchInvalid".into(), "period_expired".into()));
    assert_rejected(&leader.job(1, inits(&reports)), &vec![Some(dap::PrepareError::ReportDropped); reports.len()]);
    assert_eq!(rows(aggregates, kept), 0);
}
