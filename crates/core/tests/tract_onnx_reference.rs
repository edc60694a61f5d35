//! tract-onnx, the reference loader: every pack Hearth writes must load through the full
//! `tract-onnx` front end and score what hearth-core scores through its slim importer, within
//! 1e-5 (the comparison is hearth-onnx-reference's, shared with the aggregator's start check).
//! Native only: tract-onnx is never built for the browser.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use hearth_core::model::features::{FeatureSpec, HASH_NAME};
use hearth_core::model::pack::ModelPack;
use hearth_core::model::pack_dir::PackFiles;
use hearth_core::model::params::{Arch, Gaussian, Params};
use hearth_core::model::scorer::{Scorer, WholeGraph};
use hearth_onnx_reference::{BATCHES, Case, Reference, check_pack, compare};
use std::path::Path;

/// Random packs per run.
const PACKS: u64 = 24;

/// A pack of random architecture, feature spec and parameters (all of them drawn, biases
/// included, as after training; `Params::init` leaves the biases at zero).
fn random_pack(rng: &mut Gaussian) -> (Vec<u8>, ModelPack) {
    let mut draw = |lo: u64, hi: u64| (lo + rng.next_u64() % (hi - lo + 1)) as usize;
    let arch = Arch { buckets: draw(2, 700), dim: draw(1, 24), hidden: draw(1, 40) };
    let spec = FeatureSpec {
        hash: HASH_NAME.into(),
        seed: draw(0, 1 << 20) as u64,
        buckets: arch.buckets as u32,
        user_slots: draw(1, 20),
        context_slots: draw(1, 8),
        ad_slots: draw(1, 12),
    };
    let version = draw(1, 1000) as u64;
    let mut params = Params::init(arch, rng.next_u64());
    for v in &mut params.values {
        *v += 0.3 * rng.normal() as f32;
    }
    let (onnx, manifest) = ModelPack::write(&params, &spec, version);
    let pack = ModelPack::load(&onnx, &manifest).expect("a written pack loads");
    (onnx, pack)
}

/// The pack's check as the aggregator runs it (hearth-core's cut graph against tract-onnx),
/// then the whole graph through the slim importer against tract-onnx on the same inputs.
fn assert_matches_reference(onnx: &[u8], pack: &ModelPack, seed: u64, what: &str) {
    let scorer = Scorer::new(pack).unwrap_or_else(|e| panic!("{what}: hearth-core refuses it: {e}"));
    check_pack(pack, &scorer, onnx, seed).unwrap_or_else(|e| panic!("{what}: {e}"));
    let whole = WholeGraph::new(pack).unwrap();
    let reference = Reference::load(onnx).unwrap();
    let mut rng = Gaussian::new(seed ^ 0x5eed);
    for ads in BATCHES {
        let case = Case::random(pack, &mut rng, ads);
        let got = whole.logits(&case.request, &case.ad_ids, &case.ad_w).unwrap();
        let want = case.reference_logits(&reference).unwrap();
        compare(&got, &want).unwrap_or_else(|e| panic!("{what}, whole graph, {ads} ads: {e}"));
    }
}

#[test]
fn random_packs_score_the_same_in_tract_onnx() {
    let mut rng = Gaussian::new(0x0a11);
    for i in 0..PACKS {
        let (onnx, pack) = random_pack(&mut rng);
        let m = &pack.manifest;
        let what = format!("pack {i} (dim {}, hidden {}, features {:?})", m.embedding_dim, m.hidden_dim, m.features);
        assert_matches_reference(&onnx, &pack, i, &what);
    }
}

#[test]
fn the_shipped_packs_score_the_same_in_tract_onnx() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    for name in ["default", "demo"] {
        let files = PackFiles::read(&root.join(name)).unwrap();
        assert_matches_reference(&files.onnx, &files.load().unwrap(), 7, &format!("models/{name}"));
    }
}

#[test]
fn the_test_packs_score_the_same_in_tract_onnx() {
    for seed in 0..4 {
        let (onnx, _) = common::pack_bytes(seed);
        assert_matches_reference(&onnx, &common::pack(seed), seed, &format!("common::pack({seed})"));
    }
}
