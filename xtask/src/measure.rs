//! `xtask bench-measure`: what private measurement (issue 17) costs, natively, beside the prio
//! crate's own figures for the same Prio3SumVec in the same run.
//!
//! For a task of 240 and of 5,000 campaigns (plus two slots; bits 2, max_cells 16; one honest
//! device's day, the same tally at both sizes):
//! - `report_build` (`engine` native): `hearth_core::measure::build_report`: shard, HPKE to both
//!   servers, DAP encoding; and `report_size`, the encoded `dap::Report`;
//! - `verify_per_s` per `role` (`engine` native): the leader decodes the upload, opens its share,
//!   runs `leader_init` and, with the helper's answer, `leader_finish`, and adds the output share
//!   to its aggregate share; the helper opens its share, runs `helper_prepare` (the proof check)
//!   and adds;
//! - the same with `engine` prio-native: Prio3SumVec's own `shard` and encoding of its shares
//!   (`report_size` of those), and each aggregator's preparation from the encoded shares
//!   (decode, `prepare_init`, the helper's combination of the prepare shares, `prepare_next`,
//!   accumulate): no DAP, no HPKE, no Hearth.
//!
//! It also writes the browser's fixture (`--fixture`): each task as the leader serves it, the
//! tally, and both servers' HPKE configuration lists, which www/bench/?mode=measure builds the
//! same report from in wasm (`measureReport`); scripts/bench.mjs adds those records and writes
//! target/bench/measure.json.

use crate::bench::{commit, time, write_records};
use hearth_core::measure::hpke_dap::DapKeyPair;
use hearth_core::measure::prepare::{
    AggregateShare, helper_prepare, leader_finish, leader_init, open_input_share, unshard, verify_key,
};
use hearth_core::measure::prio::codec::{Decode, Encode, ParameterizedDecode};
use hearth_core::measure::prio::field::Field128;
use hearth_core::measure::prio::vdaf::{self, Aggregatable, Aggregator, Client, PrepareTransition};
use hearth_core::measure::task::MAX_CAMPAIGNS;
use hearth_core::measure::{Kind, Tally, TaskParams, Vdaf, build_report, dap};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The publisher's slots of the benchmark task (the aggregator's default `[measure] slots`).
const SLOTS: [&str; 2] = ["in-article", "sidebar"];
/// Bits per cell (M = 3) and most cells per report: the aggregator's defaults.
const BITS: u32 = 2;
const MAX_CELLS: u32 = 16;
/// The period the tally counts: one day, starting at a day boundary.
const PERIOD_SECS: u64 = 86_400;
const PERIOD_START: u64 = 1_750_032_000;
/// Each server's σ (the aggregator's default `noise`): enough for the device's ε ceiling.
const SIGMA: f64 = 50.0;
/// Distinct reports the verify loop cycles through.
const REPORTS: usize = 8;
/// How long each verify loop runs, at least.
const VERIFY_FOR: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the native JSON records go.
    #[arg(long, value_name = "FILE", default_value = "target/bench/measure-native.json")]
    out: PathBuf,
    /// Where the browser benchmark's tasks, tally and HPKE configurations go.
    #[arg(long, value_name = "FILE", default_value = "target/bench/measure-fixture.json")]
    fixture: PathBuf,
    /// Campaigns of each task measured (two slots are added to each).
    #[arg(
        long,
        value_name = "N",
        value_delimiter = ',',
        num_args = 1..,
        default_values_t = [240u64, 5000],
        value_parser = clap::value_parser!(u64).range(1..=MAX_CAMPAIGNS as u64)
    )]
    campaigns: Vec<u64>,
}

/// The benchmark task over `n` campaigns named `camp0`..; the collector is `collector`.
fn bench_task(n: usize, collector: &dap::HpkeConfig) -> Result<TaskParams, String> {
    TaskParams::new(
        (0..n).map(|i| format!("camp{i}")),
        SLOTS.map(String::from),
        BITS,
        PERIOD_SECS,
        100,
        MAX_CELLS,
        SIGMA,
        SIGMA,
        1e-9,
        collector,
    )
    .map_err(|e| e.to_string())
}

