//! The collection thread: the leader's half of DAP's aggregation flow, and the collector's.
//!
//! A period is collected once its send window (the next period) and `grace_secs` have passed,
//! or at once when `POST /v1/measure/collect` asks. Collection first closes the period to
//! uploads. With fewer than K reports the period is withheld: recorded without counts, its
//! reports deleted unopened. Otherwise the helper is given the task (`PUT /dap/tasks/{id}`) and
//! the reports in aggregation jobs of at most `job_size`; the leader finishes each report the
//! helper continued (the proof held) and drops every other, uncounted. If at least K remain, it
//! asks the helper for its aggregate share of exactly those (count and checksum), opens it with
//! the collector's key, adds its own noise to its own share, and releases the sum; the release
//! and the deletion of the reports commit together, and a period is never released twice.
//!
//! Every step can be repeated after a failure or a restart: the jobs and their reports are
//! written before the first is sent, and the helper answers a job or a share request it has
//! seen with the bytes it sent the first time. A failed collection is retried with backoff:
//! without end while the helper cannot be reached or answers 5xx (it may come back), but after
//! [`MAX_REFUSALS`] refusals (4xx: it will not take this period, retried or not) the period is
//! recorded as failed, with the last refusal, and its reports deleted.

use super::leader::{MeasureLeader, now_secs};
use super::release::Release;
use hearth_core::measure::dap::query_type::TimeInterval;
use hearth_core::measure::hpke_dap::aggregate_share_info;
use hearth_core::measure::prepare::{self, unshard, verify_key};
use hearth_core::measure::prio::codec::{Decode, Encode};
use hearth_core::measure::{AggregateShare, TaskParams, dap};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often the thread wakes: to run the store's watchdog and to look for due periods.
pub const TICK: Duration = Duration::from_secs(1);
/// The first wait after a failed collection; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Refusals by the helper (4xx) of a period's collection, counted in the store across restarts,
/// after which the period is failed for good: a refusal repeats unless someone changes a
/// server's settings, and a few tries leave time for that without retrying for ever.
pub const MAX_REFUSALS: u32 = 5;
/// Forced collections waiting for the thread at most.
const QUEUE: usize = 16;
/// Bytes of the helper's answers besides what scales with the task: problem documents, headers.
const ANSWER_OVERHEAD: u64 = 64 << 10;
/// Bytes per report of an aggregation job's answer at most: its id, result and a Prio3 prepare
/// message (a seed) with their length prefixes.
const JOB_ANSWER_PER_REPORT: u64 = 256;

/// A request to collect a period of the current task now, and where its outcome goes.
pub struct Forced {
    pub period: u64,
    pub reply: oneshot::Sender<Result<Release, String>>,
}

/// Why a collection did not finish; it is retried later either way.
#[derive(Debug)]
enum Failure {
    /// No answer, a 5xx, a storage error or shutdown.
    Retry(String),
    /// The helper refused (4xx, with its problem document).
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Failure::Retry(s) => write!(f, "{s}"),
            Failure::Refused(s) => write!(f, "the helper refused: {s}"),
        }
    }
}

fn retry(e: impl std::fmt::Display) -> Failure {
    Failure::Retry(e.to_string())
}

/// The channel `POST /v1/measure/collect` sends to, and its receiving end for [`spawn`].
pub fn channel() -> (SyncSender<Forced>, Receiver<Forced>) {
    std::sync::mpsc::sync_channel(QUEUE)
}

/// Starts the collection thread; it exits when `stop` is set (checked every tick and between
/// aggregation jobs) or the channel's senders are gone.
pub fn spawn(
    leader: Arc<MeasureLeader>,
    requests: Receiver<Forced>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let client = HelperClient::new(&leader);
    let collector = Collector { leader, client, provisioned: HashSet::new(), backoff: HashMap::new(), stop };
    std::thread::Builder::new().name("measure-collector".into()).spawn(move || collector.run(requests))
}

