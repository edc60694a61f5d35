//! A model pack is `model.onnx` plus `manifest.json`. Loading checks the hash, the declared
//! shapes and every parameter before anything runs.

use crate::error::{HearthError, Result};
use crate::model::features::{FeatureSpec, HASH_NAME};
use crate::model::graph::{self, AD_SIDE, Dim, LOGITS};
use crate::model::onnx_pb::{
    ModelProto, TensorProto, tensor_proto::DataType, tensor_shape_proto::dimension::Value as DimValue, type_proto,
};
use crate::model::params::{Arch, MAX_PARAMS, ParamSpec, Params};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's `format` tag; any other is refused.
pub const FORMAT: &str = "hearth-model-pack";
/// The manifest format version this build writes and the only one it loads.
pub const FORMAT_VERSION: u32 = 1;

/// Bounds that keep a hostile manifest from asking for absurd allocations.
const MAX_BUCKETS: u32 = 1 << 22;
const MAX_DIM: usize = 256;
const MAX_HIDDEN: usize = 1024;
const MAX_SLOTS: usize = 1024;

/// `manifest.json`: what the pack is and how its inputs are built. Validated as a whole by
/// [`Manifest::from_json`], so a loaded manifest's sizes are bounded and its layout is the
/// architecture's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Which model this is; round tasks and updates name it. Also written into the ONNX
    /// `model_version`.
    pub model_version: u64,
    /// How features are hashed and how many slots each input has.
    pub features: FeatureSpec,
    /// Embedding width d, 1..=256.
    pub embedding_dim: usize,
    /// Hidden units h, 1..=1024.
    pub hidden_dim: usize,
    /// Flat parameter layout: name, shape and offset of each tensor.
    pub parameters: Vec<ParamSpec>,
    /// Lower-case hex sha256 of `model.onnx`.
    pub onnx_sha256: String,
}

impl Manifest {
    /// Parses and validates a manifest: format and version, hash name, bucket count 2..=2^22,
    /// dimensions and slot counts in bounds, at most [`MAX_PARAMS`] parameters, a layout equal to
    /// the architecture's and a 64-hex-digit hash. Any failure is `Manifest` (or `TooLarge`).
    pub fn from_json(json: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(json).map_err(|e| HearthError::Manifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    /// The architecture the manifest describes.
    pub fn arch(&self) -> Arch {
        Arch { buckets: self.features.buckets as usize, dim: self.embedding_dim, hidden: self.hidden_dim }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(HearthError::Manifest(m));
        if self.format != FORMAT {
            return bad(format!("format {:?} is not {FORMAT:?}", self.format));
        }
        if self.format_version != FORMAT_VERSION {
            return bad(format!("format_version {} is not {FORMAT_VERSION}", self.format_version));
        }
        let f = &self.features;
        if f.hash != HASH_NAME {
            return bad(format!("unknown feature hash {:?}", f.hash));
        }
        if !(2..=MAX_BUCKETS).contains(&f.buckets) {
            return bad(format!("bucket count {} outside 2..={MAX_BUCKETS}", f.buckets));
        }
        for (what, v, max) in [
            ("embedding_dim", self.embedding_dim, MAX_DIM),
            ("hidden_dim", self.hidden_dim, MAX_HIDDEN),
            ("user_slots", f.user_slots, MAX_SLOTS),
            ("context_slots", f.context_slots, MAX_SLOTS),
            ("ad_slots", f.ad_slots, MAX_SLOTS),
        ] {
            if !(1..=max).contains(&v) {
                return bad(format!("{what} {v} outside 1..={max}"));
            }
        }
        let total = self.arch().layout().iter().map(ParamSpec::len).sum::<usize>();
        if total > MAX_PARAMS {
            return Err(HearthError::TooLarge { what: "model parameters", found: total, limit: MAX_PARAMS });
        }
        if self.parameters != self.arch().layout() {
            return bad("parameter layout does not match the architecture".into());
        }
        if self.onnx_sha256.len() != 64 || !self.onnx_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("onnx_sha256 is not 64 hex digits".into());
        }
        Ok(())
    }
}

/// Lower-case hex sha256, as the manifest's `onnx_sha256` records it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded, validated pack.
#[derive(Debug, Clone)]
pub struct ModelPack {
    /// The validated manifest.
    pub manifest: Manifest,
    /// The parameters read from the graph's initializers, checked against the manifest's layout.
    pub params: Params,
    /// The decoded graph, which the scorer cuts and imports into tract.
    pub proto: ModelProto,
}

impl ModelPack {
    /// Writes a pack from parameters: the ONNX bytes and the manifest that describes them.
    pub fn write(params: &Params, features: &FeatureSpec, model_version: u64) -> (Vec<u8>, String) {
        let onnx = graph::write_onnx(params, features, model_version);
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            model_version,
            features: features.clone(),
            embedding_dim: params.arch.dim,
            hidden_dim: params.arch.hidden,
            parameters: params.layout.clone(),
            onnx_sha256: sha256_hex(&onnx),
        };
        let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        (onnx, json)
    }

