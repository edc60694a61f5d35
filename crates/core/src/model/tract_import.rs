//! Loads an ONNX `ModelProto` straight into a tract-core `TypedModel`, for exactly the operators
//! `graph.rs` writes (opset 13): Gather, Unsqueeze, MatMul, Reshape, Concat, Slice, Add, Relu and
//! Transpose. Initializers become constants, graph inputs become sources with their declared
//! shapes, and a named dimension (`dim_param`) becomes a tract symbol of the same name, shared
//! by every input that names it.
//!
//! Everything else — an unknown operator, a missing value, a value that must be constant and
//! is not, an attribute this importer does not understand — is a `HearthError::Graph` naming the
//! node. Shapes and arguments are checked here before tract sees them, so a malformed graph is
//! refused rather than tripping an assertion inside tract.

use crate::error::{HearthError, Result};
use crate::model::onnx_pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
    attribute_proto::AttributeType,
    tensor_proto::{DataLocation, DataType},
    tensor_shape_proto::dimension::Value as DimValue,
    type_proto,
};
use std::collections::{HashMap, HashSet};
use tract_core::internal::{AxesMapping, AxisOp, DimLike, to_axis_ops_with_tf_rules, wire_with_rank_broadcast};
use tract_core::ops::array::{Gather, Slice, TypedConcat};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math;
use tract_core::prelude::*;

/// The default-domain opsets whose semantics for the operators above match opset 13's, as far
/// as the attributes accepted here go.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// Highest tensor rank accepted anywhere: far above what the pack uses, low enough that
/// einsum axis letters never run out.
const MAX_RANK: usize = 8;

/// Translates `model` into a typed tract model, inputs in the order the graph declares them
/// (initializers listed as inputs are constants, not inputs), outputs likewise.
pub fn typed_model(model: &ModelProto) -> Result<TypedModel> {
    let graph = model.graph.as_ref().ok_or_else(|| HearthError::Graph("no graph".into()))?;
    check_opset(model)?;
    let mut import = Import::new(graph);
    for vi in &graph.input {
        if !import.initializers.contains_key(vi.name.as_str()) {
            import.source(vi)?;
        }
    }
    for (index, node) in graph.node.iter().enumerate() {
        import.node(node, index)?;
    }
    let mut outputs = Vec::with_capacity(graph.output.len());
    for vi in &graph.output {
        let at = format!("graph output `{}`", vi.name);
        let outlet = import.value(&vi.name, &at)?;
        import.check_declared(vi, outlet)?;
        outputs.push(outlet);
    }
    if outputs.is_empty() {
        return Err(HearthError::Graph("graph has no outputs".into()));
    }
    import.model.select_output_outlets(&outputs).map_err(|e| HearthError::Graph(format!("{e:#}")))?;
    Ok(import.model)
}

fn check_opset(model: &ModelProto) -> Result<()> {
    let default: Vec<i64> =
        model.opset_import.iter().filter(|o| o.domain.is_empty() || o.domain == "ai.onnx").map(|o| o.version).collect();
    match default.as_slice() {
        [v] if OPSETS.contains(v) => Ok(()),
        [v] => Err(HearthError::Graph(format!("opset {v}: this importer reads opsets {}..={}", OPSETS.start(), OPSETS.end()))),
        [] => Err(HearthError::Graph("model imports no default-domain opset".into())),
        _ => Err(HearthError::Graph("model imports the default-domain opset more than once".into())),
    }
}

/// Element types a graph value may have here.
fn datum_type(elem: i32, what: &str) -> Result<DatumType> {
    match DataType::try_from(elem) {
        Ok(DataType::Float) => Ok(f32::datum_type()),
        Ok(DataType::Double) => Ok(f64::datum_type()),
        Ok(DataType::Int64) => Ok(i64::datum_type()),
        Ok(DataType::Int32) => Ok(i32::datum_type()),
        Ok(other) => Err(HearthError::Graph(format!("{what} has unsupported element type {other:?}"))),
        Err(_) => Err(HearthError::Graph(format!("{what} has unknown element type {elem}"))),
    }
}

/// The values of a constant initializer, decoded from its typed field or `raw_data`.
#[derive(Debug, Clone)]
enum ConstData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
}