/// One browser's day: 40 ads seen over 12 campaigns in both slots, every fifth clicked, one
/// dismissed. Past max_cells and M, the measurement clips it as a device does.
pub fn bench_tally() -> Tally {
    let mut tally = Tally::new(PERIOD_START);
    for i in 0..40usize {
        let campaign = format!("camp{}", (i * 37) % 12 * 19);
        let slot = SLOTS[i % 2];
        tally.record(Kind::Impression, Some(&campaign), Some(slot));
        if i % 5 == 4 {
            tally.record(Kind::Click, Some(&campaign), Some(slot));
        }
    }
    tally.record(Kind::Dismissal, Some("camp19"), Some("sidebar"));
    tally
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encoded(value: &impl Encode) -> Vec<u8> {
    value.get_encoded().expect("DAP and VDAF messages encode")
}

/// The two servers of one task: their DAP keys and the verification key they share.
struct Servers {
    task: TaskParams,
    leader: DapKeyPair,
    helper: DapKeyPair,
    verify_key: [u8; 16],
}

pub fn run(args: Args) -> Result<(), String> {
    let err = |e: hearth_core::measure::MeasureError| e.to_string();
    let commit = commit();
    let collector = DapKeyPair::generate(0).map_err(err)?;
    let tally = bench_tally();
    let mut records = Vec::new();
    let mut fixture = Vec::new();
    for n in args.campaigns.iter().map(|&n| n as usize) {
        let task = bench_task(n, &collector.config())?;
        let servers = Servers {
            verify_key: verify_key(b"bench-measure bearer token", &task.task_id()),
            leader: DapKeyPair::generate(1).map_err(err)?,
            helper: DapKeyPair::generate(2).map_err(err)?,
            task,
        };
        let (task, cells) = (&servers.task, servers.task.length());
        let measurement = tally.measurement(task);
        let (leader, helper) = (servers.leader.config(), servers.helper.config());
        // One record: the metric, its unit, this task's size, `keys` (an object) and the commit.
        let record = |metric: &str, value: Value, unit: &str, keys: Value| {
            let mut r = json!({"metric": metric, "value": value, "unit": unit, "campaigns": n, "cells": cells, "commit": commit});
            for (k, v) in keys.as_object().expect("keys are an object") {
                r[k] = v.clone();
            }
            r
        };

        let build = || build_report(task, &measurement, PERIOD_START, &leader, &helper).expect("report");
        let size = build().len();
        let (build_ms, _) = time(|| {
            std::hint::black_box(build());
        });
        let vdaf = task.vdaf().map_err(err)?;
        let shard = |nonce: &[u8; 16]| vdaf.shard(&measurement, nonce).expect("shard");
        let (public, inputs) = shard(&[7; 16]);
        let prio_size = encoded(&public).len() + inputs.iter().map(|s| encoded(s).len()).sum::<usize>();
        let (prio_build_ms, _) = time(|| {
            let (public, inputs) = shard(&[7; 16]);
            std::hint::black_box((encoded(&public), inputs.iter().map(encoded).collect::<Vec<_>>()));
        });
        println!(
            "{n} campaigns ({cells} cells): report build {build_ms:.2} ms (p50), {size} bytes | prio shard + encode {prio_build_ms:.2} ms, {prio_size} bytes"
        );

        let reports: Vec<Vec<u8>> = (0..REPORTS).map(|_| build()).collect();
        let Verified { leader_per_s, helper_per_s, steps } = verify(&servers, &reports, &measurement)?;
        let (prio_leader_per_s, prio_helper_per_s) = prio_verify(&vdaf, &servers.verify_key, &measurement)?;
        println!(
            "{n} campaigns: verify + aggregate, reports/s: leader {leader_per_s:.1}, helper {helper_per_s:.1} | prio prepare + accumulate: leader {prio_leader_per_s:.1}, helper {prio_helper_per_s:.1}"
        );
        let steps: Vec<String> = steps.iter().map(|(step, ms)| format!("{step} {ms:.3}")).collect();
        println!("  of which, ms per report: {}", steps.join(", "));

        records.extend([
            record("report_build", json!(build_ms), "ms", json!({"engine": "native"})),
            record("report_build", json!(prio_build_ms), "ms", json!({"engine": "prio-native"})),
            record("report_size", json!(size), "bytes", json!({"format": "dap-report"})),
            record("report_size", json!(prio_size), "bytes", json!({"engine": "prio-native", "format": "prio3-shares"})),
        ]);
        for (role, ours, peer) in [("leader", leader_per_s, prio_leader_per_s), ("helper", helper_per_s, prio_helper_per_s)] {
            records.push(record("verify_per_s", json!(ours), "per_s", json!({"engine": "native", "role": role})));
            records.push(record("verify_per_s", json!(peer), "per_s", json!({"engine": "prio-native", "role": role})));
        }

        let mut served = serde_json::to_value(task).map_err(|e| e.to_string())?;
        served["task_id"] = json!(task.task_id().to_string());
        let list = |c: &dap::HpkeConfig| hex(&encoded(&dap::HpkeConfigList::new(vec![c.clone()])));
        fixture.push(json!({
            "campaigns": n, "task": served.to_string(), "report_size": size,
            "leader_configs": list(&leader), "helper_configs": list(&helper),
        }));
    }
    let tally_json = serde_json::to_string(&tally).map_err(|e| e.to_string())?;
    let fixture = json!({"tally": tally_json, "rows": fixture});
    if let Some(dir) = args.fixture.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(&args.fixture, fixture.to_string()).map_err(|e| format!("{}: {e}", args.fixture.display()))?;
    println!("wrote {}", args.fixture.display());
    write_records(&args.out, records)
}

/// What [`verify`] measured: reports per second per server, and where each server's time goes.
struct Verified {
    leader_per_s: f64,
    helper_per_s: f64,
    /// Each step's mean time per report, in ms, in the order the flow runs them.
    steps: [(&'static str, f64); 5],
}

/// Reports verified and aggregated per second by each server, through hearth-core's own path,
/// cycling over `reports` for at least [`VERIFY_FOR`]. Each step is timed for the server that
/// runs it. The released sum must be the measurement times the reports aggregated: what is
/// timed is a flow that works.
fn verify(servers: &Servers, reports: &[Vec<u8>], measurement: &[u128]) -> Result<Verified, String> {
    let Servers { task, leader, helper, verify_key } = servers;
    let err = |e: hearth_core::measure::MeasureError| e.to_string();
    let id = task.task_id();
    let (mut leader_sum, mut helper_sum) = (AggregateShare::zero(task), AggregateShare::zero(task));
    // leader: decode + open, leader_init; helper: open, helper_prepare + add; leader: finish + add.
    let mut spent = [Duration::ZERO; 5];
    let mut done = 0usize;
    while done < reports.len() || spent.iter().sum::<Duration>() < VERIFY_FOR {
        let bytes = &reports[done % reports.len()];
        let mut t = Instant::now();
        let mut lap = |step: usize| {
            spent[step] += t.elapsed();
            t = Instant::now();
        };
        let report = dap::Report::get_decoded(bytes).map_err(|e| e.to_string())?;
        let (metadata, public) = (report.metadata(), report.public_share());
        let share = open_input_share(&id, leader, dap::Role::Leader, metadata, public, report.leader_encrypted_input_share())
            .map_err(err)?;
        lap(0);
        let (state, to_helper) = leader_init(task, verify_key, metadata, public, &share).map_err(err)?;
        lap(1);
        let share = open_input_share(&id, helper, dap::Role::Helper, metadata, public, report.helper_encrypted_input_share())
            .map_err(err)?;
        lap(2);
        let (out, to_leader) = helper_prepare(task, verify_key, metadata, public, &share, &to_helper).map_err(err)?;
        helper_sum.add(&out).map_err(err)?;
        lap(3);
        let out = leader_finish(task, state, &to_leader).map_err(err)?;
        leader_sum.add(&out).map_err(err)?;
        lap(4);
        done += 1;
    }
    let want: Vec<i64> = measurement.iter().map(|&m| m as i64 * done as i64).collect();
    if unshard(&leader_sum, &helper_sum).map_err(err)? != want {
        return Err(format!("{done} verified reports do not sum to {done} times the measurement"));
    }
    let per_s = |steps: &[usize]| done as f64 / steps.iter().map(|&s| spent[s].as_secs_f64()).sum::<f64>();
    let ms = |step: usize| spent[step].as_secs_f64() * 1e3 / done as f64;
    Ok(Verified {
        leader_per_s: per_s(&[0, 1, 4]),
        helper_per_s: per_s(&[2, 3]),
        steps: [
            ("leader decode + open", ms(0)),
            ("leader_init", ms(1)),
            ("helper open", ms(2)),
            ("helper_prepare + add", ms(3)),
            ("leader_finish + add", ms(4)),
        ],
    })
}

/// [`verify`]'s peer: prio's Prio3SumVec preparation alone, from the encoded shares of
/// [`REPORTS`] fresh shards (each with its own nonce), per aggregator: decode, `prepare_init`;
/// the helper combines both prepare shares into the prepare message (the proof check); each
/// `prepare_next`, accumulate.
fn prio_verify(vdaf: &Vdaf, verify_key: &[u8; 16], measurement: &[u128]) -> Result<(f64, f64), String> {
    type Public = <Vdaf as vdaf::Vdaf>::PublicShare;
    type Input = <Vdaf as vdaf::Vdaf>::InputShare;
    let e = |e: vdaf::VdafError| e.to_string();
    let codec = |e: hearth_core::measure::prio::codec::CodecError| e.to_string();
    /// One report as prio encodes it: nonce, public share, each aggregator's input share.
    struct Shard {
        nonce: [u8; 16],
        public: Vec<u8>,
        inputs: Vec<Vec<u8>>,
    }
    let shards = (0..REPORTS as u8)
        .map(|i| {
            let nonce = [i; 16];
            let (public, inputs) = vdaf.shard(&measurement.to_vec(), &nonce).map_err(e)?;
            Ok(Shard { nonce, public: encoded(&public), inputs: inputs.iter().map(encoded).collect() })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let zero = || vdaf::AggregateShare::<Field128>::from(vec![Field128::from(0u128); measurement.len()]);
    let (mut leader_sum, mut helper_sum) = (zero(), zero());
    let (mut leader_time, mut helper_time) = (Duration::ZERO, Duration::ZERO);
    let mut done = 0usize;
    while done < shards.len() || leader_time + helper_time < VERIFY_FOR {
        let Shard { nonce, public, inputs } = &shards[done % shards.len()];
        let t = Instant::now();
        let leader_public = Public::get_decoded_with_param(vdaf, public).map_err(codec)?;
        let input = Input::get_decoded_with_param(&(vdaf, 0), &inputs[0]).map_err(codec)?;
        let (leader_state, leader_share) = vdaf.prepare_init(verify_key, 0, &(), nonce, &leader_public, &input).map_err(e)?;
        leader_time += t.elapsed();

        let t = Instant::now();
        let helper_public = Public::get_decoded_with_param(vdaf, public).map_err(codec)?;
        let input = Input::get_decoded_with_param(&(vdaf, 1), &inputs[1]).map_err(codec)?;
        let (helper_state, helper_share) = vdaf.prepare_init(verify_key, 1, &(), nonce, &helper_public, &input).map_err(e)?;
        let message = vdaf.prepare_shares_to_prepare_message(&(), [leader_share, helper_share]).map_err(e)?;
        let PrepareTransition::Finish(out) = vdaf.prepare_next(helper_state, message.clone()).map_err(e)? else {
            return Err("Prio3 finishes in one round".into());
        };
        helper_sum.accumulate(&out).map_err(e)?;
        helper_time += t.elapsed();

        let t = Instant::now();
        let PrepareTransition::Finish(out) = vdaf.prepare_next(leader_state, message).map_err(e)? else {
            return Err("Prio3 finishes in one round".into());
        };
        leader_sum.accumulate(&out).map_err(e)?;
        leader_time += t.elapsed();
        done += 1;
    }
    let total = <Vdaf as vdaf::Collector>::unshard(vdaf, &(), [leader_sum, helper_sum], done).map_err(e)?;
    if total != measurement.iter().map(|m| m * done as u128).collect::<Vec<_>>() {
        return Err(format!("{done} prepared reports do not sum to {done} times the measurement"));
    }
    Ok((done as f64 / leader_time.as_secs_f64(), done as f64 / helper_time.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark's device sends a full honest report at every task size: max_cells nonzero
    /// cells, some clipped at M, none above (what a report's size and proof do not depend on,
    /// but what its build and the servers' work are timed on).
    #[test]
    fn the_bench_tally_fills_max_cells_within_m() {
        let collector = DapKeyPair::from_secret(0, &[3; 32]).config();
        for n in [240, 5000] {
            let task = bench_task(n, &collector).unwrap();
            let m = bench_tally().measurement(&task);
            assert_eq!(m.len(), (n + SLOTS.len()) * 4);
            assert_eq!(m.iter().filter(|&&v| v > 0).count(), MAX_CELLS as usize);
            assert_eq!(m.iter().max(), Some(&u128::from(task.max_count())));
        }
    }
}
