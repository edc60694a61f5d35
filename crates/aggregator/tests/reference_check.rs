//! The operator's initial pack must also load through tract-onnx, the reference ONNX loader,
//! and score what hearth-core scores: a pack hearth-core alone would take but tract-onnx refuses
//! or reads differently stops the aggregator at start.
mod common;

use common::*;
use hearth_aggregator::aggregate::{Keeper, StartError};
use hearth_aggregator::config::Config;
use hearth_aggregator::metrics::Metrics;
use hearth_aggregator::store::Database;
use hearth_core::HearthError;
use hearth_core::model::graph::{Dim, value_info};
use hearth_core::model::onnx_pb::{ModelProto, TensorProto, tensor_proto::DataType};
use hearth_core::model::pack::{Manifest, ModelPack, sha256_hex};
use hearth_core::model::pack_dir::{self, PackFiles};
use hearth_core::model::scorer::Scorer;
use hearth_onnx_reference::Disagreement;
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The small test pack with its graph edited by `edit`, rehashed, written to `dir/tampered`;
/// hearth-core on its own still loads and scores it.
fn tampered(dir: &Path, edit: impl FnOnce(&mut ModelProto)) -> PathBuf {
    let files = PackFiles::read(&small_pack(dir)).unwrap();
    let mut proto = files.load().unwrap().proto;
    edit(&mut proto);
    let onnx = proto.encode_to_vec();
    let mut manifest = Manifest::from_json(&files.manifest).unwrap();
    manifest.onnx_sha256 = sha256_hex(&onnx);
    let manifest = serde_json::to_string_pretty(&manifest).unwrap();
    let pack = ModelPack::load(&onnx, &manifest).expect("hearth-core loads the tampered pack");
    Scorer::new(&pack).expect("hearth-core's importer takes the tampered graph");
    let out = dir.join("tampered");
    pack_dir::write(&out, &onnx, &manifest).unwrap();
    out
}

/// `init` (where the initial pack is checked), then the keeper's start on the new store.
fn start(dir: &Path, initial_model: PathBuf) -> Result<(), StartError> {
    let config = Config { database: Database::Sqlite(dir.join("hearth.db")), initial_model, ..Config::default() };
    hearth_aggregator::init(&config)?;
    Keeper::start(config, Arc::new(Metrics::default())).map(|_| ())
}

#[test]
fn an_honest_pack_passes_the_reference_check() {
    let dir = scratch("reference-honest");
    start(&dir, small_pack(&dir)).expect("the small pack starts");
}

/// A `value_info` entry declaring an intermediate value with a shape the graph does not compute:
/// hearth-core's importer never reads `value_info`; tract-onnx does and cannot reconcile it.
#[test]
fn a_pack_tract_onnx_cannot_load_is_refused_at_start() {
    let dir = scratch("reference-refused");
    let pack = tampered(&dir, |m| {
        let g = m.graph.as_mut().unwrap();
        let hidden = g.initializer.iter().find(|t| t.name == "b1").unwrap().dims[0] as usize;
        g.value_info.push(value_info("hidden", DataType::Float, &[Dim::Batch, Dim::Fixed(hidden + 1)]));
    });
    match start(&dir, pack) {
        Err(e @ StartError::Reference { source: Disagreement::Refused(_), .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("tract-onnx") && msg.contains("tampered"), "{msg}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(()) => panic!("the aggregator started on a pack tract-onnx cannot load"),
    }
}

/// A second initializer named `b2` with another value: tract-onnx takes the last, and before
/// hearth-core refused duplicate names it took the first, so the two scored the same bytes
/// differently and only this reference check stopped the pack. hearth-core now refuses it itself;
/// either way the aggregator must not start. (The reference's own tests cover a disagreement in
/// logits: `compare_names_the_first_logit_that_differs`.)
#[test]
fn a_pack_with_an_initializer_defined_twice_is_refused_at_start() {
    let dir = scratch("reference-twice");
    let files = PackFiles::read(&small_pack(&dir)).unwrap();
    let mut proto = files.load().unwrap().proto;
    let g = proto.graph.as_mut().unwrap();
    let b2 = g.initializer.iter().find(|t| t.name == "b2").unwrap().clone();
    g.initializer.push(TensorProto { raw_data: 0.5f32.to_le_bytes().to_vec(), ..b2 });
    let onnx = proto.encode_to_vec();
    let mut manifest = Manifest::from_json(&files.manifest).unwrap();
    manifest.onnx_sha256 = sha256_hex(&onnx);
    let out = dir.join("twice");
    pack_dir::write(&out, &onnx, &serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    match start(&dir, out) {
        Err(StartError::Model(HearthError::Graph(m))) => assert!(m.contains("`b2` is defined twice"), "{m}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(()) => panic!("the aggregator started on a pack with a name defined twice"),
    }
}