#[derive(Debug, Clone)]
struct Const {
    shape: Vec<usize>,
    data: ConstData,
}

/// Reads little-endian `raw` as `N`-byte values, or takes `typed` when `raw` is empty.
fn values<T: Copy, const N: usize>(raw: &[u8], typed: &[T], len: usize, from_le: fn([u8; N]) -> T, what: &str) -> Result<Vec<T>> {
    let found = if raw.is_empty() { typed.len() } else { raw.len() / N };
    if found != len || !raw.len().is_multiple_of(N) {
        return Err(HearthError::Graph(format!("{what} holds {found} values, its shape needs {len}")));
    }
    if raw.is_empty() {
        Ok(typed.to_vec())
    } else {
        Ok(raw.chunks_exact(N).map(|c| from_le(c.try_into().expect("chunk of N bytes"))).collect())
    }
}

fn decode_const(t: &TensorProto) -> Result<Const> {
    let what = format!("initializer `{}`", t.name);
    if t.data_location == DataLocation::External as i32 || !t.external_data.is_empty() {
        return Err(HearthError::Graph(format!("{what} refers to external data")));
    }
    if t.segment.is_some() {
        return Err(HearthError::Graph(format!("{what} is segmented")));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|d| usize::try_from(*d).map_err(|_| HearthError::Graph(format!("{what} has dimension {d}"))))
        .collect::<Result<_>>()?;
    let len = shape
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .ok_or_else(|| HearthError::Graph(format!("{what} has an overflowing shape {shape:?}")))?;
    let raw = &t.raw_data[..];
    let data = match datum_type(t.data_type, &what)? {
        dt if dt == f32::datum_type() => ConstData::F32(values(raw, &t.float_data, len, f32::from_le_bytes, &what)?),
        dt if dt == f64::datum_type() => ConstData::F64(values(raw, &t.double_data, len, f64::from_le_bytes, &what)?),
        dt if dt == i64::datum_type() => ConstData::I64(values(raw, &t.int64_data, len, i64::from_le_bytes, &what)?),
        _ => ConstData::I32(values(raw, &t.int32_data, len, i32::from_le_bytes, &what)?),
    };
    Ok(Const { shape, data })
}

impl Const {
    fn tensor(&self) -> TractResult<Tensor> {
        match &self.data {
            ConstData::F32(v) => Tensor::from_shape(&self.shape, v),
            ConstData::F64(v) => Tensor::from_shape(&self.shape, v),
            ConstData::I64(v) => Tensor::from_shape(&self.shape, v),
            ConstData::I32(v) => Tensor::from_shape(&self.shape, v),
        }
    }

    /// The values of a scalar or 1-D integer constant.
    fn ints(&self) -> Option<Vec<i64>> {
        if self.shape.len() > 1 {
            return None;
        }
        match &self.data {
            ConstData::I64(v) => Some(v.clone()),
            ConstData::I32(v) => Some(v.iter().map(|x| *x as i64).collect()),
            _ => None,
        }
    }
}

/// One node's view of the import: its name for messages, and typed access to its arguments.
struct At<'n> {
    node: &'n NodeProto,
    label: String,
}

