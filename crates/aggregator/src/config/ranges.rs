//! The physical range of every numeric setting. A number outside what any deployment could want
//! is a typo, and some break the server outright (a deadline that overflows into the past, a
//! semaphore or queue too large to allocate, noise that drowns every update), so each is refused
//! at start with its key, its value and its range.

use super::{Config, ConfigError, MIN_CLIENTS_FLOOR, Role};
use hearth_core::learning::server::Optimizer;
use hearth_core::learning::train::{Adam, MAX_LR};
use hearth_core::measure::task as measure;
use hearth_core::privacy::ledger::DevicePolicy;
use std::fmt::Debug;
use std::ops::RangeInclusive;

/// The values one numeric setting may take.
struct Allowed<T> {
    range: RangeInclusive<T>,
    /// The range in words for the error message ("30 days"); empty where the numbers say it.
    words: &'static str,
}

impl<T: PartialOrd + Debug> Allowed<T> {
    /// `key = value is outside min..=max (words)` unless the range holds `value`. Every range here
    /// has finite ends, so NaN and ±∞ are always outside.
    fn check(&self, key: &str, value: T) -> Result<(), ConfigError> {
        if self.range.contains(&value) {
            return Ok(());
        }
        let words = if self.words.is_empty() { String::new() } else { format!(" ({})", self.words) };
        // Debug, not Display: floats print as 1e30, not thirty-one digits.
        Err(ConfigError::Invalid(format!("{key} = {value:?} is outside {:?}{words}", self.range)))
    }
}

/// `max_connections`: 0 is automatic (the open-file limit less `FD_RESERVE`); a million open
/// sockets is more than one process serves.
const CONNECTIONS: Allowed<usize> = Allowed { range: 0..=1_000_000, words: "0: automatic" };
/// Header, idle, send, whole-upload and helper timeouts: below 0.1 s a phone's round trip alone
/// misses them; beyond 10 minutes a slow client holds its connection far longer than any honest
/// request.
const TIMEOUT_MS: Allowed<u64> = Allowed { range: 100..=600_000, words: "0.1 s to 10 min" };
/// `send_buffer_bytes`: below 4 KiB a buffer holds less than a few segments and downloads crawl;
/// 4 MiB is the ceiling of the kernel's own autotuning (`net.ipv4.tcp_wmem`'s default), where
/// the setting no longer bounds anything.
const SEND_BUFFER: Allowed<usize> = Allowed { range: 4_096..=4_194_304, words: "4 KiB to 4 MiB" };
/// `min_body_rate`, bytes/s: below 1 KiB/s the rule no longer tells a trickle from an upload
/// (an update of the default pack, 1.1 MB, would take 18 minutes); above 1 MiB/s it cuts off
/// honest phones on a slow network.
const BODY_RATE: Allowed<u64> = Allowed { range: 1_024..=1_048_576, words: "1 KiB/s to 1 MiB/s" };
/// `body_grace_ms`: time for TCP slow start and a radio waking up; beyond a minute the rate is
/// not enforced for most of any upload.
const BODY_GRACE_MS: Allowed<u64> = Allowed { range: 0..=60_000, words: "up to 1 min" };
/// `upload_concurrency`: each slot may hold a whole update in memory (1.1 MB for the default
/// pack); 4,096 of them is already about 4.5 GB.
const UPLOAD_SLOTS: Allowed<usize> = Allowed { range: 1..=4_096, words: "" };
/// `upload_wait_ms`: 0 answers 503 at once when every slot is taken; a client kept waiting more
/// than a minute is better told to retry.
const UPLOAD_WAIT_MS: Allowed<u64> = Allowed { range: 0..=60_000, words: "up to 1 min" };
/// `queue`: a queued update still holds its upload slot, so no more than the largest
/// `upload_concurrency` entries are ever filled.
const QUEUE: Allowed<usize> = Allowed { range: 1..=4_096, words: "" };
/// `model_cache_versions`: each holds a whole pack in memory, and devices fetch only the versions
/// of the last few rounds.
const MODEL_CACHE_VERSIONS: Allowed<usize> = Allowed { range: 1..=64, words: "" };
/// `round.min_clients` (K): from the floor up to a million devices a round.
const MIN_CLIENTS: Allowed<u64> = Allowed { range: MIN_CLIENTS_FLOOR..=1_000_000, words: "" };
/// `round.deadline_secs`: a round open longer than a month waits for devices long gone.
const DEADLINE_SECS: Allowed<u64> = Allowed { range: 1..=30 * 24 * 3600, words: "30 days" };
/// `round.clip_norm` (C): devices refuse rounds above their ceiling; below 1e-4 an f32 update is
/// mostly rounding.
const CLIP_NORM: Allowed<f32> =
    Allowed { range: 1e-4..=DevicePolicy::RELEASE.max_clip_norm, words: "up to the devices' ceiling" };
