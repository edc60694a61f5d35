//! The WGSL kernel against tract on the default pack: same logits to 1e-4 and the same top-k,
//! for an empty, a one-ad and larger catalogs. CI installs mesa-vulkan-drivers (llvmpipe), so a
//! missing adapter fails these tests instead of skipping them.

use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{AdRef, Event, EventKind};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use hearth_core::model::pack::ModelPack;
use hearth_gpu::{GpuError, GpuScorer, request_vector};

const NOW: i64 = 1_700_000_000_000;
const TOPICS: [&str; 5] = ["sports", "finance", "travel", "cooking", "music"];

fn default_pack() -> ModelPack {
    let onnx = include_bytes!("../../../models/default/model.onnx");
    let manifest = include_str!("../../../models/default/manifest.json");
    ModelPack::load(onnx, manifest).expect("the default pack loads")
}

fn ad(i: usize) -> Ad {
    let topic = TOPICS[i % TOPICS.len()];
    Ad {
        id: format!("ad{i}"),
        campaign: Some(format!("camp{}", i % 37)),
        advertiser: Some(format!("adv{}", i % 101)),
        category: Some(topic.into()),
        features: vec![format!("topic:{topic}"), format!("kw:item{}", i % 211)],
    }
}

/// A reader of sports and travel who clicked a few ads.
fn profile() -> Profile {
    let mut p = Profile::new(ProfileConfig::default()).unwrap();
    for i in 0..40i64 {
        let topics = vec![TOPICS[(i % 3 * 2) as usize % TOPICS.len()].to_string()];
        let keywords = vec![format!("item{}", i * 7 % 211)];
        p.record(Event { kind: EventKind::PageView, ts: NOW - 60_000 * (40 - i), topics, keywords, ad: None }).unwrap();
        if i % 5 == 0 {
            let a = ad(i as usize);
            let ad_ref = AdRef { ad_id: a.id, campaign: a.campaign, advertiser: a.advertiser, category: a.category };
            p.record(Event {
                kind: EventKind::Click,
                ts: NOW - 60_000 * (40 - i) + 1,
                topics: vec![],
                keywords: vec![],
                ad: Some(ad_ref),
            })
            .unwrap();
        }
    }
    p
}

fn gpu() -> GpuScorer {
    pollster::block_on(GpuScorer::new())
        .expect("the adapter opens a device")
        .expect("a GPU adapter (CI installs mesa-vulkan-drivers)")
}

