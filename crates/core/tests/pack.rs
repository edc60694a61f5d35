//! Model packs: a written pack loads back to the same parameters; every kind of bad pack is
//! refused with its own typed error.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use common::{ARCH, pack_bytes, spec};
use hearth_core::HearthError;
use hearth_core::model::onnx_pb::ModelProto;
use hearth_core::model::pack::{Manifest, ModelPack, sha256_hex};
use hearth_core::model::params::Params;
use prost::Message;
use serde_json::Value;

/// Replace the manifest's hash so the ONNX bytes themselves get checked.
fn rehash(manifest: &str, onnx: &[u8]) -> String {
    let mut m: Value = serde_json::from_str(manifest).unwrap();
    m["onnx_sha256"] = Value::String(sha256_hex(onnx));
    m.to_string()
}

fn edit_manifest(manifest: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut m: Value = serde_json::from_str(manifest).unwrap();
    edit(&mut m);
    m.to_string()
}

fn edit_onnx(onnx: &[u8], edit: impl FnOnce(&mut ModelProto)) -> Vec<u8> {
    let mut proto = ModelProto::decode(onnx).unwrap();
    edit(&mut proto);
    proto.encode_to_vec()
}

fn err(onnx: &[u8], manifest: &str) -> HearthError {
    ModelPack::load(onnx, manifest).expect_err("pack must be refused")
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn written_pack_loads_back_exactly() {
    let params = Params::init(ARCH, 21);
    let (onnx, manifest) = ModelPack::write(&params, &spec(), 9);
    let pack = ModelPack::load(&onnx, &manifest).unwrap();
    assert_eq!(pack.params, params);
    assert_eq!(pack.manifest.model_version, 9);
    assert_eq!(pack.manifest.features, spec());
    assert_eq!(Manifest::from_json(&manifest).unwrap(), pack.manifest);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn truncated_and_garbage_onnx_is_a_decode_error() {
    let (onnx, manifest) = pack_bytes(1);
    let truncated = &onnx[..onnx.len() / 2];
    assert!(matches!(err(truncated, &rehash(&manifest, truncated)), HearthError::OnnxDecode(_)));
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(matches!(err(&garbage, &rehash(&manifest, &garbage)), HearthError::OnnxDecode(_)));
    assert!(matches!(err(&[], &rehash(&manifest, &[])), HearthError::OnnxDecode(_)));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn hash_mismatch_is_refused_before_decoding() {
    let (mut onnx, manifest) = pack_bytes(1);
    let last = onnx.len() - 1;
    onnx[last] ^= 1;
    match err(&onnx, &manifest) {
        HearthError::HashMismatch { actual, .. } => assert_eq!(actual, sha256_hex(&onnx)),
        other => panic!("expected HashMismatch, got {other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn wrong_parameter_shape_is_a_shape_error() {
    let (onnx, manifest) = pack_bytes(1);
    let bad = edit_onnx(&onnx, |p| {
        let t = p.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "w2").unwrap();
        t.dims = vec![ARCH.hidden as i64 / 2, 2];
    });
    match err(&bad, &rehash(&manifest, &bad)) {
        HearthError::Shape { name, found, .. } => assert_eq!((name.as_str(), found), ("w2", vec![ARCH.hidden / 2, 2])),
        other => panic!("expected Shape, got {other:?}"),
    }
    let short = edit_onnx(&onnx, |p| {
        let t = p.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "b1").unwrap();
        t.raw_data.truncate(8);
    });
    assert!(matches!(err(&short, &rehash(&manifest, &short)), HearthError::Shape { name, .. } if name == "b1"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn wrong_input_shape_or_type_is_refused() {
    let (onnx, manifest) = pack_bytes(1);
    let bad = edit_onnx(&onnx, |p| {
        let g = p.graph.as_mut().unwrap();
        let i = g.input.iter().position(|v| v.name == "user_ids").unwrap();
        g.input[i] = hearth_core::model::graph::value_info(
            "user_ids",
            hearth_core::model::onnx_pb::tensor_proto::DataType::Int64,
            &[hearth_core::model::graph::Dim::Fixed(1), hearth_core::model::graph::Dim::Fixed(spec().user_slots + 1)],
        );
    });
    assert!(matches!(err(&bad, &rehash(&manifest, &bad)), HearthError::Shape { name, .. } if name == "user_ids"));
    let float_ids = edit_onnx(&onnx, |p| {
        let g = p.graph.as_mut().unwrap();
        let i = g.input.iter().position(|v| v.name == "ad_ids").unwrap();
        g.input[i] = hearth_core::model::graph::value_info(
            "ad_ids",
            hearth_core::model::onnx_pb::tensor_proto::DataType::Float,
            &[hearth_core::model::graph::Dim::Batch, hearth_core::model::graph::Dim::Fixed(spec().ad_slots)],
        );
    });
    assert!(matches!(err(&float_ids, &rehash(&manifest, &float_ids)), HearthError::Graph(_)));
    let no_cut = edit_onnx(&onnx, |p| {
        let g = p.graph.as_mut().unwrap();
        for n in &mut g.node {
            for o in n.output.iter_mut().chain(n.input.iter_mut()) {
                if o == "ad_side" {
                    *o = "renamed".into();
                }
            }
        }
    });
    assert!(matches!(err(&no_cut, &rehash(&manifest, &no_cut)), HearthError::Graph(m) if m.contains("ad_side")));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn non_finite_weights_are_refused() {
    let (onnx, manifest) = pack_bytes(1);
    for (value, index) in [(f32::NAN, 5usize), (f32::INFINITY, 0), (f32::NEG_INFINITY, 17)] {
        let bad = edit_onnx(&onnx, |p| {
            let t = p.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == "emb").unwrap();
            t.raw_data[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
        });
        match err(&bad, &rehash(&manifest, &bad)) {
            HearthError::NonFinite { name, index: at } => assert_eq!((name.as_str(), at), ("emb", index)),
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
}

/// Found by the tract-onnx differential test: hearth-core took the first of two initializers
/// named alike, tract-onnx the last, so the same bytes scored differently.
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn an_initializer_defined_twice_is_refused() {
    let (onnx, manifest) = pack_bytes(1);
    let twice = edit_onnx(&onnx, |p| {
        let graph = p.graph.as_mut().unwrap();
        let mut second = graph.initializer.iter().find(|t| t.name == "b2").unwrap().clone();
        second.raw_data = 7.0f32.to_le_bytes().to_vec();
        graph.initializer.push(second);
    });
    match err(&twice, &rehash(&manifest, &twice)) {
        HearthError::Graph(m) => assert!(m.contains("`b2` is defined twice"), "{m}"),
        other => panic!("expected Graph, got {other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_manifests_are_refused() {
    let (onnx, manifest) = pack_bytes(1);
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("format", Box::new(|m| m["format"] = "zip".into())),
        ("version", Box::new(|m| m["format_version"] = 2.into())),
        ("hash name", Box::new(|m| m["features"]["hash"] = "md5".into())),
        ("buckets", Box::new(|m| m["features"]["buckets"] = 1.into())),
        ("dim", Box::new(|m| m["embedding_dim"] = 0.into())),
        ("layout", Box::new(|m| m["parameters"][2]["offset"] = 1.into())),
        ("sha", Box::new(|m| m["onnx_sha256"] = "abc".into())),
        ("unknown field", Box::new(|m| m["extra"] = 1.into())),
        (
            "missing field",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("hidden_dim");
            }),
        ),
    ];
    for (what, edit) in cases {
        let bad = edit_manifest(&manifest, edit);
        assert!(matches!(err(&onnx, &bad), HearthError::Manifest(_)), "{what}");
    }
    assert!(matches!(err(&onnx, "{"), HearthError::Manifest(_)));
    // A hostile manifest may not ask for gigabytes of parameters.
    let huge = edit_manifest(&manifest, |m| {
        m["features"]["buckets"] = (1u32 << 22).into();
        m["embedding_dim"] = 256.into();
    });
    assert!(matches!(err(&onnx, &huge), HearthError::TooLarge { what: "model parameters", .. }));
    // A manifest describing another architecture than the file is a shape error.
    let other = edit_manifest(&manifest, |m| {
        m["hidden_dim"] = (ARCH.hidden + 1).into();
        let layout = hearth_core::model::params::Arch { hidden: ARCH.hidden + 1, ..ARCH }.layout();
        m["parameters"] = serde_json::to_value(layout).unwrap();
    });
    assert!(matches!(err(&onnx, &other), HearthError::Shape { .. }));
}