/// Largest noise multiplier z of devices or servers: at 100, even the mean of 10,000 updates
/// carries noise as large as one whole clipped update.
const MAX_NOISE_MULTIPLIER: f32 = 100.0;
/// `secagg.noise_multiplier`: devices refuse rounds whose servers add less than their floor.
const SERVER_NOISE: Allowed<f32> =
    Allowed { range: DevicePolicy::RELEASE.min_server_noise..=MAX_NOISE_MULTIPLIER, words: "from the devices' floor" };
/// `round.min_events`: a device needs an event to train on; a round asking more than a heavy
/// reader gathers in months finds no devices.
const MIN_EVENTS: Allowed<usize> = Allowed { range: 1..=10_000, words: "" };
/// `round.sampling_rate` (q ≈ K / devices visiting a round): down to one device in a million.
const SAMPLING_RATE: Allowed<f64> = Allowed { range: 1e-6..=1.0, words: "" };
/// `round.train.reconstruction_steps`: each is a pass over the device's examples in a visitor's
/// browser.
const RECONSTRUCTION_STEPS: Allowed<usize> = Allowed { range: 0..=1_000, words: "" };
/// `round.train.epochs`: passes over the device's examples in a visitor's browser; 0 would send
/// pure noise.
const EPOCHS: Allowed<usize> = Allowed { range: 1..=100, words: "" };
/// `round.train.batch_size`: beyond a few thousand it is full-batch on any device's examples.
const BATCH_SIZE: Allowed<usize> = Allowed { range: 1..=4_096, words: "" };
/// `round.train.local_l2`: a pull of 1 already pins `local_u` to zero.
const LOCAL_L2: Allowed<f32> = Allowed { range: 0.0..=1.0, words: "" };
/// Every learning rate, the devices' Adam and the server's: below 1e-6 a step is lost in f32
/// rounding; above [`MAX_LR`] training only diverges.
const LEARNING_RATE: Allowed<f32> = Allowed { range: 1e-6..=MAX_LR, words: "" };
/// Adam's and FedAdam's moment decays: 0.9999 already remembers 10,000 steps.
const BETA: Allowed<f32> = Allowed { range: 0.0..=0.9999, words: "" };
/// Adam's ε: 1e-8 is usual; 1 makes it plain SGD-with-momentum.
const ADAM_EPS: Allowed<f32> = Allowed { range: 1e-12..=1.0, words: "" };
/// FedAdam's τ (Reddi et al. 2021 tune it over 1e-9..=1): smaller, a coordinate with no second
/// moment takes an unbounded step.
const TAU: Allowed<f32> = Allowed { range: 1e-9..=1.0, words: "" };
/// `privacy.epsilon_budget`: below 0.01 no round can be released; above 10 the guarantee is
/// nominal, above 100 it is none.
const EPSILON_BUDGET: Allowed<f64> = Allowed { range: 0.01..=100.0, words: "" };
/// `privacy.delta`: the chance the guarantee fails outright, which must be far below one in the
/// number of devices.
const DELTA: Allowed<f64> = Allowed { range: 1e-12..=1e-3, words: "" };
/// `secagg.token`, in characters: long enough not to be guessed, short enough for a header.
const TOKEN_CHARS: Allowed<usize> = Allowed { range: 16..=1_024, words: "the same on leader and helper" };