struct Collector {
    leader: Arc<MeasureLeader>,
    client: HelperClient,
    /// Tasks the helper acknowledged since this process started.
    provisioned: HashSet<dap::TaskId>,
    /// Failed periods: when to try again, and the wait after that.
    backoff: HashMap<(dap::TaskId, u64), (Instant, Duration)>,
    stop: Arc<AtomicBool>,
}

impl Collector {
    fn run(mut self, requests: Receiver<Forced>) {
        loop {
            match requests.recv_timeout(TICK) {
                Ok(forced) => {
                    let task_id = self.leader.task_id;
                    let outcome = self.attempt(task_id, forced.period).map_err(|e| e.to_string());
                    // The caller may have gone; the outcome is in the store and the log anyway.
                    let _ = forced.reply.send(outcome);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.stop.load(Relaxed) {
                return;
            }
            self.leader.watch_store();
            self.collect_due();
        }
    }

    /// Collects every period that is due and not waiting out a backoff.
    fn collect_due(&mut self) {
        let now = now_secs();
        for (task_id, period) in self.leader.open_periods() {
            if self.stop.load(Relaxed) {
                return;
            }
            if self.backoff.get(&(task_id, period)).is_some_and(|(at, _)| Instant::now() < *at) {
                continue;
            }
            let due = match self.task(&task_id) {
                Ok(task) => period + 2 * task.period_secs + self.leader.settings.grace_secs <= now,
                Err(e) => {
                    tracing::error!(task = %task_id, period, error = %e, "a period's task cannot be read");
                    false
                }
            };
            // A period whose collection began (before a restart, or forced) has no reports
            // left to wait for.
            let begun = || self.leader.store().release_begun(&task_id, period).unwrap_or(false);
            if due || begun() {
                let _ = self.attempt(task_id, period);
            }
        }
    }

    /// One collection of the period, its failure logged and its retry scheduled, or the period
    /// failed after the helper's last allowed refusal.
    fn attempt(&mut self, task_id: dap::TaskId, period: u64) -> Result<Release, Failure> {
        let outcome = match self.collect(task_id, period) {
            Err(Failure::Refused(why)) => self.refused(task_id, period, why),
            other => other,
        };
        match &outcome {
            Ok(_) => {
                self.backoff.remove(&(task_id, period));
            }
            Err(e) => {
                self.leader.metrics.measure_failed();
                // The helper may have lost or never taken the task: give it again next time.
                self.provisioned.remove(&task_id);
                let wait = self.backoff.get(&(task_id, period)).map_or(FIRST_BACKOFF, |(_, w)| (*w * 2).min(MAX_BACKOFF));
                self.backoff.insert((task_id, period), (Instant::now() + wait, wait));
                match e {
                    Failure::Refused(_) => {
                        tracing::error!(task = %task_id, period, error = %e, retry_in_s = wait.as_secs(), "collection failed")
                    }
                    Failure::Retry(_) => {
                        tracing::warn!(task = %task_id, period, error = %e, retry_in_s = wait.as_secs(), "collection failed")
                    }
                }
            }
        }
        outcome
    }

    /// Counts the helper's refusal of the period's collection; at the [`MAX_REFUSALS`]th the
    /// period is recorded as failed, with `why`.
    fn refused(&mut self, task_id: dap::TaskId, period: u64, why: String) -> Result<Release, Failure> {
        let refusals = self.leader.store().refused(&task_id, period).map_err(retry)?;
        if refusals < MAX_REFUSALS {
            return Err(Failure::Refused(why));
        }
        let reports = self.leader.store().count(&task_id, period).map_err(retry)?;
        let failed = format!("the helper refused its collection {refusals} times; the last: {why}");
        tracing::error!(task = %task_id, period, refusals, error = %why, "a period's collection failed for good; its reports are deleted");
        self.leader.metrics.measure_given_up();
        self.release(&task_id, Release { period_start: period, reports, counts: None, failed: Some(failed) })
    }

    /// The task of `task_id`: the current one, or one served before (its periods are collected
    /// under their own parameters).
    fn task(&self, task_id: &dap::TaskId) -> Result<TaskParams, Failure> {
        if *task_id == self.leader.task_id {
            return Ok(self.leader.task.clone());
        }
        self.leader.store().task(task_id).map_err(retry)?.ok_or_else(|| retry(format!("task {task_id} is not in the store")))
    }

    fn collect(&mut self, task_id: dap::TaskId, period: u64) -> Result<Release, Failure> {
        let task = self.task(&task_id)?;
        let leader = self.leader.clone();
        if let Some(done) = leader.store().release(&task_id, period).map_err(retry)? {
            leader.closed(&task_id, period);
            return Ok(done);
        }
        let received = {
            let store = leader.store();
            store.begin(&task_id, period).map_err(retry)?;
            store.count(&task_id, period).map_err(retry)?
        };
        tracing::info!(task = %task_id, period, reports = received, "collecting a period");
        if received < task.min_reports {
            return self.release(&task_id, Release { period_start: period, reports: received, counts: None, failed: None });
        }
        self.provision(&task_id, &task)?;
        let (mut share, ids) = self.aggregate(&task_id, &task, period)?;
        let counted = ids.len() as u64;
        if counted < task.min_reports {
            return self.release(&task_id, Release { period_start: period, reports: counted, counts: None, failed: None });
        }
        let interval =
            dap::Interval::new(dap::Time::from_seconds_since_epoch(period), dap::Duration::from_seconds(task.period_secs))
                .map_err(retry)?;
        let selector = dap::BatchSelector::<TimeInterval>::new_time_interval(interval);
        let request = dap::AggregateShareReq::new(selector.clone(), Vec::new(), counted, prepare::checksum(ids))
            .get_encoded()
            .map_err(retry)?;
        let answer = self.client.aggregate_share(&task_id, &request, &task)?;
        let sealed =
            dap::AggregateShare::get_decoded(&answer).map_err(|e| Failure::Refused(format!("not an aggregate share: {e}")))?;
        let aad = dap::AggregateShareAad::new(task_id, Vec::new(), selector).get_encoded().map_err(retry)?;
        let opened = leader
            .collector
            .open(sealed.encrypted_aggregate_share(), &aggregate_share_info(dap::Role::Helper), &aad)
            .map_err(|e| Failure::Refused(format!("the helper's aggregate share does not open: {e}")))?;
        let helper_share = AggregateShare::decode(&task, &opened).map_err(|e| Failure::Refused(e.to_string()))?;
        share.add_noise(task.leader_noise, &mut crate::noise::sampler(crate::noise::Drawer::Leader, period)).map_err(retry)?;
        let counts = unshard(&share, &helper_share).map_err(|e| Failure::Refused(e.to_string()))?;
        self.release(&task_id, Release { period_start: period, reports: counted, counts: Some(counts), failed: None })
    }

    /// Gives the helper the task once per process (it keeps the first copy of a task), with the
    /// leader's job size: a helper that would refuse jobs this large refuses the task instead,
    /// before any job is made.
    fn provision(&mut self, task_id: &dap::TaskId, task: &TaskParams) -> Result<(), Failure> {
        if !self.provisioned.contains(task_id) {
            self.client.put_task(task_id, task, self.leader.settings.job_size)?;
            self.provisioned.insert(*task_id);
        }
        Ok(())
    }

    /// Runs the period's aggregation jobs: the leader's aggregate share (without noise) and the
    /// ids of the reports it holds, those the helper continued and the leader finished.
    fn aggregate(
        &mut self,
        task_id: &dap::TaskId,
        task: &TaskParams,
        period: u64,
    ) -> Result<(AggregateShare, Vec<dap::ReportId>), Failure> {
        let leader = self.leader.clone();
        let verify_key = verify_key(leader.token.as_bytes(), task_id);
        let jobs = leader.store().jobs(task_id, period, leader.settings.job_size).map_err(retry)?;
        let mut share = AggregateShare::zero(task);
        let mut ids = Vec::new();
        for job in jobs {
            if self.stop.load(Relaxed) {
                return Err(retry("the server is shutting down"));
            }
            let reports = leader.store().job_reports(&job).map_err(retry)?;
            let mut states = Vec::with_capacity(reports.len());
            let mut inits = Vec::with_capacity(reports.len());
            for r in &reports {
                let metadata = r.metadata();
                match prepare::leader_init(task, &verify_key, &metadata, &r.public_share, &r.leader_share) {
                    Ok((state, message)) => {
                        inits.push(dap::PrepareInit::new(r.report_share().map_err(retry)?, message));
                        states.push((r.id, state));
                    }
                    // Decoded at upload, so only a store damaged since gets here: never sent.
                    Err(e) => {
                        tracing::warn!(report = %r.id, error = %e, "the leader could not start preparing a report");
                        leader.metrics.measure_rejected("leader_init_failed");
                    }
                }
            }
            if inits.is_empty() {
                continue;
            }
            let partial = dap::PartialBatchSelector::new_time_interval();
            let request =
                dap::AggregationJobInitializeReq::<TimeInterval>::new(Vec::new(), partial, inits).get_encoded().map_err(retry)?;
            let answer = self.client.job(task_id, &job, &request, states.len())?;
            let answer = dap::AggregationJobResp::get_decoded(&answer)
                .map_err(|e| Failure::Refused(format!("job {job}: not an aggregation job response: {e}")))?;
            if answer.prepare_resps().len() != states.len() {
                return Err(Failure::Refused(format!(
                    "job {job}: {} answers for {} reports",
                    answer.prepare_resps().len(),
                    states.len()
                )));
            }
            for ((id, state), resp) in states.into_iter().zip(answer.prepare_resps()) {
                if *resp.report_id() != id {
                    return Err(Failure::Refused(format!(
                        "job {job}: an answer for report {} where {id} was asked",
                        resp.report_id()
                    )));
                }
                match resp.result() {
                    dap::PrepareStepResult::Continue { message } => match prepare::leader_finish(task, state, message) {
                        Ok(output) => {
                            share.add(&output).map_err(retry)?;
                            ids.push(id);
                        }
                        Err(e) => {
                            tracing::warn!(report = %id, error = %e, "the leader could not finish a report the helper continued");
                            leader.metrics.measure_rejected("leader_finish_failed");
                        }
                    },
                    dap::PrepareStepResult::Finished => leader.metrics.measure_rejected("unexpected_finish"),
                    dap::PrepareStepResult::Reject(error) => leader.metrics.measure_rejected(prepare_error_name(*error)),
                }
            }
        }
        Ok((share, ids))
    }

    /// Records the release (and deletes the period's reports).
    fn release(&mut self, task_id: &dap::TaskId, release: Release) -> Result<Release, Failure> {
        let leader = &self.leader;
        leader.store().record_release(task_id, &release, crate::aggregate::now_ms()).map_err(retry)?;
        leader.closed(task_id, release.period_start);
        self.backoff.remove(&(*task_id, release.period_start));
        if release.failed.is_some() {
            return Ok(release);
        }
        let withheld = release.counts.is_none();
        leader.metrics.measure_released(withheld);
        tracing::info!(task = %task_id, period = release.period_start, reports = release.reports, withheld, "period released");
        Ok(release)
    }
}

/// DAP's name of a prepare error, as the rejection metric's label.
fn prepare_error_name(e: dap::PrepareError) -> &'static str {
    match e {
        dap::PrepareError::BatchCollected => "batch_collected",
        dap::PrepareError::ReportReplayed => "report_replayed",
        dap::PrepareError::ReportDropped => "report_dropped",
        dap::PrepareError::HpkeUnknownConfigId => "hpke_unknown_config_id",
        dap::PrepareError::HpkeDecryptError => "hpke_decrypt_error",
        dap::PrepareError::VdafPrepError => "vdaf_prep_error",
        dap::PrepareError::BatchSaturated => "batch_saturated",
        dap::PrepareError::TaskExpired => "task_expired",
        dap::PrepareError::InvalidMessage => "invalid_message",
        dap::PrepareError::ReportTooEarly => "report_too_early",
    }
}

/// The leader's blocking client for the helper's DAP endpoints, from the collection thread.
struct HelperClient {
    agent: ureq::Agent,
    /// `<helper_url>dap/`.
    base: String,
    authorization: String,
}

impl HelperClient {
    fn new(leader: &MeasureLeader) -> HelperClient {
        let timeout = Duration::from_millis(leader.settings.helper_timeout_ms);
        let agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
        HelperClient { agent, base: format!("{}dap/", leader.helper_url), authorization: format!("Bearer {}", leader.token) }
    }