fn top(logits: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

#[test]
fn gpu_logits_match_tract_on_the_default_pack() {
    let mut scorer = gpu();
    println!("adapter: {}", scorer.adapter());
    let mut engine = Engine::new(default_pack(), profile()).unwrap();
    let context = Context { topics: vec!["travel".into()], slot: Some("sidebar".into()), hour: Some(14), ..Context::default() };
    for n in [0, 1, 1000, 10_000] {
        engine.set_catalog((0..n).map(ad).collect()).unwrap();
        scorer.load_engine(&engine).unwrap();
        assert_eq!(scorer.len(), n);
        let tract = engine.catalog_logits(&context, NOW).unwrap();
        let request = request_vector(&engine.request_side(&context, NOW).unwrap());
        let hidden = engine.pack().params.arch.hidden;
        let gpu = pollster::block_on(scorer.logits(&request[..hidden], &request[hidden..])).unwrap();
        assert_eq!(gpu.len(), n);
        let max_diff = gpu.iter().zip(&tract).map(|(g, t)| (g - t).abs()).fold(0.0f32, f32::max);
        println!("n = {n}: max |gpu - tract| = {max_diff:e}");
        assert!(max_diff <= 1e-4, "n = {n}: max abs diff {max_diff}");
        // Same top 10 unless two logits sit within the tolerance of each other at the cut.
        let k = n.min(10);
        let (gt, tt) = (top(&gpu, k), top(&tract, k));
        let close = tt.windows(2).any(|w| (tract[w[0]] - tract[w[1]]).abs() <= 2e-4);
        assert!(gt == tt || close, "n = {n}: top-{k} differs: {gt:?} vs {tt:?}");
        if n > 0 {
            let opts = RankOptions { k, ..RankOptions::at(NOW) };
            let ids = |r: Vec<hearth_core::device::rank::Ranked>| r.into_iter().map(|r| r.ad_id).collect::<Vec<_>>();
            let scored = engine.rank_scored(&context, &opts, &gpu).unwrap();
            assert!(close || ids(scored) == ids(engine.rank(&context, &opts).unwrap()));
        }
    }
}

#[test]
fn a_catalog_past_one_dispatch_dimension_is_scored_whole() {
    let mut scorer = gpu();
    let mut engine = Engine::new(default_pack(), profile()).unwrap();
    engine.set_catalog((0..1000).map(ad).collect()).unwrap();
    let context = Context::default();
    let tract = engine.catalog_logits(&context, NOW).unwrap();
    let request = request_vector(&engine.request_side(&context, NOW).unwrap());
    let hidden = engine.pack().params.arch.hidden;
    // 16 workgroups of 64 as a 7 × 3 grid: the last five groups find no ad and return.
    scorer.limit_groups_per_dimension(7);
    scorer.load_engine(&engine).unwrap();
    let gpu = pollster::block_on(scorer.logits(&request[..hidden], &request[hidden..])).unwrap();
    assert_eq!(gpu.len(), 1000);
    assert!(gpu.iter().zip(&tract).all(|(g, t)| (g - t).abs() <= 1e-4));
}

#[test]
fn bad_sizes_are_refused_without_touching_the_loaded_catalog() {
    let mut scorer = gpu();
    let (q, uc) = (vec![0.0; 3], vec![0.0; 2]);
    assert_eq!(pollster::block_on(scorer.logits(&q, &uc)), Err(GpuError::NotLoaded));
    // Rows of dim 2 + hidden 3 + bias: width 6.
    let rows: Vec<f32> = (0..6 * 5).map(|i| i as f32 * 0.1).collect();
    scorer.load(&rows, 6, 2, 3, &[1.0, -1.0, 0.5], 0.25).unwrap();
    assert!(matches!(scorer.load(&rows, 7, 2, 3, &[1.0, -1.0, 0.5], 0.0), Err(GpuError::Size { what: "ad-side row", .. })));
    assert!(matches!(scorer.load(&rows[1..], 6, 2, 3, &[1.0, -1.0, 0.5], 0.0), Err(GpuError::Size { what: "catalog side", .. })));
    assert!(matches!(scorer.load(&rows, 6, 2, 3, &[1.0], 0.0), Err(GpuError::Size { what: "w2", .. })));
    assert!(matches!(pollster::block_on(scorer.logits(&q[1..], &uc)), Err(GpuError::Size { what: "q", .. })));
    assert!(matches!(pollster::block_on(scorer.logits(&q, &[0.0])), Err(GpuError::Size { what: "user + context", .. })));
    // The five rows loaded first are still there, and scored by hand they agree.
    let (q, uc) = ([0.5, -3.0, 0.0], [1.0, -2.0]);
    let got = pollster::block_on(scorer.logits(&q, &uc)).unwrap();
    let expected: Vec<f32> = rows
        .chunks_exact(6)
        .map(|r| {
            let mlp: f32 = (0..3).map(|j| (r[2 + j] + q[j]).max(0.0) * [1.0, -1.0, 0.5][j]).sum();
            mlp + r[0] * uc[0] + r[1] * uc[1] + r[5] + 0.25
        })
        .collect();
    assert_eq!(got.len(), 5);
    assert!(got.iter().zip(&expected).all(|(g, e)| (g - e).abs() < 1e-5), "{got:?} vs {expected:?}");
}