impl<'n> At<'n> {
    fn new(node: &'n NodeProto, index: usize) -> At<'n> {
        let name = if !node.name.is_empty() {
            node.name.clone()
        } else if let Some(o) = node.output.first().filter(|o| !o.is_empty()) {
            o.clone()
        } else {
            format!("#{index}")
        };
        At { node, label: format!("node `{name}` ({})", node.op_type) }
    }

    fn err(&self, msg: impl std::fmt::Display) -> HearthError {
        HearthError::Graph(format!("{}: {msg}", self.label))
    }

    fn tract(&self, e: TractError) -> HearthError {
        self.err(format!("{e:#}"))
    }

    /// Checks the input count (present inputs within `min..=max`; trailing "" are omitted
    /// optionals) and that every attribute is one of `allowed`.
    fn arity(&self, min: usize, max: usize, allowed: &[&str]) -> Result<()> {
        let given = self.node.input.iter().rposition(|i| !i.is_empty()).map_or(0, |p| p + 1);
        if !(min..=max).contains(&given) {
            let want = if min == max { format!("{min}") } else { format!("{min} to {max}") };
            return Err(self.err(format!("{given} inputs, expected {want}")));
        }
        if let Some(i) = self.node.input[..min].iter().position(String::is_empty) {
            return Err(self.err(format!("required input {i} is empty")));
        }
        if self.node.output.len() != 1 || self.node.output[0].is_empty() {
            return Err(self.err(format!("{} outputs, expected 1", self.node.output.len())));
        }
        let mut seen = HashSet::new();
        for a in &self.node.attribute {
            if !allowed.contains(&a.name.as_str()) {
                return Err(self.err(format!("unsupported attribute `{}`", a.name)));
            }
            if !seen.insert(a.name.as_str()) {
                return Err(self.err(format!("attribute `{}` given twice", a.name)));
            }
            if !a.ref_attr_name.is_empty() {
                return Err(self.err(format!("attribute `{}` refers to a function attribute", a.name)));
            }
        }
        Ok(())
    }

    fn attr(&self, name: &str) -> Option<&'n AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn int_attr(&self, name: &str) -> Result<Option<i64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == AttributeType::Int as i32 => Ok(Some(a.i)),
            Some(_) => Err(self.err(format!("attribute `{name}` is not an int"))),
        }
    }

    fn ints_attr(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == AttributeType::Ints as i32 => Ok(Some(a.ints.clone())),
            Some(_) => Err(self.err(format!("attribute `{name}` is not a list of ints"))),
        }
    }

    /// Normalises a possibly negative axis against `rank`.
    fn axis(&self, axis: i64, rank: usize, what: &str) -> Result<usize> {
        let r = rank as i64;
        if (-r..r).contains(&axis) {
            Ok(if axis < 0 { axis + r } else { axis } as usize)
        } else {
            Err(self.err(format!("{what} {axis} is out of range for rank {rank}")))
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.node.output[0])
    }
}

struct Import<'g> {
    model: TypedModel,
    initializers: HashMap<&'g str, &'g TensorProto>,
    consts: HashMap<&'g str, Const>,
    wires: HashMap<String, OutletId>,
}

impl<'g> Import<'g> {
    fn new(graph: &'g GraphProto) -> Import<'g> {
        Import {
            model: TypedModel::default(),
            // The first of duplicated names wins, as in the graph's own order.
            initializers: graph.initializer.iter().rev().map(|t| (t.name.as_str(), t)).collect(),
            consts: HashMap::new(),
            wires: HashMap::new(),
        }
    }

    fn source(&mut self, vi: &ValueInfoProto) -> Result<()> {
        let what = format!("graph input `{}`", vi.name);
        if vi.name.is_empty() {
            return Err(HearthError::Graph("a graph input has no name".into()));
        }
        if self.wires.contains_key(&vi.name) {
            return Err(HearthError::Graph(format!("{what} is declared twice")));
        }
        let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Err(HearthError::Graph(format!("{what} is not a tensor")));
        };
        let dt = datum_type(t.elem_type, &what)?;
        let shape = t.shape.as_ref().ok_or_else(|| HearthError::Graph(format!("{what} declares no shape")))?;
        if shape.dim.len() > MAX_RANK {
            return Err(HearthError::Graph(format!("{what} has rank {}, above {MAX_RANK}", shape.dim.len())));
        }
        let mut dims: TVec<TDim> = tvec!();
        for d in &shape.dim {
            dims.push(match &d.value {
                Some(DimValue::DimValue(v)) if *v >= 0 => TDim::from(*v),
                Some(DimValue::DimParam(p)) if is_symbol_name(p) => self.model.symbols.sym(p).into(),
                Some(DimValue::DimParam(p)) => {
                    return Err(HearthError::Graph(format!("{what} has dimension name {p:?}, not an identifier")));
                }
                Some(DimValue::DimValue(v)) => return Err(HearthError::Graph(format!("{what} has dimension {v}"))),
                None => return Err(HearthError::Graph(format!("{what} has a dimension of unknown size"))),
            });
        }
        let outlet = self
            .model
            .add_source(vi.name.clone(), TypedFact::dt_shape(dt, dims))
            .map_err(|e| HearthError::Graph(format!("{what}: {e:#}")))?;
        self.wires.insert(vi.name.clone(), outlet);
        Ok(())
    }