    /// `PUT /dap/tasks/{id}?job_size=…`: the task's parameters, as JSON, and the most reports
    /// the leader puts in one job.
    fn put_task(&self, task_id: &dap::TaskId, task: &TaskParams, job_size: usize) -> Result<(), Failure> {
        let body = serde_json::to_vec(task).map_err(retry)?;
        let path = format!("tasks/{task_id}?job_size={job_size}");
        self.call("PUT", &path, "application/json", &body, None, ANSWER_OVERHEAD).map(drop)
    }

    /// `PUT /dap/tasks/{id}/aggregation_jobs/{job}`: the helper's answer for `reports` reports.
    fn job(&self, task_id: &dap::TaskId, job: &dap::AggregationJobId, body: &[u8], reports: usize) -> Result<Vec<u8>, Failure> {
        let limit = ANSWER_OVERHEAD + reports as u64 * JOB_ANSWER_PER_REPORT;
        let path = format!("tasks/{task_id}/aggregation_jobs/{job}");
        let media_type = dap::AggregationJobInitializeReq::<TimeInterval>::MEDIA_TYPE;
        self.call("PUT", &path, media_type, body, Some(dap::AggregationJobResp::MEDIA_TYPE), limit)
    }

    /// `POST /dap/tasks/{id}/aggregate_shares`: the helper's sealed aggregate share.
    fn aggregate_share(&self, task_id: &dap::TaskId, body: &[u8], task: &TaskParams) -> Result<Vec<u8>, Failure> {
        // 16 bytes a cell (Field128), sealed.
        let limit = ANSWER_OVERHEAD + task.length() as u64 * 16;
        let media_type = dap::AggregateShareReq::<TimeInterval>::MEDIA_TYPE;
        self.call(
            "POST",
            &format!("tasks/{task_id}/aggregate_shares"),
            media_type,
            body,
            Some(dap::AggregateShare::MEDIA_TYPE),
            limit,
        )
    }

