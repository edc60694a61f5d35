//! Native benchmarks: ranking (timed through the engine and through the uncut graph), one
//! round of local training + update build, and the device's cost of each upload format
//! (plaintext f32 and quantized updates, secure-aggregation reports), on the same synthetic
//! workload as the browser benchmark (www/bench/workload.mjs).

use crate::load_pack;
use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::Event;
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use hearth_core::learning::round::{HelperConfig, RoundTask, participate};
use hearth_core::learning::train::TrainConfig;
use hearth_core::model::scorer::WholeGraph;
use hearth_core::privacy::discrete;
use hearth_core::privacy::ledger::DevicePolicy;
use hearth_core::privacy::noise::Sampler;
use hearth_core::privacy::privatize::build_update;
use hearth_core::privacy::seal::{HelperKey, KeyPair};
use hearth_core::privacy::shares::{Binding, Report, SecAggTask, build_report, expand};
use hearth_core::privacy::wire::Encoding;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const NOW: i64 = 1_750_000_000_000;
const CATEGORIES: [&str; 12] =
    ["sports", "finance", "travel", "cooking", "tech", "music", "fashion", "health", "autos", "games", "home", "books"];

/// Ad `i` of the synthetic catalog. Mirrored exactly by www/bench/workload.mjs.
pub fn synthetic_ad(i: usize) -> Ad {
    let cat = CATEGORIES[i % CATEGORIES.len()];
    Ad {
        id: format!("ad{i}"),
        campaign: Some(format!("camp{}", i % 50)),
        advertiser: Some(format!("adv{}", i % 100)),
        category: Some(cat.into()),
        features: vec![format!("topic:{cat}"), format!("kw:w{}", i % 97), format!("kw:w{}", (i * 7) % 89)],
    }
}

/// Fifty page views over the categories, sports most often. Mirrored by workload.mjs.
pub fn synthetic_profile() -> Profile {
    let mut p = Profile::new(ProfileConfig::default()).expect("default config is valid");
    for i in 0..50usize {
        let topic = if i % 3 == 0 { "sports" } else { CATEGORIES[i % CATEGORIES.len()] };
        let json = json!({"kind": "page_view", "ts": NOW - 60_000 * (50 - i as i64), "topics": [topic], "keywords": [format!("w{}", i % 97)]});
        p.record(Event::from_json(&json.to_string()).expect("valid event")).expect("valid event");
    }
    p
}

/// `n` local events: impressions over the first 200 synthetic ads, one a minute up to NOW, every
/// fifth event a click on the ad just shown. Mirrored by workload.mjs.
pub fn synthetic_events(n: usize) -> Profile {
    let config = ProfileConfig { max_events: n.max(ProfileConfig::default().max_events), ..ProfileConfig::default() };
    let mut p = Profile::new(config).expect("valid config");
    for i in 0..n {
        let (kind, shown, ts) = if i % 5 == 4 {
            ("click", i - 1, NOW - 60_000 * (n - i + 1) as i64 + 1_000)
        } else {
            ("impression", i, NOW - 60_000 * (n - i) as i64)
        };
        let ad = synthetic_ad((shown * 7) % 200);
        let json = json!({"kind": kind, "ts": ts, "ad_id": ad.id, "campaign": ad.campaign, "advertiser": ad.advertiser, "category": ad.category});
        p.record(Event::from_json(&json.to_string()).expect("valid event")).expect("valid event");
    }
    p
}

/// The round the training benchmark runs: default training settings, C = 1, z = 1.
pub fn bench_task(encoding: &str) -> RoundTask {
    serde_json::from_value(
        json!({"round_id": 1, "model_version": 1, "clip_norm": 1.0, "noise_multiplier": 1.0, "encoding": encoding}),
    )
    .expect("valid task")
}

/// The secure round the share benchmark plans for and the load generator's leader runs: K = 100
/// reports per release (the aggregator's default), both servers' noise at the devices' floor
/// (z = 4, as in crates/aggregator/demo.toml). Mirrored by workload.mjs.
pub const BENCH_SECAGG: SecAggTask = SecAggTask { clients: 100, leader_noise: 4.0, helper_noise: 4.0 };