/// `measure.period_secs`: what hearth-core's task allows (tests run seconds, deployments a day).
const PERIOD_SECS: Allowed<u64> = Allowed { range: measure::MIN_PERIOD_SECS..=measure::MAX_PERIOD_SECS, words: "up to 31 days" };
/// `measure.bits`: M = 2^bits − 1 per cell; beyond hearth-core's ceiling a report's proof grows
/// and one browser moves a count by more than any honest page view does.
const MEASURE_BITS: Allowed<u32> = Allowed { range: 1..=measure::MAX_BITS, words: "" };
/// `measure.max_cells`: hearth-core's ceiling; Δ and so the noise needed grow as its root.
const MEASURE_CELLS: Allowed<u32> = Allowed { range: 1..=measure::MAX_CELLS, words: "" };
/// `measure.min_reports` (K): from the floor up to a billion reports a period.
const MIN_REPORTS: Allowed<u64> = Allowed { range: measure::MIN_REPORTS_FLOOR..=1_000_000_000, words: "" };
/// `measure.noise`, `measure.helper_noise` (σ in counts): below 1 a count's noise is below one
/// browser's own contribution; beyond a million every count is noise.
const MEASURE_NOISE: Allowed<f64> = Allowed { range: 1.0..=1e6, words: "σ in counts" };
/// `measure.delta`: far below one in the number of browsers, and at most hearth-core's ceiling.
const MEASURE_DELTA: Allowed<f64> = Allowed { range: 1e-15..=measure::MAX_DELTA, words: "" };
/// `measure.job_size`: each report in a job costs the helper a proof check; 10,000 of the
/// largest reports is a request of several GB.
const JOB_SIZE: Allowed<usize> = Allowed { range: 1..=10_000, words: "reports per aggregation job" };
/// `measure.max_report_bytes`: a report of the smallest task is about a kilobyte; 64 MiB holds
/// hearth-core's largest task (10,000 campaigns at 4 bits) with room to spare.
const REPORT_BYTES: Allowed<usize> = Allowed { range: 1_024..=64 << 20, words: "1 KiB to 64 MiB" };
/// `measure.max_reports_per_period`: at least one; up to a billion, as K.
const REPORTS_PER_PERIOD: Allowed<u64> = Allowed { range: 1..=1_000_000_000, words: "" };
/// `measure.grace_secs`: beyond a week, periods wait for uploads no device sends any more.
const GRACE_SECS: Allowed<u64> = Allowed { range: 0..=7 * 86_400, words: "up to 7 days" };

/// `measure.admin_token`, in characters, when set: as `secagg.token`.
const ADMIN_TOKEN_CHARS: Allowed<usize> = Allowed { range: 16..=1_024, words: "or empty: no collect endpoint" };