    /// One call: a 2xx answer's body (of `expect`ed media type, when given), a 4xx as the
    /// helper's refusal, anything else as a failure to retry.
    fn call(
        &self,
        method: &str,
        path: &str,
        media_type: &str,
        body: &[u8],
        expect: Option<&str>,
        limit: u64,
    ) -> Result<Vec<u8>, Failure> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "PUT" => self.agent.put(&url),
            _ => self.agent.post(&url),
        };
        let mut resp = request
            .header("Authorization", &self.authorization)
            .header("Content-Type", media_type)
            .send(body)
            .map_err(|e| Failure::Retry(format!("{method} {url}: {e}")))?;
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let answer = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| Failure::Retry(format!("{method} {url}: {e}")))?;
        match status {
            200..=299 if expect.is_none_or(|t| content_type.eq_ignore_ascii_case(t)) => Ok(answer),
            200..=299 => Err(Failure::Refused(format!("{method} {url} answered {content_type:?}, not {}", expect.unwrap_or("")))),
            400..=499 => Err(Failure::Refused(format!("{method} {url}: HTTP {status}: {}", String::from_utf8_lossy(&answer)))),
            _ => Err(Failure::Retry(format!("{method} {url}: HTTP {status}: {}", String::from_utf8_lossy(&answer)))),
        }
    }
}