/// [`bench_task`] as a leader announces it: the same C and the device's own noise z = 1 (what
/// still protects it if both servers collude), plus [`BENCH_SECAGG`].
pub fn bench_secagg_task() -> RoundTask {
    RoundTask { secagg: Some(BENCH_SECAGG), ..bench_task("f32") }
}

/// What a helper of [`BENCH_SECAGG`] serves, for a fresh key pair (the pair, to open with).
pub fn bench_helper() -> Result<(KeyPair, HelperConfig), String> {
    let key = KeyPair::generate(1).map_err(|e| e.to_string())?;
    let config =
        HelperConfig { hpke: key.config(), noise_multiplier: BENCH_SECAGG.helper_noise, min_clients: BENCH_SECAGG.clients };
    Ok((key, config))
}

pub fn bench_context() -> Context {
    Context { topics: vec!["sports".into()], keywords: vec![], slot: Some("sidebar".into()), hour: Some(14) }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `f` for a warm-up, then enough iterations for ~1 s (at least 20); returns (p50, p95) in ms.
pub(crate) fn time(mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..5 {
        f();
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 20 || (start.elapsed().as_secs_f64() < 1.0 && samples.len() < 5000) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.95))
}

pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "uncommitted".into())
}

#[derive(clap::Args, Debug)]
pub struct NativeArgs {
    /// Where the JSON records go.
    #[arg(long, value_name = "FILE", default_value = "target/bench/score-native.json")]
    out: PathBuf,
}

pub fn native(args: NativeArgs) -> Result<(), String> {
    let out = args.out;
    let pack = load_pack(Path::new("models/default"))?;
    let whole = WholeGraph::new(&pack).map_err(|e| e.to_string())?;
    let commit = commit();
    let mut records = Vec::new();
    for n in [100usize, 1000, 10_000] {
        let mut engine = Engine::new(pack.clone(), synthetic_profile()).map_err(|e| e.to_string())?;
        engine.set_catalog((0..n).map(synthetic_ad).collect()).map_err(|e| e.to_string())?;
        let context = bench_context();
        let opts = RankOptions { k: 10, ..RankOptions::at(NOW) };
        let (p50, p95) = time(|| {
            engine.rank(&context, &opts).expect("rank");
        });
        let (full50, full95) = time(|| {
            let (req, _) = engine.request(&context, NOW).expect("request");
            let c = engine.catalog();
            whole.logits(&req, &c.ids, &c.weights).expect("full graph");
        });
        for (engine_name, metric, value) in [
            ("tract-native", "rank_p50", p50),
            ("tract-native", "rank_p95", p95),
            ("tract-native-uncut", "rank_p50", full50),
            ("tract-native-uncut", "rank_p95", full95),
        ] {
            records
                .push(json!({"metric": metric, "value": value, "unit": "ms", "engine": engine_name, "n": n, "commit": commit}));
        }
        println!("native n={n:>6}: rank p50 {p50:.3} ms p95 {p95:.3} ms | uncut graph p50 {full50:.3} ms");
    }
    write_records(&out, records)
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Where the JSON records go.
    #[arg(long, value_name = "FILE", default_value = "target/bench/train-native.json")]
    out: PathBuf,
}

