//! Scoring with tract. The pack's graph is cut at `ad_side` into two ONNX graphs: the ad side
//! runs once per catalog and model version, the request side on every ranking. Both are
//! sliced from the pack's own graph, so they compute exactly what the full graph computes.

use crate::error::{HearthError, Result};
use crate::model::features::Slots;
use crate::model::graph::{AD_INPUTS, AD_SIDE, Dim, LOGITS, REQUEST_INPUTS, value_info};
use crate::model::onnx_pb::{GraphProto, ModelProto, ValueInfoProto, tensor_proto::DataType};
use crate::model::pack::ModelPack;
use crate::model::tract_import;
use std::collections::HashSet;
use tract_core::prelude::*;

type Plan = std::sync::Arc<TypedRunnableModel>;

/// The per-request inputs: the visitor's pooled features, local embedding and page context.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The profile's strongest features, `user_slots` wide (see
    /// `device::profile::Profile::user_slots`).
    pub user: Slots,
    /// The device-only user embedding, `dim` wide, added to the pooled profile vector.
    pub local_u: Vec<f32>,
    /// The page context, `context_slots` wide.
    pub context: Slots,
}

/// The pack's graph as two tract plans: the ad side (ad ids in, `ad_side` rows out) and the
/// request side (`ad_side` rows and the request in, logits out).
pub struct Scorer {
    ad_plan: Plan,
    request_plan: Plan,
    ad_slots: usize,
    width: usize,
}

/// The pack's graph uncut, ids in: what any ONNX runtime computes from `model.onnx`. Ranking
/// never needs it (so loading a pack does not plan it); tests and benchmarks compare with it.
pub struct WholeGraph {
    plan: Plan,
    ad_slots: usize,
}

fn tract_err(e: impl std::fmt::Display) -> HearthError {
    HearthError::Inference(format!("{e:#}"))
}

/// Imports the graph into tract-core, then optimises it into a runnable plan.
fn plan(proto: &ModelProto) -> Result<Plan> {
    tract_import::typed_model(proto)?.into_optimized().and_then(|m| m.into_runnable()).map_err(tract_err)
}

/// The sub-graph that computes `outputs` from `inputs`: the nodes on a path between them and
/// the initializers those nodes read. Fails if the outputs need anything else.
pub fn extract(model: &ModelProto, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> Result<ModelProto> {
    let graph = model.graph.as_ref().ok_or_else(|| HearthError::Graph("no graph".into()))?;
    let given: HashSet<&str> = inputs.iter().map(|v| v.name.as_str()).collect();
    let mut needed: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = outputs.iter().map(|v| v.name.as_str()).collect();
    let mut keep = vec![false; graph.node.len()];
    while let Some(name) = stack.pop() {
        if given.contains(name) || !needed.insert(name) {
            continue;
        }
        match graph.node.iter().position(|n| n.output.iter().any(|o| o == name)) {
            Some(i) => {
                keep[i] = true;
                stack.extend(graph.node[i].input.iter().map(String::as_str).filter(|s| !s.is_empty()));
            }
            None if graph.initializer.iter().any(|t| t.name == name) => {}
            None => return Err(HearthError::Graph(format!("`{name}` is neither computed nor given"))),
        }
    }
    let sub = GraphProto {
        name: graph.name.clone(),
        node: graph.node.iter().zip(&keep).filter(|(_, k)| **k).map(|(n, _)| n.clone()).collect(),
        initializer: graph.initializer.iter().filter(|t| needed.contains(t.name.as_str())).cloned().collect(),
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    Ok(ModelProto { graph: Some(sub), ..model.clone() })
}

fn declared(model: &ModelProto, name: &str) -> ValueInfoProto {
    let graph = model.graph.as_ref().expect("pack has a graph");
    graph.input.iter().chain(&graph.output).find(|v| v.name == name).cloned().expect("pack checked its io")
}

impl Scorer {
    /// Cuts the pack's graph at `ad_side` and plans both halves with tract; `Graph` if the graph
    /// cannot be cut or imported, `Inference` if tract cannot optimise a half.
    pub fn new(pack: &ModelPack) -> Result<Scorer> {
        let proto = &pack.proto;
        let width = pack.params.arch.ad_side_width();
        let side = value_info(AD_SIDE, DataType::Float, &[Dim::Batch, Dim::Fixed(width)]);
        let ad = extract(proto, AD_INPUTS.iter().map(|n| declared(proto, n)).collect(), vec![side.clone()])?;
        let request_inputs = std::iter::once(side).chain(REQUEST_INPUTS.iter().map(|n| declared(proto, n))).collect();
        let request = extract(proto, request_inputs, vec![declared(proto, LOGITS)])?;
        Ok(Scorer { ad_plan: plan(&ad)?, request_plan: plan(&request)?, ad_slots: pack.manifest.features.ad_slots, width })
    }

    /// Floats per ad-side row: `dim + hidden + 1`.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Ad-side rows (`n × width`) for `n` ads' padded ids and weights.
    pub fn ad_side(&self, ids: &[i64], weights: &[f32]) -> Result<Vec<f32>> {
        let n = ids.len() / self.ad_slots;
        if n == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .ad_plan
            .run(tvec![tensor(&[n, self.ad_slots], ids)?.into(), tensor(&[n, self.ad_slots], weights)?.into()])
            .map_err(tract_err)?;
        to_vec(&out[0])
    }

    /// Logits for precomputed ad-side rows.
    pub fn logits(&self, req: &Request, ad_side: &[f32]) -> Result<Vec<f32>> {
        let n = ad_side.len() / self.width;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut inputs = tvec![tensor(&[n, self.width], ad_side)?.into()];
        inputs.extend(request_tensors(req)?);
        let out = self.request_plan.run(inputs).map_err(tract_err)?;
        to_vec(&out[0])
    }
}

impl WholeGraph {
    /// Plans the pack's whole graph (tract's optimiser on the uncut model).
    pub fn new(pack: &ModelPack) -> Result<WholeGraph> {
        Ok(WholeGraph { plan: plan(&pack.proto)?, ad_slots: pack.manifest.features.ad_slots })
    }

    /// Logits of the ads whose padded ids and weights (`n × ad_slots`, row-major) are given, in
    /// that order.
    pub fn logits(&self, req: &Request, ids: &[i64], weights: &[f32]) -> Result<Vec<f32>> {
        let n = ids.len() / self.ad_slots;
        let mut inputs: TVec<TValue> = request_tensors(req)?;
        inputs.push(tensor(&[n, self.ad_slots], ids)?.into());
        inputs.push(tensor(&[n, self.ad_slots], weights)?.into());
        let out = self.plan.run(inputs).map_err(tract_err)?;
        to_vec(&out[0])
    }
}

fn tensor<T: Datum + Copy>(shape: &[usize], data: &[T]) -> Result<Tensor> {
    Tensor::from_shape(shape, data).map_err(tract_err)
}

fn request_tensors(req: &Request) -> Result<TVec<TValue>> {
    Ok(tvec![
        tensor(&[1, req.user.ids.len()], &req.user.ids)?.into(),
        tensor(&[1, req.user.weights.len()], &req.user.weights)?.into(),
        tensor(&[1, req.local_u.len()], &req.local_u)?.into(),
        tensor(&[1, req.context.ids.len()], &req.context.ids)?.into(),
        tensor(&[1, req.context.weights.len()], &req.context.weights)?.into(),
    ])
}

fn to_vec(t: &TValue) -> Result<Vec<f32>> {
    Ok(t.to_plain_array_view::<f32>().map_err(tract_err)?.iter().copied().collect())
}
