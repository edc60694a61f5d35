//! Native benchmarks: ranking (timed through the engine and through the uncut graph) and one
//! round of local training + update build, on the same synthetic workload as the browser
//! benchmark (www/bench/workload.mjs).

use crate::load_pack;
use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::Event;
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use hearth_core::learning::round::{RoundTask, participate};
use hearth_core::model::scorer::WholeGraph;
use hearth_core::privacy::noise::Sampler;
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

pub fn bench_context() -> Context {
    Context { topics: vec!["sports".into()], keywords: vec![], slot: Some("sidebar".into()), hour: Some(14) }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs `f` for a warm-up, then enough iterations for ~1 s (at least 20); returns (p50, p95) in ms.
fn time(mut f: impl FnMut()) -> (f64, f64) {
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
/// local events; median of a few runs, each on a fresh engine. Plus the upload sizes.
pub fn train(args: TrainArgs) -> Result<(), String> {
    let out = args.out;
    let pack = load_pack(Path::new("models/default"))?;
    let params = pack.params.values.len();
    let commit = commit();
    let catalog: Vec<Ad> = (0..200).map(synthetic_ad).collect();
    let mut records = Vec::new();
    for n in [100usize, 1000, 10_000] {
        let runs = if n >= 10_000 { 3 } else { 7 };
        let mut samples = Vec::new();
        for _ in 0..runs {
            let mut engine = Engine::new(pack.clone(), synthetic_events(n)).map_err(|e| e.to_string())?;
            engine.set_catalog(catalog.clone()).map_err(|e| e.to_string())?;
            let t = Instant::now();
            participate(&mut engine, &bench_task("f32"), &mut Sampler::os()).map_err(|e| e.to_string())?;
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        samples.sort_by(f64::total_cmp);
        let median = percentile(&samples, 0.5);
        records
            .push(json!({"metric": "train_update", "value": median, "unit": "ms", "engine": "native", "n": n, "commit": commit}));
        println!("native train + update, {n:>6} events: {median:.1} ms (median of {runs})");
    }
    for format in ["f32", "quantized"] {
        let mut engine = Engine::new(pack.clone(), synthetic_events(100)).map_err(|e| e.to_string())?;
        let upload = participate(&mut engine, &bench_task(format), &mut Sampler::os()).map_err(|e| e.to_string())?.upload;
        let size = upload.len();
        records.push(json!({"metric": "upload_size", "value": size, "unit": "bytes", "format": format, "params": params, "commit": commit}));
        println!("upload {format}: {size} bytes for {params} parameters");
    }
    write_records(&out, records)
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