/// One local training plus update build (the whole `participate`), at 100, 1,000 and 10,000
/// local events; median of a few runs, each on a fresh engine. Then, on one delta trained on
/// 1,000 events, the device's cost of building each upload with training excluded: the
/// plaintext update (`privatize`, f32 and quantized) and the secure-aggregation report
/// (`secagg_share`: clip, quantize, the device's discrete Gaussian, the leader's share, the seed
/// sealed to the helper, encode). Plus the upload sizes.
pub fn train(args: TrainArgs) -> Result<(), String> {
    let out = args.out;
    let pack = load_pack(Path::new("models/default"))?;
    let params = pack.params.values.len();
    let commit = commit();
    let catalog: Vec<Ad> = (0..200).map(synthetic_ad).collect();
    let err = |e: hearth_core::HearthError| e.to_string();
    let mut records = Vec::new();
    let mut train_1000 = f64::NAN;
    for n in [100usize, 1000, 10_000] {
        let runs = if n >= 10_000 { 3 } else { 7 };
        let mut samples = Vec::new();
        for _ in 0..runs {
            let mut engine = Engine::new(pack.clone(), synthetic_events(n)).map_err(err)?;
            engine.set_catalog(catalog.clone()).map_err(err)?;
            let t = Instant::now();
            participate(&mut engine, &bench_task("f32"), None, &DevicePolicy::RELEASE, &mut Sampler::os()).map_err(err)?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        samples.sort_by(f64::total_cmp);
        let median = percentile(&samples, 0.5);
        if n == 1000 {
            train_1000 = median;
        }
        records
            .push(json!({"metric": "train_update", "value": median, "unit": "ms", "engine": "native", "n": n, "commit": commit}));
        println!("native train + update, {n:>6} events: {median:.1} ms (median of {runs})");
    }

    // One trained delta; every format is built from it, training excluded.
    let mut engine = Engine::new(pack.clone(), synthetic_events(1000)).map_err(err)?;
    engine.set_catalog(catalog.clone()).map_err(err)?;
    let examples = engine.examples().map_err(err)?;
    let delta = engine.train(&examples, &TrainConfig::default()).map_err(err)?.delta;
    let (key, helper) = bench_helper()?;
    let helper_key = HelperKey::from_config(&helper.hpke).map_err(err)?;
    let binding = bench_secagg_task().binding(params).ok_or("the secure task has secagg")?;
    let mut rng = Sampler::os();
    // What is timed is a report the helper can open, of the advertised size.
    let report = build_report(delta.clone(), &binding, &helper_key, &mut rng).map_err(err)?.report;
    key.open(report.key_id, &report.enc, &report.sealed, &Report::aad(&report.report_id, report.key_id, &binding))
        .map_err(err)?;
    if report.encode().len() != Report::encoded_len(params) {
        return Err(format!(
            "a report is {} bytes, not Report::encoded_len = {}",
            report.encode().len(),
            Report::encoded_len(params)
        ));
    }
    let mut privatize_f32 = f64::NAN;
    for encoding in [Encoding::F32, Encoding::QuantizedI16] {
        let (ms, _) = time(|| {
            let (update, _) = build_update(delta.clone(), 1, 1, 1.0, 1.0, encoding, &mut rng).expect("update");
            std::hint::black_box(update.encode());
        });
        if encoding == Encoding::F32 {
            privatize_f32 = ms;
        }
        records.push(json!({"metric": "privatize", "value": ms, "unit": "ms", "engine": "native", "format": encoding.name(), "params": params, "commit": commit}));
        println!("native {:>9} update from a trained delta: {ms:.2} ms (p50)", encoding.name());
    }
    // The report with the task's device noise (z = 1), and without (a leader's devices may add
    // none; what the load generator's leader announces).
    let quiet = Binding { local_noise: 0.0, ..binding };
    let mut report_ms = |binding: &Binding| {
        time(|| {
            let built = build_report(delta.clone(), binding, &helper_key, &mut rng).expect("report");
            std::hint::black_box(built.report.encode());
        })
        .0
    };
    let (secagg, secagg_quiet) = (report_ms(&binding), report_ms(&quiet));
    records.push(
        json!({"metric": "secagg_share", "value": secagg, "unit": "ms", "engine": "native", "params": params, "commit": commit}),
    );
    records.push(json!({"metric": "secagg_share_no_device_noise", "value": secagg_quiet, "unit": "ms", "engine": "native", "params": params, "commit": commit}));
    let overhead = secagg / train_1000;
    records.push(json!({"metric": "secagg_overhead", "value": overhead, "unit": "ratio", "engine": "native", "n": 1000, "params": params, "commit": commit}));
    println!(
        "native secagg report from a trained delta: {secagg:.2} ms (p50), {:.1}% of train_update at 1,000 events ({:+.2} ms against the f32 update); without the device's own noise {secagg_quiet:.2} ms",
        overhead * 100.0,
        secagg - privatize_f32
    );
    // Where a report's time goes: the parts of build_report, one by one.
    let plan = binding.plan().map_err(err)?;
    let mut values = vec![0u32; params];
    let (uniforms, _) = time(|| {
        for _ in 0..params {
            std::hint::black_box(rng.uniform().expect("uniform"));
        }
    });
    let (local_noise, _) = time(|| discrete::add_mod(&mut values, plan.sigma_local, &mut rng).expect("noise"));
    let (mask, _) = time(|| values.iter_mut().zip(expand(&[7; 32], params)).for_each(|(v, m)| *v = v.wrapping_add(m)));
    let aad = Report::aad(&[1; 16], helper_key.key_id(), &binding);
    let (seal, _) = time(|| {
        std::hint::black_box(helper_key.seal(&[7; 32], &aad, &mut rng).expect("seal"));
    });
    println!(
        "  of which: {params} uniforms (stochastic rounding) {uniforms:.2} ms, the device's discrete Gaussian (sigma {:.0} grid units) {local_noise:.2} ms, mask {mask:.2} ms, HPKE seal {seal:.3} ms",
        plan.sigma_local
    );

    // The browser cannot time build_report alone (no such export): it times takePart and
    // trainAndBuildUpdate with training cut to nothing. The same here, to show what that adds.
    let untrained = bench_untrained_task();
    for (format, task, helper) in [("secagg", bench_untrained_secagg_task(), Some(&helper)), ("f32", untrained, None)] {
        let mut engine = Engine::new(pack.clone(), Profile::new(ProfileConfig::default()).map_err(err)?).map_err(err)?;
        let (ms, _) = time(|| {
            let p = participate(&mut engine, &task, helper, &DevicePolicy::RELEASE, &mut Sampler::os()).expect("participate");
            std::hint::black_box(p.upload);
        });
        records.push(json!({"metric": "participate_untrained", "value": ms, "unit": "ms", "engine": "native", "format": format, "params": params, "commit": commit}));
        println!("native participate, no events and no training steps, {format}: {ms:.2} ms (p50; the browser's method)");
    }

    for format in ["f32", "quantized", "secagg"] {
        let mut engine = Engine::new(pack.clone(), synthetic_events(100)).map_err(err)?;
        let (task, helper) = if format == "secagg" { (bench_secagg_task(), Some(&helper)) } else { (bench_task(format), None) };
        let upload = participate(&mut engine, &task, helper, &DevicePolicy::RELEASE, &mut Sampler::os()).map_err(err)?.upload;
        let size = upload.len();
        if format == "secagg" && size != Report::encoded_len(params) {
            return Err(format!("the report is {size} bytes, not Report::encoded_len = {}", Report::encoded_len(params)));
        }
        records.push(json!({"metric": "upload_size", "value": size, "unit": "bytes", "format": format, "params": params, "commit": commit}));
        println!("upload {format}: {size} bytes for {params} parameters");
    }
    write_records(&out, records)
}

/// [`bench_task`] with training cut to nothing (no reconstruction steps, no epochs, no minimum
/// of events): what is left of `participate` is the update build and its bookkeeping. Mirrored
/// by workload.mjs.
pub fn bench_untrained_task() -> RoundTask {
    RoundTask {
        min_events: 0,
        train: TrainConfig { reconstruction_steps: 0, epochs: 0, ..TrainConfig::default() },
        ..bench_task("f32")
    }
}

/// [`bench_untrained_task`] as a leader announces it.
pub fn bench_untrained_secagg_task() -> RoundTask {
    RoundTask { secagg: Some(BENCH_SECAGG), ..bench_untrained_task() }
}

pub fn write_records(out: &Path, records: Vec<Value>) -> Result<(), String> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&Value::Array(records)).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    println!("wrote {}", out.display());
    Ok(())
}