    /// Checks a downloaded or stored pack before anything runs: the manifest, the ONNX hash
    /// (`HashMismatch`), the protobuf (`OnnxDecode`), the graph's inputs and output (`Graph`,
    /// `Shape`), that a node produces `ad_side`, and every parameter's shape and finiteness.
    pub fn load(onnx: &[u8], manifest_json: &str) -> Result<ModelPack> {
        let manifest = Manifest::from_json(manifest_json)?;
        let actual = sha256_hex(onnx);
        if actual != manifest.onnx_sha256.to_ascii_lowercase() {
            return Err(HearthError::HashMismatch { expected: manifest.onnx_sha256.clone(), actual });
        }
        let proto = ModelProto::decode(onnx).map_err(|e| HearthError::OnnxDecode(e.to_string()))?;
        let graph = proto.graph.as_ref().ok_or_else(|| HearthError::OnnxDecode("no graph".into()))?;
        check_io(&manifest, &proto)?;
        // ONNX names are single assignments; with a name given twice, one runtime takes the first
        // value and another the last (tract-onnx does), so a pack could score differently in
        // hearth-core than anywhere else.
        let mut names = std::collections::HashSet::new();
        if let Some(t) = graph.initializer.iter().find(|t| !names.insert(t.name.as_str())) {
            return Err(HearthError::Graph(format!("initializer `{}` is defined twice", t.name)));
        }
        if !graph.node.iter().any(|n| n.output.iter().any(|o| o == AD_SIDE)) {
            return Err(HearthError::Graph(format!("no node produces `{AD_SIDE}`")));
        }
        let mut values = Vec::with_capacity(manifest.parameters.iter().map(ParamSpec::len).sum());
        for spec in &manifest.parameters {
            let t = graph
                .initializer
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| HearthError::Graph(format!("missing parameter `{}`", spec.name)))?;
            values.extend(float_values(t, spec)?);
        }
        let params = Params::new(manifest.arch(), values)?;
        Ok(ModelPack { manifest, params, proto })
    }
}

/// Graph inputs and output must be exactly the declared ones, with the declared types and shapes.
fn check_io(manifest: &Manifest, proto: &ModelProto) -> Result<()> {
    let graph = proto.graph.as_ref().expect("checked by caller");
    let declared = graph::declared_inputs(&manifest.features, manifest.embedding_dim);
    let initializer_names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph.input.iter().filter(|i| !initializer_names.contains(&i.name.as_str())).collect();
    if inputs.len() != declared.len() {
        return Err(HearthError::Graph(format!("{} graph inputs, expected {}", inputs.len(), declared.len())));
    }
    let expected_outputs = [(LOGITS, DataType::Float, vec![Dim::Batch])];
    if graph.output.len() != 1 {
        return Err(HearthError::Graph(format!("{} graph outputs, expected 1", graph.output.len())));
    }
    for (name, elem, dims) in declared.iter().chain(expected_outputs.iter()) {
        let vi = graph
            .input
            .iter()
            .chain(&graph.output)
            .find(|v| v.name == *name)
            .ok_or_else(|| HearthError::Graph(format!("missing graph input/output `{name}`")))?;
        let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(HearthError::Graph(format!("`{name}` is not a tensor")));
        };
        if t.elem_type != *elem as i32 {
            return Err(HearthError::Graph(format!("`{name}` has element type {}, expected {elem:?}", t.elem_type)));
        }
        let found: Vec<Option<Dim>> = t
            .shape
            .iter()
            .flat_map(|s| &s.dim)
            .map(|d| match &d.value {
                Some(DimValue::DimValue(v)) => usize::try_from(*v).ok().map(Dim::Fixed),
                Some(DimValue::DimParam(p)) if p == graph::BATCH => Some(Dim::Batch),
                _ => None,
            })
            .collect();
        if found != dims.iter().copied().map(Some).collect::<Vec<_>>() {
            let show = |d: &Option<Dim>| match d {
                Some(Dim::Fixed(n)) => *n,
                _ => 0,
            };
            return Err(HearthError::Shape {
                name: name.to_string(),
                expected: dims.iter().map(|d| show(&Some(*d))).collect(),
                found: found.iter().map(show).collect(),
            });
        }
    }
    Ok(())
}

/// An initializer's values, checked against the layout's shape and for finiteness.
fn float_values(t: &TensorProto, spec: &ParamSpec) -> Result<Vec<f32>> {
    let found: Vec<usize> = t.dims.iter().map(|d| usize::try_from(*d).unwrap_or(usize::MAX)).collect();
    if found != spec.shape {
        return Err(HearthError::Shape { name: spec.name.clone(), expected: spec.shape.clone(), found });
    }
    if t.data_type != DataType::Float as i32 {
        return Err(HearthError::Graph(format!("parameter `{}` is not float32", spec.name)));
    }
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != spec.len() * 4 {
            return Err(HearthError::Shape {
                name: spec.name.clone(),
                expected: vec![spec.len()],
                found: vec![t.raw_data.len() / 4],
            });
        }
        t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        t.float_data.clone()
    };
    if values.len() != spec.len() {
        return Err(HearthError::Shape { name: spec.name.clone(), expected: vec![spec.len()], found: vec![values.len()] });
    }
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(HearthError::NonFinite { name: spec.name.clone(), index });
    }
    Ok(values)
}
