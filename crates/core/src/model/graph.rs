//! Writes the starter architecture as an ONNX graph (opset 13) with the parameters as
//! initializers. The graph is cut in two at the tensor `ad_side`: everything upstream depends
//! only on the ad and the model, so a shell can compute it once per catalog and model version.

use crate::model::features::FeatureSpec;
use crate::model::onnx_pb::{
    self as pb, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension::Value as DimValue, type_proto,
};
use crate::model::params::Params;
use prost::Message;

/// The `ai.onnx` opset version the written graph declares; the importer also reads later ones
/// ([`OPSETS`](crate::model::tract_import::OPSETS)).
pub const OPSET: i64 = 13;
/// The symbolic candidate count.
pub const BATCH: &str = "N";
/// The tensor the graph is cut at: `[N, dim + hidden + 1]` ad-side rows (see
/// [`Arch::ad_side_width`](crate::model::params::Arch::ad_side_width)).
pub const AD_SIDE: &str = "ad_side";
/// The graph's one output: `[N]` float logits, one per candidate ad.
pub const LOGITS: &str = "logits";
/// Graph inputs: ad side first, then the request side.
pub const AD_INPUTS: [&str; 2] = ["ad_ids", "ad_w"];
/// Graph inputs of the request side, in the order the scorer feeds them.
pub const REQUEST_INPUTS: [&str; 5] = ["user_ids", "user_w", "local_u", "ctx_ids", "ctx_w"];

/// A tensor dimension: fixed, or the candidate batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// The symbolic candidate count [`BATCH`].
    Batch,
}

/// A tensor-typed graph input or output declaration with element type `elem` and shape `dims`.
pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n as i64),
                Dim::Batch => DimValue::DimParam(BATCH.into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

/// The declared inputs of a pack's graph, by name, with element type and shape.
pub fn declared_inputs(spec: &FeatureSpec, dim: usize) -> Vec<(&'static str, DataType, Vec<Dim>)> {
    use Dim::{Batch, Fixed};
    vec![
        ("user_ids", DataType::Int64, vec![Fixed(1), Fixed(spec.user_slots)]),
        ("user_w", DataType::Float, vec![Fixed(1), Fixed(spec.user_slots)]),
        ("local_u", DataType::Float, vec![Fixed(1), Fixed(dim)]),
        ("ctx_ids", DataType::Int64, vec![Fixed(1), Fixed(spec.context_slots)]),
        ("ctx_w", DataType::Float, vec![Fixed(1), Fixed(spec.context_slots)]),
        ("ad_ids", DataType::Int64, vec![Batch, Fixed(spec.ad_slots)]),
        ("ad_w", DataType::Float, vec![Batch, Fixed(spec.ad_slots)]),
    ]
}

#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Builder {
    /// Adds a node whose single output is named `out`; returns `out` for chaining.
    fn op(&mut self, op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> String {
        self.nodes.push(node(op, inputs, out, attrs));
        out.into()
    }

    fn float(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    fn ints(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// Weighted sum of `table` rows: ids [M,S], w [M,S] → [M, width].
    fn pool(&mut self, table: &str, ids: &str, w: &str, width: usize, out: &str) -> String {
        let gathered = self.op("Gather", &[table, ids], &format!("{out}_rows"), vec![]);
        let w3 = self.op("Unsqueeze", &[w, "axis1"], &format!("{out}_w3"), vec![]);
        let summed = self.op("MatMul", &[&w3, &gathered], &format!("{out}_sum"), vec![]);
        let shape = self.ints(&format!("{out}_shape"), &[-1, width as i64]);
        self.op("Reshape", &[&summed, &shape], out, vec![])
    }

    fn slice(&mut self, data: &str, start: usize, end: usize, out: &str) -> String {
        let s = self.ints(&format!("{out}_start"), &[start as i64]);
        let e = self.ints(&format!("{out}_end"), &[end as i64]);
        self.op("Slice", &[data, &s, &e, "axis1"], out, vec![])
    }
}

/// A default-domain node with one output, named after that output.
pub fn node(op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        name: out.into(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

/// An `INTS` node attribute (Transpose's `perm`).
pub fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: values.to_vec(), ..Default::default() }
}

/// An `INT` node attribute (Concat's `axis`).
pub fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: value, ..Default::default() }
}

/// The starter model as ONNX bytes.
pub fn write_onnx(params: &Params, spec: &FeatureSpec, model_version: u64) -> Vec<u8> {
    let (d, h) = (params.arch.dim, params.arch.hidden);
    let mut b = Builder::default();
    for p in &params.layout {
        b.float(&p.name, &p.shape, params.get(&p.name));
    }
    b.ints("axis1", &[1]);

    // Ad side: pooled embedding, its first-layer projection, its linear bias.
    let a = b.pool("emb", "ad_ids", "ad_w", d, "ad_emb");
    let a_proj = b.op("MatMul", &[&a, "w1_ad"], "ad_proj", vec![]);
    let a_bias = b.pool("bias", "ad_ids", "ad_w", 1, "ad_bias");
    b.op("Concat", &[&a, &a_proj, &a_bias], AD_SIDE, vec![int_attr("axis", 1)]);

    // Request side.
    let a = b.slice(AD_SIDE, 0, d, "a");
    let a_proj = b.slice(AD_SIDE, d, d + h, "a_proj");
    let a_bias = b.slice(AD_SIDE, d + h, d + h + 1, "a_bias");
    let u = b.pool("emb", "user_ids", "user_w", d, "user_pool");
    let uu = b.op("Add", &[&u, "local_u"], "user_vec", vec![]);
    let c = b.pool("emb", "ctx_ids", "ctx_w", d, "ctx_vec");
    let qu = b.op("MatMul", &[&uu, "w1_user"], "q_user", vec![]);
    let qc = b.op("MatMul", &[&c, "w1_ctx"], "q_ctx", vec![]);
    let q = b.op("Add", &[&qu, &qc], "q_sum", vec![]);
    let q = b.op("Add", &[&q, "b1"], "q", vec![]);
    let pre = b.op("Add", &[&a_proj, &q], "hidden_pre", vec![]);
    let hid = b.op("Relu", &[&pre], "hidden", vec![]);
    let mlp = b.op("MatMul", &[&hid, "w2"], "mlp", vec![]);
    let uc = b.op("Add", &[&uu, &c], "user_ctx", vec![]);
    let uct = b.op("Transpose", &[&uc], "user_ctx_t", vec![ints_attr("perm", &[1, 0])]);
    let dots = b.op("MatMul", &[&a, &uct], "dots", vec![]);
    let s = b.op("Add", &[&mlp, &dots], "s1", vec![]);
    let s = b.op("Add", &[&s, &a_bias], "s2", vec![]);
    let s = b.op("Add", &[&s, "b2"], "s3", vec![]);
    let flat = b.ints("flat", &[-1]);
    b.op("Reshape", &[&s, &flat], LOGITS, vec![]);

    let inputs = declared_inputs(spec, d).into_iter().map(|(n, t, dims)| value_info(n, t, &dims)).collect();
    let graph = GraphProto {
        name: "hearth_ctr".into(),
        node: b.nodes,
        initializer: b.initializers,
        input: inputs,
        output: vec![value_info(LOGITS, DataType::Float, &[Dim::Batch])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "hearth".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: model_version as i64,
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}
