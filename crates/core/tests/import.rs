//! The ONNX → tract-core importer: each operator computes what ONNX specifies on small graphs
//! checked by hand, and every graph outside what it supports is refused with a typed
//! `HearthError::Graph` naming the culprit, never a panic.

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod common;

use hearth_core::HearthError;
use hearth_core::model::graph::{Dim, int_attr, ints_attr, node, value_info};
use hearth_core::model::onnx_pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto, tensor_proto::DataType,
};
use hearth_core::model::tract_import::typed_model;
use tract_core::prelude::*;

fn ints(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn f32_input(name: &str, dims: &[Dim]) -> ValueInfoProto {
    value_info(name, DataType::Float, dims)
}

fn model(inputs: Vec<ValueInfoProto>, initializer: Vec<TensorProto>, node: Vec<NodeProto>, out: &str) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(GraphProto {
            name: "t".into(),
            node,
            initializer,
            input: inputs,
            output: vec![ValueInfoProto { name: out.into(), ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `m` on f32 inputs; returns the single output's shape and values.
fn run(m: &ModelProto, inputs: &[(&[usize], Vec<f32>)]) -> (Vec<usize>, Vec<f32>) {
    let plan = typed_model(m).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let inputs = inputs.iter().map(|(s, v)| Tensor::from_shape(s, v).unwrap().into()).collect();
    let out = plan.run(inputs).unwrap();
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    (view.shape().to_vec(), view.iter().copied().collect())
}

/// `0, 1, 2, ...` as f32.
fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

/// The refusal message; fails the test on acceptance or on any other error kind.
fn refused(m: &ModelProto) -> String {
    match typed_model(m) {
        Err(HearthError::Graph(msg)) => msg,
        Err(other) => panic!("expected HearthError::Graph, got {other:?}"),
        Ok(_) => panic!("graph was accepted"),
    }
}

fn assert_refused(m: &ModelProto, mentions: &[&str]) {
    let msg = refused(m);
    for word in mentions {
        assert!(msg.contains(word), "refusal {msg:?} does not mention {word:?}");
    }
}

use Dim::{Batch, Fixed};

// ---------------------------------------------------------------------------------------------
// What the supported operators compute

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn transpose_follows_onnx_perm() {
    // y[i, j, k] = x[j, k, i] for perm [2, 0, 1].
    let m = model(
        vec![f32_input("x", &[Fixed(2), Fixed(3), Fixed(4)])],
        vec![],
        vec![node("Transpose", &["x"], "y", vec![ints_attr("perm", &[2, 0, 1])])],
        "y",
    );
    let x = iota(24);
    let (shape, y) = run(&m, &[(&[2, 3, 4], x.clone())]);
    assert_eq!(shape, vec![4, 2, 3]);
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                assert_eq!(y[i * 6 + j * 3 + k], x[j * 12 + k * 4 + i]);
            }
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn slice_counts_negative_bounds_from_the_end_and_clamps() {
    // Columns -3.. of a [2, 5]: 2, 3, 4; the end is "to the end" as exporters write it.
    let m = model(
        vec![f32_input("x", &[Batch, Fixed(5)])],
        vec![ints("s", &[-3]), ints("e", &[i64::MAX]), ints("a", &[-1]), ints("st", &[1])],
        vec![node("Slice", &["x", "s", "e", "a", "st"], "y", vec![])],
        "y",
    );
    let (shape, y) = run(&m, &[(&[2, 5], iota(10))]);
    assert_eq!(shape, vec![2, 3]);
    assert_eq!(y, vec![2., 3., 4., 7., 8., 9.]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn matmul_broadcasts_batches_and_adds_broadcast() {
    // a [N, 1, 2] @ b [2, 3] → [N, 1, 3]; then + c [3].
    let b = [1., 2., 3., 4., 5., 6.];
    let m = model(
        vec![f32_input("a", &[Batch, Fixed(1), Fixed(2)])],
        vec![floats("b", &[2, 3], &b), floats("c", &[3], &[100., 200., 300.])],
        vec![node("MatMul", &["a", "b"], "p", vec![]), node("Add", &["p", "c"], "y", vec![])],
        "y",
    );
    let a = [1., 1., 2., -1.];
    let (shape, y) = run(&m, &[(&[2, 1, 2], a.to_vec())]);
    assert_eq!(shape, vec![2, 1, 3]);
    assert_eq!(y, vec![105., 207., 309., 98., 199., 300.]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn gather_unsqueeze_reshape_concat_relu_compose() {
    // Rows 2 and 0 of a table, weighted by w, pooled, reshaped with 0 and -1, and a relu'd
    // copy concatenated alongside.
    let table = [1., -1., 2., -2., 3., -3.];
    let m = model(
        vec![value_info("ids", DataType::Int64, &[Batch, Fixed(2)]), f32_input("w", &[Batch, Fixed(2)])],
        vec![floats("t", &[3, 2], &table), ints("ax", &[-2]), ints("shape", &[0, -1])],
        vec![
            node("Gather", &["t", "ids"], "rows", vec![int_attr("axis", 0)]),
            node("Unsqueeze", &["w", "ax"], "w3", vec![]),
            node("MatMul", &["w3", "rows"], "sum", vec![]),
            node("Reshape", &["sum", "shape"], "pooled", vec![]),
            node("Relu", &["pooled"], "pos", vec![]),
            node("Concat", &["pooled", "pos"], "y", vec![int_attr("axis", -1)]),
        ],
        "y",
    );
    let plan = typed_model(&m).unwrap().into_optimized().unwrap().into_runnable().unwrap();
    let ids = Tensor::from_shape(&[1, 2], &[2i64, 0]).unwrap();
    let w = Tensor::from_shape(&[1, 2], &[0.5f32, 2.0]).unwrap();
    let out = plan.run(tvec![ids.into(), w.into()]).unwrap();
    let view = out[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(view.shape(), &[1, 4]);
    // 0.5 * (3, -3) + 2 * (1, -1) = (3.5, -3.5)
    assert_eq!(view.iter().copied().collect::<Vec<_>>(), vec![3.5, -3.5, 3.5, 0.0]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_pack_graph_imports_with_one_batch_symbol() {
    let pack = common::pack(1);
    let typed = typed_model(&pack.proto).unwrap();
    assert_eq!(typed.inputs.len(), 7);
    let out = typed.outlet_fact(typed.outputs[0]).unwrap();
    assert_eq!(out.shape.rank(), 1);
    let n = typed.symbols.get("N").expect("the batch symbol");
    assert_eq!(out.shape[0], TDim::from(n.clone()));
    for (i, input) in typed.inputs.iter().enumerate().skip(5) {
        assert_eq!(typed.outlet_fact(*input).unwrap().shape[0], TDim::from(n.clone()), "ad input {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn unknown_operator_is_refused_by_name() {
    let m = model(vec![f32_input("x", &[Batch, Fixed(3)])], vec![], vec![node("Softmax", &["x"], "probs", vec![])], "probs");
    assert_refused(&m, &["probs", "Softmax"]);
    let mut other_domain = node("Relu", &["x"], "y", vec![]);
    other_domain.domain = "com.microsoft".into();
    let m = model(vec![f32_input("x", &[Batch, Fixed(3)])], vec![], vec![other_domain], "y");
    assert_refused(&m, &["`y`", "com.microsoft"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn gather_on_a_non_constant_table_is_refused() {
    let m = model(
        vec![f32_input("table", &[Fixed(4), Fixed(2)]), value_info("ids", DataType::Int64, &[Batch, Fixed(3)])],
        vec![],
        vec![node("Gather", &["table", "ids"], "rows", vec![])],
        "rows",
    );
    assert_refused(&m, &["`rows`", "table", "constant"]);
    // A computed table is not constant either.
    let m = model(
        vec![value_info("ids", DataType::Int64, &[Batch, Fixed(3)])],
        vec![floats("t", &[4, 2], &iota(8))],
        vec![node("Relu", &["t"], "t2", vec![]), node("Gather", &["t2", "ids"], "rows", vec![])],
        "rows",
    );
    assert_refused(&m, &["`rows`", "t2"]);
    // Other axes and index types are outside what the importer supports.
    let m = model(
        vec![value_info("ids", DataType::Int64, &[Batch, Fixed(3)])],
        vec![floats("t", &[4, 2], &iota(8))],
        vec![node("Gather", &["t", "ids"], "rows", vec![int_attr("axis", 1)])],
        "rows",
    );
    assert_refused(&m, &["`rows`", "axis"]);
    let m = model(
        vec![value_info("ids", DataType::Int32, &[Batch, Fixed(3)])],
        vec![floats("t", &[4, 2], &iota(8))],
        vec![node("Gather", &["t", "ids"], "rows", vec![])],
        "rows",
    );
    assert_refused(&m, &["`rows`", "i64"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn dangling_names_are_refused() {
    let x = || vec![f32_input("x", &[Batch, Fixed(3)])];
    let m = model(x(), vec![], vec![node("Add", &["x", "nowhere"], "y", vec![])], "y");
    assert_refused(&m, &["`y`", "nowhere"]);
    // A node may only read what an earlier node computed.
    let m = model(x(), vec![], vec![node("Relu", &["later"], "y", vec![]), node("Relu", &["x"], "later", vec![])], "y");
    assert_refused(&m, &["`y`", "later"]);
    let m = model(x(), vec![], vec![node("Relu", &["x"], "y", vec![])], "not_computed");
    assert_refused(&m, &["not_computed"]);
    let m = model(x(), vec![], vec![node("Relu", &["x"], "y", vec![]), node("Relu", &["y"], "y", vec![])], "y");
    assert_refused(&m, &["`y`", "already defined"]);
    let mut no_graph = model(x(), vec![], vec![], "x");
    no_graph.graph = None;
    assert_refused(&no_graph, &["no graph"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_slice_arguments_are_refused() {
    let slice = |inits: Vec<TensorProto>, inputs: &[&str]| {
        let mut all = vec!["x"];
        all.extend_from_slice(inputs);
        model(
            vec![f32_input("x", &[Batch, Fixed(6)]), value_info("dyn", DataType::Int64, &[Fixed(1)])],
            inits,
            vec![node("Slice", &all, "cut", vec![])],
            "cut",
        )
    };
    let cases: Vec<(&str, ModelProto)> = vec![
        ("lengths", slice(vec![ints("s", &[0, 1]), ints("e", &[2])], &["s", "e"])),
        ("axes length", slice(vec![ints("s", &[0]), ints("e", &[2]), ints("a", &[0, 1])], &["s", "e", "a"])),
        ("axis range", slice(vec![ints("s", &[0]), ints("e", &[2]), ints("a", &[2])], &["s", "e", "a"])),
        ("repeated axis", slice(vec![ints("s", &[0, 0]), ints("e", &[2, 2]), ints("a", &[1, -1])], &["s", "e", "a"])),
        ("step", slice(vec![ints("s", &[0]), ints("e", &[6]), ints("a", &[1]), ints("st", &[2])], &["s", "e", "a", "st"])),
        ("no axes", slice(vec![ints("s", &[]), ints("e", &[])], &["s", "e"])),
        ("float bounds", slice(vec![floats("s", &[1], &[0.]), ints("e", &[2])], &["s", "e"])),
        ("computed bounds", slice(vec![ints("e", &[2])], &["dyn", "e"])),
        ("missing bounds", slice(vec![ints("s", &[0])], &["s", "absent"])),
        ("too few inputs", slice(vec![ints("s", &[0])], &["s"])),
    ];
    for (what, m) in cases {
        let msg = refused(&m);
        assert!(msg.contains("`cut`") && msg.contains("Slice"), "{what}: {msg}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_reshape_shapes_are_refused() {
    let reshape = |shape: TensorProto, attrs: Vec<AttributeProto>| {
        model(
            vec![f32_input("x", &[Batch, Fixed(2), Fixed(3)]), value_info("dyn", DataType::Int64, &[Fixed(2)])],
            vec![shape],
            vec![node("Reshape", &["x", "shape"], "flat", attrs)],
            "flat",
        )
    };
    let cases: Vec<(&str, ModelProto)> = vec![
        ("two -1", reshape(ints("shape", &[-1, -1]), vec![])),
        ("below -1", reshape(ints("shape", &[-2, 6]), vec![])),
        ("volume", reshape(ints("shape", &[-1, 4]), vec![])),
        ("fixed volume", reshape(ints("shape", &[0, 5]), vec![])),
        ("zero past the rank", reshape(ints("shape", &[-1, 1, 1, 0]), vec![])),
        ("float shape", reshape(floats("shape", &[2], &[-1., 6.]), vec![])),
        ("matrix shape", reshape(TensorProto { dims: vec![1, 2], ..ints("shape", &[-1, 6]) }, vec![])),
        ("allowzero", reshape(ints("shape", &[-1, 6]), vec![int_attr("allowzero", 1)])),
        ("unknown attribute", reshape(ints("shape", &[-1, 6]), vec![int_attr("mode", 1)])),
        ("short data", reshape(TensorProto { dims: vec![3], ..ints("shape", &[-1, 6]) }, vec![])),
    ];
    for (what, m) in cases {
        let msg = refused(&m);
        assert!(msg.contains("flat") || msg.contains("shape"), "{what}: {msg}");
    }
    // The shape must be a constant, not a computed value.
    let m = model(
        vec![f32_input("x", &[Batch, Fixed(6)]), value_info("dyn", DataType::Int64, &[Fixed(2)])],
        vec![],
        vec![node("Reshape", &["x", "dyn"], "flat", vec![])],
        "flat",
    );
    assert_refused(&m, &["`flat`", "constant"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn shape_mismatches_that_tract_would_assert_on_are_refused() {
    let two = |a: &[Dim], b: &[Dim], op: &str| {
        model(vec![f32_input("a", a), f32_input("b", b)], vec![], vec![node(op, &["a", "b"], "c", vec![])], "c")
    };
    assert_refused(&two(&[Batch, Fixed(3)], &[Fixed(4), Fixed(2)], "MatMul"), &["`c`", "inner"]);
    assert_refused(&two(&[Fixed(2), Fixed(1), Fixed(3)], &[Fixed(5), Fixed(3), Fixed(2)], "MatMul"), &["`c`", "batch"]);
    assert_refused(&two(&[Batch, Fixed(3)], &[Fixed(1), Fixed(4)], "Add"), &["`c`", "broadcast"]);
    let m = model(
        vec![f32_input("a", &[Batch, Fixed(3)]), value_info("b", DataType::Int64, &[Batch, Fixed(3)])],
        vec![],
        vec![node("Add", &["a", "b"], "c", vec![])],
        "c",
    );
    assert_refused(&m, &["`c`"]);
    let concat = |axis: i64| {
        model(
            vec![f32_input("a", &[Batch, Fixed(3)]), f32_input("b", &[Fixed(2), Fixed(3)])],
            vec![],
            vec![node("Concat", &["a", "b"], "c", vec![int_attr("axis", axis)])],
            "c",
        )
    };
    assert_refused(&concat(1), &["`c`"]);
    assert_refused(&concat(2), &["`c`", "axis"]);
    let transpose = |perm: &[i64]| {
        model(
            vec![f32_input("a", &[Batch, Fixed(3)])],
            vec![],
            vec![node("Transpose", &["a"], "c", vec![ints_attr("perm", perm)])],
            "c",
        )
    };
    assert_refused(&transpose(&[0, 0]), &["`c`", "perm"]);
    assert_refused(&transpose(&[1, 0, 2]), &["`c`", "perm"]);
    let unsqueeze = |axes: &[i64]| {
        model(
            vec![f32_input("a", &[Batch, Fixed(3)])],
            vec![ints("axes", axes)],
            vec![node("Unsqueeze", &["a", "axes"], "c", vec![])],
            "c",
        )
    };
    assert_refused(&unsqueeze(&[3]), &["`c`", "axis"]);
    assert_refused(&unsqueeze(&[1, -3]), &["`c`", "repeated"]);
    // An attribute of the wrong kind is refused, not misread.
    let m = model(
        vec![f32_input("a", &[Batch, Fixed(3)])],
        vec![],
        vec![node("Transpose", &["a"], "c", vec![int_attr("perm", 1)])],
        "c",
    );
    assert_refused(&m, &["`c`", "perm"]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn unsupported_models_and_declarations_are_refused() {
    let relu = || model(vec![f32_input("x", &[Batch, Fixed(3)])], vec![], vec![node("Relu", &["x"], "y", vec![])], "y");
    let mut old = relu();
    old.opset_import[0].version = 11;
    assert_refused(&old, &["opset 11"]);
    let mut none = relu();
    none.opset_import.clear();
    assert_refused(&none, &["opset"]);
    let mut unknown_dim = relu();
    let g = unknown_dim.graph.as_mut().unwrap();
    g.input[0] = value_info("x", DataType::Float, &[Batch, Fixed(3)]);
    if let Some(hearth_core::model::onnx_pb::type_proto::Value::TensorType(t)) =
        g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape.as_mut().unwrap().dim[1].value = None;
    }
    assert_refused(&unknown_dim, &["`x`", "unknown size"]);
    let mut strings = relu();
    strings.graph.as_mut().unwrap().input[0] = value_info("x", DataType::String, &[Batch, Fixed(3)]);
    assert_refused(&strings, &["`x`", "element type"]);
    // The declared output must be what the graph computes.
    let mut wrong_out = relu();
    wrong_out.graph.as_mut().unwrap().output[0] = value_info("y", DataType::Float, &[Batch, Fixed(4)]);
    assert_refused(&wrong_out, &["`y`", "declared"]);
    let mut right_out = relu();
    right_out.graph.as_mut().unwrap().output[0] = value_info("y", DataType::Float, &[Batch, Fixed(3)]);
    assert!(typed_model(&right_out).is_ok());
    // An initializer whose data does not fill its shape.
    let m = model(
        vec![f32_input("x", &[Batch, Fixed(3)])],
        vec![floats("b", &[4], &[1., 2., 3.])],
        vec![node("Add", &["x", "b"], "y", vec![])],
        "y",
    );
    assert_refused(&m, &["`b`", "holds 3 values"]);
}

/// Damaged copies of the pack's own graph: whatever the importer does with them, it answers
/// with a model or a `Graph` error. Native only: proptest does not run in the browser.
#[cfg(not(target_arch = "wasm32"))]
mod damaged {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use std::sync::LazyLock;

    static PACK: LazyLock<ModelProto> = LazyLock::new(|| common::pack(2).proto);

    #[derive(Debug, Clone)]
    enum Damage {
        /// Replace a node's operator with another supported one.
        Op(Index, Index),
        /// Point a node input at another name in the graph.
        Input(Index, Index, Index),
        /// Change one value of a small integer initializer (axes, shapes, bounds).
        Int(Index, i64),
        /// Change an attribute's int or one of its ints.
        Attr(Index, i64),
        /// Drop a node.
        Drop(Index),
        /// Replace a node's operator with an ONNX one the importer does not support (only the
        /// differential test below draws this).
        Foreign(Index, Index),
    }

    const OPS: [&str; 9] = ["Gather", "Unsqueeze", "MatMul", "Reshape", "Concat", "Slice", "Add", "Relu", "Transpose"];
    /// Default-domain ONNX operators outside the importer's list, all of which tract-onnx loads.
    const FOREIGN: [&str; 6] = ["Sub", "Mul", "Neg", "Sigmoid", "Identity", "Softmax"];

    fn damage() -> impl Strategy<Value = Damage> {
        let small = prop_oneof![8 => -3i64..8, 1 => Just(i64::MAX), 1 => Just(i64::MIN)];
        prop_oneof![
            (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Damage::Op(a, b)),
            (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(a, b, c)| Damage::Input(a, b, c)),
            (any::<Index>(), small.clone()).prop_map(|(a, v)| Damage::Int(a, v)),
            (any::<Index>(), small).prop_map(|(a, v)| Damage::Attr(a, v)),
            any::<Index>().prop_map(Damage::Drop),
        ]
    }

    fn apply(m: &mut ModelProto, d: &Damage) {
        let g = m.graph.as_mut().unwrap();
        let names: Vec<String> = g
            .input
            .iter()
            .map(|v| v.name.clone())
            .chain(g.initializer.iter().map(|t| t.name.clone()))
            .chain(g.node.iter().flat_map(|n| n.output.clone()))
            .collect();
        let nodes = g.node.len();
        match d {
            Damage::Op(n, op) => g.node[n.index(nodes)].op_type = OPS[op.index(OPS.len())].into(),
            Damage::Foreign(n, op) => g.node[n.index(nodes)].op_type = FOREIGN[op.index(FOREIGN.len())].into(),
            Damage::Input(n, i, to) => {
                let node = &mut g.node[n.index(nodes)];
                let i = i.index(node.input.len());
                node.input[i] = names[to.index(names.len())].clone();
            }
            Damage::Int(which, v) => {
                let mut small: Vec<&mut TensorProto> =
                    g.initializer.iter_mut().filter(|t| t.data_type == DataType::Int64 as i32).collect();
                let len = small.len();
                let t = &mut small[which.index(len)];
                let at = (t.raw_data.len() / 8).saturating_sub(1) * 8;
                t.raw_data[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            Damage::Attr(a, v) => {
                let mut attrs: Vec<&mut AttributeProto> = g.node.iter_mut().flat_map(|n| n.attribute.iter_mut()).collect();
                let len = attrs.len();
                let attr = &mut attrs[a.index(len)];
                attr.i = *v;
                if let Some(x) = attr.ints.last_mut() {
                    *x = *v;
                }
            }
            Damage::Drop(n) => {
                g.node.remove(n.index(nodes));
            }
        }
    }

    /// Found by the property test below: the slices' shared `axes` initializer pointed at the
    /// symbolic batch axis and one slice's end moved before its start; tract asserted on the
    /// negative length instead of the importer refusing it.
    #[test]
    fn a_negative_slice_on_the_batch_axis_is_refused() {
        let mut m = PACK.clone();
        for (name, v) in [("a_proj_end", 0i64), ("axis1", -2)] {
            let t = m.graph.as_mut().unwrap().initializer.iter_mut().find(|t| t.name == name).unwrap();
            t.raw_data.copy_from_slice(&v.to_le_bytes());
        }
        match typed_model(&m) {
            Err(HearthError::Graph(e)) => assert!(e.contains("negative length"), "{e}"),
            other => panic!("expected a Graph error, got {:?}", other.map(|_| ())),
        }
    }

    /// Also found by it: a Gather of a constant table by constant indices past its rows,
    /// which tract folds while optimising and indexes out of bounds.
    #[test]
    fn a_constant_gather_out_of_range_is_refused() {
        let mut m = PACK.clone();
        let gather = m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.op_type == "Gather").unwrap();
        gather.input = vec!["axis1".into(), "axis1".into()]; // [1] from a one-row table
        match typed_model(&m) {
            Err(HearthError::Graph(e)) => assert!(e.contains("outside the table"), "{e}"),
            other => panic!("expected a Graph error, got {:?}", other.map(|_| ())),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn damaged_pack_graphs_never_panic(damages in proptest::collection::vec(damage(), 1..4)) {
            let mut m = PACK.clone();
            for d in &damages {
                apply(&mut m, d);
            }
            match typed_model(&m) {
                Ok(typed) => {
                    // Whatever was accepted is a consistent model tract can optimise.
                    let _ = typed.into_optimized();
                }
                Err(HearthError::Graph(_)) => {}
                Err(other) => prop_assert!(false, "unexpected error kind {:?}", other),
            }
        }
    }

    /// The same damage, now against tract-onnx, the reference loader (hearth-onnx-reference): a
    /// graph hearth-core loads must load in tract-onnx and compute the same outputs (within
    /// 1e-5) on the same input; a graph hearth-core refuses must be refused by tract-onnx too
    /// (at load or when run), or lie outside the supported op set ([`OUTSIDE_SUPPORTED_SET`]),
    /// or be invalid ONNX that tract-onnx runs anyway ([`INVALID_ONNX_TRACT_ONNX_RUNS`]), or be
    /// refused for a node no output needs, which tract-onnx drops unchecked (the rest must then
    /// agree). Graphs where tract-onnx 0.23 departs from ONNX are not compared (`bad_perm`,
    /// `beyond_32_bits`).
    mod differential {
        use super::*;
        use hearth_core::model::pack::ModelPack;
        use hearth_core::model::params::Gaussian;
        use hearth_core::model::scorer::extract;
        use hearth_onnx_reference::{Case, Reference, compare_tensors};
        use proptest::test_runner::{Config, TestCaseError, TestRunner};
        use prost::Message;

        /// Damaged graphs per run: each costs two imports and optimisations in a debug build.
        const CASES: u32 = 512;

        /// The importer's refusals that may stand although tract-onnx computes the graph. The
        /// supported op set is graph.rs's nine operators (`OPS`: Gather, Unsqueeze, MatMul,
        /// Reshape, Concat, Slice, Add, Relu, Transpose) from the default domain, in the forms a
        /// pack uses: tables, axes, shapes and slice bounds as constant initializers; Gather on
        /// axis 0 with i64 indices; MatMul on floats and Relu on f32; unit slice steps; slices of
        /// the symbolic batch axis whose bounds need no clamping; Reshape without `allowzero`;
        /// ranks up to 8; no attribute beyond the ones those forms use. A refusal naming one of
        /// these is "outside the supported op set"; any other must be shared by tract-onnx.
        const OUTSIDE_SUPPORTED_SET: [&str; 12] = [
            "is not supported",               // an operator outside OPS, another domain, allowzero
            "only axis 0",                    // Gather on another axis
            "this importer reads opsets",     // an opset outside 13..=21
            "must be a constant initializer", // a table, axes, shape or slice bound computed at run time
            "expected i64",                   // Gather indices of another integer type
            "expected one float type",        // MatMul on integers
            "expected F32",                   // Relu on another type
            "only unit steps",                // strided Slice
            "on symbolic axis",               // a bound on the batch axis that needs clamping
            "negative length",                // likewise: an empty slice of the batch axis
            "unsupported attribute",          // an attribute a pack's graph never carries
            "above 8",                        // a rank above MAX_RANK
        ];

        /// Refusals of graphs ONNX itself rules out, which tract-onnx 0.23 runs anyway: the
        /// importer is right to refuse them, and tract-onnx's answer is no reference.
        const INVALID_ONNX_TRACT_ONNX_RUNS: [&str; 3] = [
            "earlier node provides",                 // nodes out of topological order (tract-onnx sorts them)
            "inner dimensions differ",               // MatMul [N, 1] x [N, 1]: tract-onnx reads only the first row of b
            "is not a scalar or 1-D integer tensor", // float axes, shape or bounds where ONNX wants integers
        ];

        /// What one loader made of a graph and an input.
        #[derive(Debug)]
        enum Outcome {
            /// Refused at load: import, typing or optimisation.
            Refused(String),
            /// Loaded, but failed on the input.
            Failed(String),
            /// Loaded and computed these outputs.
            Ran(Vec<Tensor>),
            /// Loaded, with a shape that depends on the data (only tract-onnx): not run, as it
            /// may allocate without bound.
            DataDependent,
        }

        /// The graph inputs named `names`, from `case` (a damaged graph keeps the pack's inputs).
        fn inputs(names: impl Iterator<Item = String>, case: &Case) -> TVec<TValue> {
            names.map(|n| case.tensor(&n).unwrap().into()).collect()
        }

        /// hearth-core's loading: the slim importer, then tract-core's optimiser and plan, as
        /// `Scorer::new` and `WholeGraph::new` do.
        fn hearth(m: &ModelProto, case: &Case) -> Outcome {
            let typed = match typed_model(m) {
                Ok(t) => t,
                Err(e) => return Outcome::Refused(e.to_string()),
            };
            let names: Vec<String> = typed.inputs.iter().map(|o| typed.node(o.node).name.clone()).collect();
            let plan = match typed.into_optimized().and_then(|t| t.into_runnable()) {
                Ok(p) => p,
                Err(e) => return Outcome::Refused(format!("optimising: {e:#}")),
            };
            match plan.run(inputs(names.into_iter(), case)) {
                Ok(out) => Outcome::Ran(out.into_iter().map(|v| v.into_tensor()).collect()),
                Err(e) => Outcome::Failed(format!("{e:#}")),
            }
        }

        /// tract-onnx's loading, as the aggregator's check does it.
        fn reference(m: &ModelProto, case: &Case) -> Outcome {
            let loaded = match Reference::load(&m.encode_to_vec()) {
                Ok(r) => r,
                Err(e) => return Outcome::Refused(e),
            };
            if loaded.data_dependent_shape().is_some() {
                return Outcome::DataDependent;
            }
            match loaded.run(inputs(loaded.input_names().iter().cloned(), case)) {
                Ok(out) => Outcome::Ran(out.into_iter().map(|v| v.into_tensor()).collect()),
                Err(e) => Outcome::Failed(e),
            }
        }

        /// A random input whose ids stay inside every constant table a Gather reads (damage
        /// may point a Gather at a smaller one; an id outside the table is the caller's bug,
        /// which tract does not check).
        fn input_for(m: &ModelProto, pack: &ModelPack, seed: u64) -> Case {
            let g = m.graph.as_ref().unwrap();
            let rows = g
                .node
                .iter()
                .filter(|n| n.op_type == "Gather")
                .filter_map(|n| g.initializer.iter().find(|t| Some(&t.name) == n.input.first()))
                .filter_map(|t| t.dims.first().copied())
                .filter(|r| *r > 0)
                .min()
                .unwrap_or(i64::MAX);
            let mut case = Case::random(pack, &mut Gaussian::new(seed), 3);
            let r = &mut case.request;
            for id in r.user.ids.iter_mut().chain(&mut r.context.ids).chain(&mut case.ad_ids) {
                *id %= rows;
            }
            case
        }

        /// Whether a node reads an integer constant beyond the 32-bit range, which tract-onnx
        /// 0.23 reads otherwise than ONNX (and the importer): it keeps their low 32 bits in Slice
        /// bounds and Reshape shapes (seen: `i64::MIN` as 0, `i64::MIN + 1` as 1, `i64::MAX` as
        /// -1, 2^32 + 2 as 2), and takes a Slice end of `i64::MIN` or `i64::MIN + 1` for "to the
        /// end" whatever the step (tract-core's StridedSlice reads them as exporters' markers of
        /// reversed slices), where ONNX clamps it to 0. Damage writes such values; exporters
        /// write only `i64::MAX` as a Slice end ("to the end"), which both read alike. Graphs
        /// with any other are not compared.
        fn beyond_32_bits(m: &ModelProto) -> bool {
            let g = m.graph.as_ref().unwrap();
            g.node.iter().any(|n| {
                n.input.iter().enumerate().any(|(ix, name)| {
                    let Some(t) = g.initializer.iter().find(|t| &t.name == name && t.data_type == DataType::Int64 as i32) else {
                        return false;
                    };
                    let raw = t.raw_data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()));
                    let slice_end = n.op_type == "Slice" && ix == 2;
                    raw.chain(t.int64_data.iter().copied()).any(|v| i32::try_from(v).is_err() && !(slice_end && v == i64::MAX))
                })
            })
        }

        /// Whether a Transpose's `perm` is not a permutation of its positions. ONNX and the
        /// importer refuse such a graph; tract-onnx 0.23 does not check the perm (tract-hir's
        /// PermuteAxes indexes with it: most such graphs panic in it, and `[1, 1]` with a
        /// computed Unsqueeze axis made its analysis ask for 8 GiB), so these graphs are held to
        /// the importer's refusal only and never given to tract-onnx.
        fn bad_perm(m: &ModelProto) -> bool {
            let g = m.graph.as_ref().unwrap();
            g.node.iter().filter(|n| n.op_type == "Transpose").flat_map(|n| &n.attribute).filter(|a| a.name == "perm").any(|a| {
                let mut sorted = a.ints.clone();
                sorted.sort_unstable();
                sorted != (0..a.ints.len() as i64).collect::<Vec<_>>()
            })
        }

        /// The graph without the nodes its outputs do not depend on, if it had any: tract-onnx
        /// drops those unchecked, where the importer checks every node.
        fn live_part(m: &ModelProto) -> Option<ModelProto> {
            let g = m.graph.as_ref()?;
            let live = extract(m, g.input.clone(), g.output.clone()).ok()?;
            (live.graph.as_ref()?.node.len() < g.node.len()).then_some(live)
        }

        /// Holds the property on one graph and input; what happened, for the tally.
        fn verdict(m: &ModelProto, case: &Case) -> Result<&'static str, String> {
            Ok(match (hearth(m, case), reference(m, case)) {
                (Outcome::Ran(h), Outcome::Ran(r)) => {
                    if h.len() != r.len() {
                        return Err(format!("hearth-core computes {} outputs, tract-onnx {}", h.len(), r.len()));
                    }
                    for (i, (h, r)) in h.iter().zip(&r).enumerate() {
                        compare_tensors(h, r).map_err(|e| format!("output {i}: {e}"))?;
                    }
                    "both load, same outputs"
                }
                (Outcome::Ran(_), other) => {
                    return Err(format!("the importer loads and runs it, tract-onnx does not: {other:?}"));
                }
                (Outcome::Failed(h), Outcome::Ran(_)) => {
                    return Err(format!("tract-onnx runs it; hearth-core loads it but fails: {h}"));
                }
                (Outcome::Refused(h), Outcome::Ran(_)) => {
                    if OUTSIDE_SUPPORTED_SET.iter().any(|s| h.contains(s)) {
                        "importer refuses (outside the supported set), tract-onnx runs"
                    } else if INVALID_ONNX_TRACT_ONNX_RUNS.iter().any(|s| h.contains(s)) {
                        "importer refuses (invalid ONNX), tract-onnx runs"
                    } else if let Some(live) = live_part(m) {
                        verdict(&live, case)?;
                        "importer refuses a dead node, tract-onnx drops it; the rest agrees"
                    } else {
                        return Err(format!(
                            "the importer refuses a graph tract-onnx runs, for a reason outside its documented limits: {h}"
                        ));
                    }
                }
                // The importer wants every shape-deciding argument constant.
                (Outcome::Refused(_), Outcome::DataDependent) => "importer refuses, tract-onnx has data-dependent shapes",
                (Outcome::Refused(_), Outcome::Refused(_)) => "both refuse at load",
                (Outcome::Refused(_), Outcome::Failed(_)) => "importer refuses, tract-onnx fails when run",
                (Outcome::Failed(_), Outcome::Failed(_)) => "both load, both fail when run",
                (Outcome::DataDependent, _) => unreachable!("only tract-onnx's outcome is ever data-dependent"),
                (Outcome::Failed(h), other) => {
                    return Err(format!("the importer loads it (and fails running it: {h}), tract-onnx does not: {other:?}"));
                }
            })
        }

        #[test]
        fn damaged_graphs_load_in_tract_onnx_as_in_the_importer() {
            let pack = common::pack(2);
            let strategy = (
                proptest::collection::vec(
                    prop_oneof![6 => damage(), 1 => (any::<Index>(), any::<Index>()).prop_map(|(n, op)| Damage::Foreign(n, op))],
                    1..4,
                ),
                any::<u64>(),
            );
            let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
            let tally = std::cell::RefCell::new(std::collections::BTreeMap::<&str, u32>::new());
            let result = runner.run(&strategy, |(damages, seed)| {
                let mut m = pack.proto.clone();
                for d in &damages {
                    apply(&mut m, d);
                }
                let case = input_for(&m, &pack, seed);
                if bad_perm(&m) {
                    let refused = matches!(typed_model(&m), Err(HearthError::Graph(_)));
                    prop_assert!(refused, "the importer accepts a graph with a Transpose perm that is no permutation");
                    *tally.borrow_mut().entry("importer refuses a bad perm (tract-onnx not asked)").or_default() += 1;
                    return Ok(());
                }
                if beyond_32_bits(&m) {
                    *tally.borrow_mut().entry("not compared: an integer constant beyond 32 bits").or_default() += 1;
                    return Ok(());
                }
                let verdict = verdict(&m, &case).map_err(TestCaseError::fail)?;
                *tally.borrow_mut().entry(verdict).or_default() += 1;
                Ok(())
            });
            eprintln!("{CASES} damaged graphs: {:?}", tally.borrow());
            if let Err(e) = result {
                panic!("{e}");
            }
        }
    }
}

/// The Rust half of `crates/core/tests/vectors/ort_check.py`, which compares these logits with onnxruntime's on
/// the same file. Reads padded inputs from the JSON file named by `HEARTH_ORT_INPUTS`, scores
/// them with the pack in `HEARTH_ORT_PACK` (default `models/default`) through both the whole
/// graph and the cut one, and writes `{"full": [...], "cut": [...]}` to `HEARTH_ORT_OUTPUT`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
#[ignore = "driven by crates/core/tests/vectors/ort_check.py"]
fn ort_check_logits() {
    use hearth_core::model::features::Slots;
    use hearth_core::model::pack_dir::PackFiles;
    use hearth_core::model::scorer::{Request, Scorer, WholeGraph};
    use serde_json::{Value, json};
    use std::path::PathBuf;

    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var("HEARTH_ORT_PACK").map_or_else(|_| root.join("models/default"), PathBuf::from);
    let pack = PackFiles::read(&dir).unwrap().load().unwrap();
    let scorer = Scorer::new(&pack).unwrap();

    let inputs: Value = serde_json::from_str(&std::fs::read_to_string(var("HEARTH_ORT_INPUTS")).unwrap()).unwrap();
    let ints = |k: &str| -> Vec<i64> { inputs[k].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect() };
    let floats = |k: &str| -> Vec<f32> { inputs[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
    let req = Request {
        user: Slots { ids: ints("user_ids"), weights: floats("user_w") },
        local_u: floats("local_u"),
        context: Slots { ids: ints("ctx_ids"), weights: floats("ctx_w") },
    };
    let (ids, weights) = (ints("ad_ids"), floats("ad_w"));
    let full = WholeGraph::new(&pack).unwrap().logits(&req, &ids, &weights).unwrap();
    let cut = scorer.logits(&req, &scorer.ad_side(&ids, &weights).unwrap()).unwrap();
    std::fs::write(var("HEARTH_ORT_OUTPUT"), json!({"full": full, "cut": cut}).to_string()).unwrap();
}