/// Every numeric setting within its range, the first one outside named.
pub(super) fn check(c: &Config) -> Result<(), ConfigError> {
    CONNECTIONS.check("max_connections", c.max_connections)?;
    TIMEOUT_MS.check("header_timeout_ms", c.header_timeout_ms)?;
    TIMEOUT_MS.check("idle_timeout_ms", c.idle_timeout_ms)?;
    SEND_BUFFER.check("send_buffer_bytes", c.send_buffer_bytes)?;
    TIMEOUT_MS.check("send_timeout_ms", c.send_timeout_ms)?;
    TIMEOUT_MS.check("body_timeout_ms", c.body_timeout_ms)?;
    BODY_RATE.check("min_body_rate", c.min_body_rate)?;
    BODY_GRACE_MS.check("body_grace_ms", c.body_grace_ms)?;
    UPLOAD_SLOTS.check("upload_concurrency", c.upload_concurrency)?;
    UPLOAD_WAIT_MS.check("upload_wait_ms", c.upload_wait_ms)?;
    QUEUE.check("queue", c.queue)?;
    MODEL_CACHE_VERSIONS.check("model_cache_versions", c.model_cache_versions)?;

    let r = &c.round;
    MIN_CLIENTS.check("round.min_clients", r.min_clients)?;
    DEADLINE_SECS.check("round.deadline_secs", r.deadline_secs)?;
    CLIP_NORM.check("round.clip_norm", r.clip_norm)?;
    round_noise(c.role).check("round.noise_multiplier", r.noise_multiplier)?;
    MIN_EVENTS.check("round.min_events", r.min_events)?;
    SAMPLING_RATE.check("round.sampling_rate", r.sampling_rate)?;

    let t = &r.train;
    RECONSTRUCTION_STEPS.check("round.train.reconstruction_steps", t.reconstruction_steps)?;
    adam("round.train.reconstruction", &t.reconstruction)?;
    LOCAL_L2.check("round.train.local_l2", t.local_l2)?;
    EPOCHS.check("round.train.epochs", t.epochs)?;
    BATCH_SIZE.check("round.train.batch_size", t.batch_size)?;
    adam("round.train.global", &t.global)?;

    match c.optimizer {
        Optimizer::FedAvg { lr } => LEARNING_RATE.check("optimizer.lr", lr)?,
        Optimizer::FedAdam { lr, beta1, beta2, tau } => {
            LEARNING_RATE.check("optimizer.lr", lr)?;
            BETA.check("optimizer.beta1", beta1)?;
            BETA.check("optimizer.beta2", beta2)?;
            TAU.check("optimizer.tau", tau)?;
        }
    }

    EPSILON_BUDGET.check("privacy.epsilon_budget", c.privacy.epsilon_budget)?;
    DELTA.check("privacy.delta", c.privacy.delta)?;

    let s = &c.secagg;
    SERVER_NOISE.check("secagg.noise_multiplier", s.noise_multiplier)?;
    TIMEOUT_MS.check("secagg.helper_timeout_ms", s.helper_timeout_ms)?;
    // Only the leader and helper use the token; never print it.
    if c.role != Role::Single {
        TOKEN_CHARS.check("secagg.token length", s.token.chars().count())?;
    }

    let m = &c.measure;
    PERIOD_SECS.check("measure.period_secs", m.period_secs)?;
    MEASURE_BITS.check("measure.bits", m.bits)?;
    MEASURE_CELLS.check("measure.max_cells", m.max_cells)?;
    MIN_REPORTS.check("measure.min_reports", m.min_reports)?;
    MEASURE_NOISE.check("measure.noise", m.noise)?;
    MEASURE_NOISE.check("measure.helper_noise", m.helper_noise)?;
    MEASURE_DELTA.check("measure.delta", m.delta)?;
    JOB_SIZE.check("measure.job_size", m.job_size)?;
    REPORT_BYTES.check("measure.max_report_bytes", m.max_report_bytes)?;
    REPORTS_PER_PERIOD.check("measure.max_reports_per_period", m.max_reports_per_period)?;
    TIMEOUT_MS.check("measure.helper_timeout_ms", m.helper_timeout_ms)?;
    GRACE_SECS.check("measure.grace_secs", m.grace_secs)?;
    // Empty turns the collect endpoint off; never print it.
    if !m.admin_token.is_empty() {
        ADMIN_TOKEN_CHARS.check("measure.admin_token length", m.admin_token.chars().count())?;
    }
    Ok(())
}

/// `round.noise_multiplier`: a single server's release carries only the devices' noise, so they
/// need at least the plaintext floor; a leader's devices may add none (the servers' noise
/// protects the release).
fn round_noise(role: Role) -> Allowed<f32> {
    match role {
        Role::Single => Allowed {
            range: DevicePolicy::RELEASE.min_plaintext_noise..=MAX_NOISE_MULTIPLIER,
            words: "from the devices' floor for a plaintext upload",
        },
        Role::Leader | Role::Helper => Allowed { range: 0.0..=MAX_NOISE_MULTIPLIER, words: "" },
    }
}

/// One Adam optimiser's settings, under `key`.
fn adam(key: &str, a: &Adam) -> Result<(), ConfigError> {
    LEARNING_RATE.check(&format!("{key}.lr"), a.lr)?;
    BETA.check(&format!("{key}.beta1"), a.beta1)?;
    BETA.check(&format!("{key}.beta2"), a.beta2)?;
    ADAM_EPS.check(&format!("{key}.eps"), a.eps)
}