    /// An initializer, decoded once.
    fn konst(&mut self, name: &str) -> Result<Option<&Const>> {
        let Some((&key, t)) = self.initializers.get_key_value(name) else { return Ok(None) };
        if !self.consts.contains_key(key) {
            let c = decode_const(t)?;
            self.consts.insert(key, c);
        }
        Ok(self.consts.get(key))
    }

    /// The wire carrying `name`: a graph input, an earlier node's output or an initializer.
    fn value(&mut self, name: &str, at: &str) -> Result<OutletId> {
        if let Some(o) = self.wires.get(name) {
            return Ok(*o);
        }
        let tensor = match self.konst(name)? {
            Some(c) => c.tensor().map_err(|e| HearthError::Graph(format!("initializer `{name}`: {e:#}")))?,
            None => {
                return Err(HearthError::Graph(format!(
                    "{at} reads `{name}`, which no graph input, initializer or earlier node provides"
                )));
            }
        };
        let outlet = self.model.add_const(name, tensor).map_err(|e| HearthError::Graph(format!("`{name}`: {e:#}")))?;
        self.wires.insert(name.to_string(), outlet);
        Ok(outlet)
    }

    fn input(&mut self, at: &At, ix: usize) -> Result<OutletId> {
        self.value(&at.node.input[ix], &at.label)
    }

    fn optional_input(&self, at: &At, ix: usize) -> Option<String> {
        at.node.input.get(ix).filter(|s| !s.is_empty()).cloned()
    }

    /// Input `ix` as a list of integers, which must be a constant initializer.
    fn const_ints(&mut self, at: &At, ix: usize, what: &str) -> Result<Vec<i64>> {
        // Sources skip initializer names and nodes may not redefine them, so an initializer's
        // name always means the constant.
        let name = &at.node.input[ix];
        match self.konst(name)? {
            Some(c) => c.ints().ok_or_else(|| at.err(format!("{what} `{name}` is not a scalar or 1-D integer tensor"))),
            None => Err(at.err(format!("{what} `{name}` must be a constant initializer"))),
        }
    }

    fn fact(&self, at: &At, outlet: OutletId) -> Result<TypedFact> {
        self.model.outlet_fact(outlet).cloned().map_err(|e| at.tract(e))
    }

    fn wire(&mut self, at: &At, suffix: &str, op: impl Into<Box<dyn TypedOp>>, inputs: &[OutletId]) -> Result<OutletId> {
        let name = self.model.unique_name(at.name(suffix)).into_owned();
        Ok(self.model.wire_node(name, op, inputs).map_err(|e| at.tract(e))?[0])
    }

    fn node(&mut self, node: &NodeProto, index: usize) -> Result<()> {
        let at = At::new(node, index);
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(at.err(format!("operator domain {:?} is not supported", node.domain)));
        }
        let out = match node.op_type.as_str() {
            "Gather" => self.gather(&at)?,
            "Unsqueeze" => self.unsqueeze(&at)?,
            "MatMul" => self.matmul(&at)?,
            "Reshape" => self.reshape(&at)?,
            "Concat" => self.concat(&at)?,
            "Slice" => self.slice(&at)?,
            "Add" => self.add(&at)?,
            "Relu" => self.relu(&at)?,
            "Transpose" => self.transpose(&at)?,
            other => return Err(at.err(format!("operator `{other}` is not supported"))),
        };
        let name = &node.output[0];
        if self.wires.contains_key(name) || self.initializers.contains_key(name.as_str()) {
            return Err(at.err(format!("output `{name}` is already defined")));
        }
        let rank = self.fact(&at, out)?.rank();
        if rank > MAX_RANK {
            return Err(at.err(format!("output has rank {rank}, above {MAX_RANK}")));
        }
        self.model.set_outlet_label(out, name.clone()).map_err(|e| at.tract(e))?;
        self.wires.insert(name.clone(), out);
        Ok(())
    }

    /// Gather(table, indices) along axis 0 of a constant table.
    fn gather(&mut self, at: &At) -> Result<OutletId> {
        at.arity(2, 2, &["axis"])?;
        let table_name = &at.node.input[0];
        if self.konst(table_name)?.is_none() {
            return Err(at.err(format!("table `{table_name}` must be a constant initializer")));
        }
        let table = self.input(at, 0)?;
        let indices = self.input(at, 1)?;
        let (tf, xf) = (self.fact(at, table)?, self.fact(at, indices)?);
        if tf.rank() == 0 {
            return Err(at.err("table is a scalar"));
        }
        let axis = at.axis(at.int_attr("axis")?.unwrap_or(0), tf.rank(), "axis")?;
        if axis != 0 {
            return Err(at.err(format!("axis {axis}: only axis 0 is supported")));
        }
        if xf.datum_type != i64::datum_type() {
            return Err(at.err(format!("indices are {:?}, expected i64", xf.datum_type)));
        }
        // Constant indices are gathered while the model is optimised, where tract indexes
        // without a bounds check: refuse any outside [-rows, rows) here.
        if let (Some(ix), Some(rows)) = (&xf.konst, tf.shape[0].as_i64()) {
            let view = ix.try_as_plain_ram().map_err(|e| at.tract(e))?;
            if let Some(bad) = view.as_slice::<i64>().map_err(|e| at.tract(e))?.iter().find(|&&i| i < -rows || i >= rows) {
                return Err(at.err(format!("index {bad} is outside the table's {rows} rows")));
            }
        }
        self.wire(at, "", Gather::new(0), &[table, indices])
    }

    /// Unsqueeze(data, axes) with the axes a constant input (opset 13).
    fn unsqueeze(&mut self, at: &At) -> Result<OutletId> {
        at.arity(2, 2, &[])?;
        let axes = self.const_ints(at, 1, "axes")?;
        let mut wire = self.input(at, 0)?;
        let rank = self.fact(at, wire)?.rank() + axes.len();
        if axes.is_empty() {
            return Err(at.err("no axes"));
        }
        let mut normal: Vec<usize> = axes.iter().map(|a| at.axis(*a, rank, "axis")).collect::<Result<_>>()?;
        normal.sort_unstable();
        if normal.windows(2).any(|w| w[0] == w[1]) {
            return Err(at.err(format!("repeated axis in {axes:?}")));
        }
        // Inserting in increasing order puts every new axis at its final position.
        for (i, axis) in normal.into_iter().enumerate() {
            wire = self.wire(at, &format!(".add{i}"), AxisOp::Add(axis), &[wire])?;
        }
        Ok(wire)
    }

    /// MatMul(a, b) with numpy semantics: 1-D operands are promoted and the promoted axis
    /// dropped again, leading batch axes broadcast.
    fn matmul(&mut self, at: &At) -> Result<OutletId> {
        at.arity(2, 2, &[])?;
        let (a, b) = (self.input(at, 0)?, self.input(at, 1)?);
        let (af, bf) = (self.fact(at, a)?, self.fact(at, b)?);
        if af.datum_type != bf.datum_type || !af.datum_type.is_float() {
            return Err(at.err(format!("operands are {:?} and {:?}, expected one float type", af.datum_type, bf.datum_type)));
        }
        let (ar, br) = (af.rank(), bf.rank());
        if ar == 0 || br == 0 {
            return Err(at.err("scalar operand"));
        }
        if ar.max(br) > MAX_RANK {
            return Err(at.err(format!("operand rank {} is above {MAX_RANK}", ar.max(br))));
        }
        // Contracted lengths: a's last axis against b's second-to-last (or only) axis.
        let ka = &af.shape[ar - 1];
        let kb = &bf.shape[br.saturating_sub(2)];
        if ka != kb {
            return Err(at.err(format!("inner dimensions differ: {ka} vs {kb}")));
        }
        // Batch axes, aligned from the right, each equal or one of them 1.
        let (a_batch, b_batch) = (&af.shape[..ar.saturating_sub(2)], &bf.shape[..br.saturating_sub(2)]);
        let batch = a_batch.len().max(b_batch.len());
        for i in 1..=batch.min(a_batch.len()).min(b_batch.len()) {
            let (x, y) = (&a_batch[a_batch.len() - i], &b_batch[b_batch.len() - i]);
            if x != y && !x.is_one() && !y.is_one() {
                return Err(at.err(format!("batch dimensions {x} and {y} do not broadcast")));
            }
        }
        // Einsum letters: batch axes from the front of the alphabet, then m, k, n.
        let letters: Vec<char> = ('a'..='j').take(batch).collect();
        let a_letters: String = letters[batch - a_batch.len()..].iter().collect();
        let b_letters: String = letters[batch - b_batch.len()..].iter().collect();
        let c_letters: String = letters.iter().collect();
        let (a_mk, c_m) = if ar == 1 { ("k", "") } else { ("mk", "m") };
        let (b_kn, c_n) = if br == 1 { ("k", "") } else { ("kn", "n") };
        let expr = format!("{a_letters}{a_mk},{b_letters}{b_kn}->{c_letters}{c_m}{c_n}");
        let axes: AxesMapping = expr.parse().map_err(|e| at.tract(e))?;
        self.wire(at, "", EinSum::new(axes, af.datum_type), &[a, b])
    }

    /// Reshape(data, shape) with a constant shape: 0 copies the input's dimension, one -1 is
    /// inferred.
    fn reshape(&mut self, at: &At) -> Result<OutletId> {
        at.arity(2, 2, &["allowzero"])?;
        if at.int_attr("allowzero")?.unwrap_or(0) != 0 {
            return Err(at.err("allowzero=1 is not supported"));
        }
        let spec = self.const_ints(at, 1, "shape")?;
        let data = self.input(at, 0)?;
        let input: TVec<TDim> = self.fact(at, data)?.shape.to_tvec();
        if spec.len() > MAX_RANK {
            return Err(at.err(format!("target rank {} is above {MAX_RANK}", spec.len())));
        }
        if spec.iter().filter(|d| **d == -1).count() > 1 {
            return Err(at.err(format!("shape {spec:?} has more than one -1")));
        }
        let mut target: TVec<TDim> = tvec!();
        for (i, d) in spec.iter().enumerate() {
            target.push(match *d {
                -1 => TDim::from(-1i64),
                0 => input.get(i).cloned().ok_or_else(|| at.err(format!("shape {spec:?}: 0 at {i} has no input axis")))?,
                d if d > 0 => TDim::from(d),
                d => return Err(at.err(format!("shape {spec:?} has dimension {d}"))),
            });
        }
        let in_volume: TDim = input.iter().product();
        let known: TDim = target.iter().filter(|d| **d != TDim::from(-1i64)).product();
        if !spec.contains(&-1) && in_volume != known {
            return Err(at.err(format!("cannot reshape {input:?} to {spec:?}")));
        }
        if spec.contains(&-1) {
            match in_volume.maybe_div(&known) {
                Ok((_, 1)) if known != TDim::from(0i64) => {}
                _ => return Err(at.err(format!("cannot reshape {input:?} to {spec:?}"))),
            }
        }
        let ops = to_axis_ops_with_tf_rules(&input, &target).map_err(|e| at.tract(e))?;
        let mut wire = data;
        for (i, op) in ops.into_iter().enumerate() {
            wire = self.wire(at, &format!(".reshape{i}"), op, &[wire])?;
        }
        if wire == data {
            // A no-op reshape still needs a node of its own to carry the output's name.
            wire = self.wire(at, "", tract_core::ops::identity::Identity, &[wire])?;
        }
        Ok(wire)
    }

    /// Concat(inputs...) along the `axis` attribute.
    fn concat(&mut self, at: &At) -> Result<OutletId> {
        at.arity(1, usize::MAX, &["axis"])?;
        if at.node.input.iter().any(String::is_empty) {
            return Err(at.err("empty input name"));
        }
        let inputs: Vec<OutletId> = (0..at.node.input.len()).map(|i| self.input(at, i)).collect::<Result<_>>()?;
        let facts: Vec<TypedFact> = inputs.iter().map(|o| self.fact(at, *o)).collect::<Result<_>>()?;
        let axis = at.int_attr("axis")?.ok_or_else(|| at.err("missing attribute `axis`"))?;
        let first = &facts[0];
        let axis = at.axis(axis, first.rank(), "axis")?;
        for f in &facts[1..] {
            let same = f.rank() == first.rank()
                && f.datum_type == first.datum_type
                && f.shape.iter().zip(first.shape.iter()).enumerate().all(|(i, (x, y))| i == axis || x == y);
            if !same {
                return Err(at.err(format!("inputs {first:?} and {f:?} do not concatenate on axis {axis}")));
            }
        }
        self.wire(at, "", TypedConcat::new(axis), &inputs)
    }

    /// Slice(data, starts, ends, axes?, steps?) with constant arguments and unit steps.
    fn slice(&mut self, at: &At) -> Result<OutletId> {
        at.arity(3, 5, &[])?;
        let starts = self.const_ints(at, 1, "starts")?;
        let ends = self.const_ints(at, 2, "ends")?;
        let data = self.input(at, 0)?;
        let fact = self.fact(at, data)?;
        let rank = fact.rank();
        let axes = match self.optional_input(at, 3) {
            Some(_) => self.const_ints(at, 3, "axes")?,
            None => (0..starts.len() as i64).collect(),
        };
        if self.optional_input(at, 4).is_some() {
            let steps = self.const_ints(at, 4, "steps")?;
            if steps.len() != starts.len() || steps.iter().any(|s| *s != 1) {
                return Err(at.err(format!("steps {steps:?}: only unit steps are supported")));
            }
        }
        if starts.is_empty() || starts.len() != ends.len() || axes.len() != starts.len() {
            return Err(at.err(format!("starts {starts:?}, ends {ends:?} and axes {axes:?} do not match")));
        }
        let axes: Vec<usize> = axes.iter().map(|a| at.axis(*a, rank, "axis")).collect::<Result<_>>()?;
        if axes.iter().collect::<HashSet<_>>().len() != axes.len() {
            return Err(at.err(format!("repeated axis in {axes:?}")));
        }
        let mut wire = data;
        for (i, ((&axis, &start), &end)) in axes.iter().zip(&starts).zip(&ends).enumerate() {
            let dim = &fact.shape[axis];
            let (start, end) = match dim.as_i64() {
                Some(len) => {
                    // ONNX semantics: negative counts from the end, then clamp into [0, len].
                    let clamp = |x: i64| if x < 0 { x.saturating_add(len) } else { x }.clamp(0, len);
                    let (s, e) = (clamp(start), clamp(end));
                    (TDim::from(s), TDim::from(e.max(s)))
                }
                None => {
                    // A symbolic length cannot be clamped; accept only bounds that need none.
                    let bound = |x: i64| -> Result<TDim> {
                        if x >= i32::MAX as i64 {
                            Ok(dim.clone())
                        } else if x >= 0 {
                            Ok(TDim::from(x))
                        } else if x > i32::MIN as i64 {
                            Ok(dim.clone() + TDim::from(x))
                        } else {
                            Err(at.err(format!("bound {x} on symbolic axis {axis}")))
                        }
                    };
                    let (start, end) = (bound(start)?, bound(end)?);
                    // Bounds of the same kind give a known length, which must not be negative
                    // (tract asserts on it instead of answering with an error).
                    if (end.clone() - start.clone()).as_i64().is_some_and(|len| len < 0) {
                        return Err(at.err(format!("slice [{start}, {end}) on axis {axis} has a negative length")));
                    }
                    (start, end)
                }
            };
            wire = self.wire(at, &format!(".slice{i}"), Slice::new(axis, start, end), &[wire])?;
        }
        Ok(wire)
    }

    /// Add(a, b) with numpy broadcasting.
    fn add(&mut self, at: &At) -> Result<OutletId> {
        at.arity(2, 2, &[])?;
        let (a, b) = (self.input(at, 0)?, self.input(at, 1)?);
        let (af, bf) = (self.fact(at, a)?, self.fact(at, b)?);
        if af.datum_type != bf.datum_type {
            return Err(at.err(format!("operands are {:?} and {:?}", af.datum_type, bf.datum_type)));
        }
        // Aligned from the right, each pair of dimensions equal or one of them 1. (tract would
        // accept 3 against 4 here and defer the failure to run time.)
        let broadcasts = af.shape.iter().rev().zip(bf.shape.iter().rev()).all(|(x, y)| x == y || x.is_one() || y.is_one());
        if !broadcasts {
            return Err(at.err(format!("shapes {:?} and {:?} do not broadcast", af.shape, bf.shape)));
        }
        let name = self.model.unique_name(at.name("")).into_owned();
        Ok(wire_with_rank_broadcast(name, &mut self.model, math::add(), &[a, b]).map_err(|e| at.tract(e))?[0])
    }

    /// Relu(x) as max(x, 0).
    fn relu(&mut self, at: &At) -> Result<OutletId> {
        at.arity(1, 1, &[])?;
        let x = self.input(at, 0)?;
        let fact = self.fact(at, x)?;
        if fact.datum_type != f32::datum_type() {
            return Err(at.err(format!("input is {:?}, expected F32", fact.datum_type)));
        }
        // Leaky ReLU with slope 0 runs on tract-linalg's SIMD kernel; `max(x, 0)` has no linalg
        // kernel and fell back to a generic broadcast loop that took a third of a ranking.
        self.wire(at, "", tract_core::ops::nn::leaky_relu(0.0), &[x])
    }

    /// Transpose(x) by the `perm` attribute (reversed axes when absent).
    fn transpose(&mut self, at: &At) -> Result<OutletId> {
        at.arity(1, 1, &["perm"])?;
        let mut wire = self.input(at, 0)?;
        let rank = self.fact(at, wire)?.rank();
        let perm = at.ints_attr("perm")?.unwrap_or_else(|| (0..rank as i64).rev().collect());
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..rank as i64).collect::<Vec<_>>() {
            return Err(at.err(format!("perm {perm:?} is not a permutation of {rank} axes")));
        }
        // Output axis i is input axis perm[i]: bring each into place from the left.
        let mut order: Vec<i64> = (0..rank as i64).collect();
        let mut moves = 0;
        for (i, p) in perm.iter().enumerate() {
            let from = order.iter().position(|o| o == p).expect("perm is a permutation");
            if from != i {
                let axis = order.remove(from);
                order.insert(i, axis);
                wire = self.wire(at, &format!(".move{moves}"), AxisOp::Move(from, i), &[wire])?;
                moves += 1;
            }
        }
        if moves == 0 {
            wire = self.wire(at, "", tract_core::ops::identity::Identity, &[wire])?;
        }
        Ok(wire)
    }

    /// A graph output's declared type, where given, must be what the graph computes.
    fn check_declared(&self, vi: &ValueInfoProto, outlet: OutletId) -> Result<()> {
        let what = format!("graph output `{}`", vi.name);
        let fact = self.model.outlet_fact(outlet).map_err(|e| HearthError::Graph(format!("{what}: {e:#}")))?;
        let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            return Ok(());
        };
        if t.elem_type != DataType::Undefined as i32 && datum_type(t.elem_type, &what)? != fact.datum_type {
            return Err(HearthError::Graph(format!("{what} is declared {:?} but computes {:?}", t.elem_type, fact.datum_type)));
        }
        let Some(shape) = &t.shape else { return Ok(()) };
        let declared: Vec<String> = shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(DimValue::DimValue(v)) => v.to_string(),
                Some(DimValue::DimParam(p)) => p.clone(),
                None => "?".into(),
            })
            .collect();
        let mismatch =
            || HearthError::Graph(format!("{what} is declared [{}] but computes {:?}", declared.join(", "), fact.shape));
        if shape.dim.len() != fact.rank() {
            return Err(mismatch());
        }
        for (d, f) in shape.dim.iter().zip(fact.shape.iter()) {
            let ok = match &d.value {
                Some(DimValue::DimValue(v)) => *f == TDim::from(*v),
                Some(DimValue::DimParam(p)) => self.model.symbols.get(p).is_some_and(|s| *f == TDim::from(s)),
                None => true,
            };
            if !ok {
                return Err(mismatch());
            }
        }
        Ok(())
    }
}

/// Dimension names become tract symbols, which must parse as identifiers.
fn is_symbol_name(p: &str) -> bool {
    let mut chars = p.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
