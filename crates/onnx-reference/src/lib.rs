//! tract-onnx, the reference ONNX loader, held against hearth-core.
//!
//! hearth-core reads packs with its own slim importer (`model::tract_import`, tract-core only),
//! because the full `tract-onnx` front end doubles the browser module (measured: 1.25 MB to
//! 2.50 MB gzip after wasm-opt -O3). Natively, every pack Hearth writes or accepts must also load
//! through `tract-onnx`, as any ONNX user would load it, and score the same logits within
//! [`TOLERANCE`]. This crate is that comparison, in one place: hearth-core's tests (random packs,
//! damaged graphs) and the aggregator's check of the operator's initial pack call it. It is
//! native only: the browser module (the root package `hearth`) never depends on it, so tract-onnx
//! never reaches the wasm.
//!
//! tract-onnx may panic on graphs it does not expect; [`Reference`] turns a panic into a refusal
//! (where panics unwind: under `panic = "abort"` a panic still ends the process).

#![warn(missing_docs)]

use hearth_core::model::features::Slots;
use hearth_core::model::pack::ModelPack;
use hearth_core::model::params::Gaussian;
use hearth_core::model::scorer::{Request, Scorer};
use std::panic::AssertUnwindSafe;
use tract_onnx::prelude::*;

/// How far a reference output may be from hearth-core's: `|hearth − reference| ≤ TOLERANCE ·
/// (1 + |reference|)`, the bound hearth-core's own tests hold the cut graph, the whole graph and
/// the plain-Rust forward pass to.
pub const TOLERANCE: f64 = 1e-5;

/// Candidate counts of the inputs [`check_pack`] scores: one ad, a few, a page's worth.
pub const BATCHES: [usize; 3] = [1, 5, 32];

/// Why a pack fails the reference check.
#[derive(Debug, thiserror::Error)]
pub enum Disagreement {
    /// tract-onnx cannot load, optimise or run the model (an error or a panic inside it), or it
    /// reads a shape in it that depends on the data, which no pack has.
    #[error("tract-onnx refuses it: {0}")]
    Refused(String),
    /// hearth-core's scorer failed on an input tract-onnx scored.
    #[error("hearth-core cannot score input {case} ({ads} ads): {source}")]
    Hearth {
        /// Which input (index into [`BATCHES`]).
        case: usize,
        /// Its candidate count.
        ads: usize,
        /// hearth-core's error.
        source: hearth_core::HearthError,
    },
    /// Both scored the input and the logits differ beyond [`TOLERANCE`].
    #[error("input {case} ({ads} ads): {detail}")]
    Differs {
        /// Which input (index into [`BATCHES`]).
        case: usize,
        /// Its candidate count.
        ads: usize,
        /// The first logit that differs.
        detail: String,
    },
}

/// A model loaded by tract-onnx: parsed from the ONNX bytes, typed, optimised and planned.
pub struct Reference {
    plan: std::sync::Arc<TypedRunnableModel>,
    inputs: Vec<String>,
}

impl Reference {
    /// Loads `onnx` as a tract-onnx user would (`onnx().model_for_read`, `into_optimized`,
    /// `into_runnable`), with one setting: the graph's declared output shapes hold too, as
    /// hearth-core's importer holds them (tract-onnx ignores them by default). The error is
    /// tract-onnx's message.
    pub fn load(onnx: &[u8]) -> Result<Reference, String> {
        guarded(|| {
            let model = tract_onnx::onnx().with_ignore_output_shapes(false).model_for_read(&mut &onnx[..])?.into_optimized()?;
            let inputs = model.inputs.iter().map(|o| model.node(o.node).name.clone()).collect();
            Ok(Reference { plan: model.into_runnable()?, inputs })
        })
    }

    /// The graph inputs, in the order [`Reference::run`] takes them.
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }

    /// The first value whose shape depends on the data rather than on the shapes of the
    /// inputs (a symbol no input declares), if any. A pack's graph has none; running a model
    /// with one may allocate without bound.
    pub fn data_dependent_shape(&self) -> Option<String> {
        let model = self.plan.model();
        let declared: Vec<_> = model
            .inputs
            .iter()
            .filter_map(|o| model.outlet_fact(*o).ok())
            .flat_map(|f| f.shape.iter().flat_map(|d| d.symbols()))
            .collect();
        model.nodes().iter().find_map(|node| {
            let out =
                node.outputs.iter().find(|o| o.fact.shape.iter().any(|d| d.symbols().iter().any(|s| !declared.contains(s))))?;
            Some(format!("`{}` has shape {:?}", node.name, out.fact.shape))
        })
    }

    /// Runs the model on `inputs` (in [`Reference::input_names`] order).
    pub fn run(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, String> {
        guarded(|| self.plan.run(inputs))
    }
}

/// Runs `f`, turning a tract error or a panic into a message.
fn guarded<T>(f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => {
            let msg = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
            Err(format!("panicked: {}", msg.unwrap_or_else(|| "(no message)".into())))
        }
    }
}

/// Whether `hearth` is within [`TOLERANCE`] of `reference` (equal infinities and two NaNs agree).
pub fn close(hearth: f64, reference: f64) -> bool {
    if hearth.is_nan() || reference.is_nan() {
        hearth.is_nan() && reference.is_nan()
    } else if hearth.is_infinite() || reference.is_infinite() {
        hearth == reference
    } else {
        (hearth - reference).abs() <= TOLERANCE * (1.0 + reference.abs())
    }
}

/// The first logit where `hearth` and `reference` disagree, as a message.
pub fn compare(hearth: &[f32], reference: &[f32]) -> Result<(), String> {
    if hearth.len() != reference.len() {
        return Err(format!("hearth-core gives {} logits, tract-onnx {}", hearth.len(), reference.len()));
    }
    match hearth.iter().zip(reference).position(|(h, r)| !close(f64::from(*h), f64::from(*r))) {
        None => Ok(()),
        Some(i) => Err(format!("logit {i}: hearth-core {} vs tract-onnx {}", hearth[i], reference[i])),
    }
}

/// Two tensors agree: same element type and shape, values within [`TOLERANCE`] (integers exact).
pub fn compare_tensors(hearth: &Tensor, reference: &Tensor) -> Result<(), String> {
    if hearth.datum_type() != reference.datum_type() || hearth.shape() != reference.shape() {
        return Err(format!(
            "hearth-core gives {:?} {:?}, tract-onnx {:?} {:?}",
            hearth.datum_type(),
            hearth.shape(),
            reference.datum_type(),
            reference.shape()
        ));
    }
    let values = |t: &Tensor| -> Result<Vec<f64>, String> {
        let t = t.cast_to::<f64>().map_err(|e| format!("{e:#}"))?;
        Ok(t.to_plain_array_view::<f64>().map_err(|e| format!("{e:#}"))?.iter().copied().collect())
    };
    let (h, r) = (values(hearth)?, values(reference)?);
    match h.iter().zip(&r).position(|(a, b)| !close(*a, *b)) {
        None => Ok(()),
        Some(i) => Err(format!("value {i}: hearth-core {} vs tract-onnx {}", h[i], r[i])),
    }
}

/// One input of a pack's graph: a visitor's request and `n` candidate ads, padded as the graph
/// takes them.
#[derive(Debug, Clone)]
pub struct Case {
    /// The visitor's pooled features, local embedding and page context.
    pub request: Request,
    /// `ads × ad_slots` padded ids, row by row.
    pub ad_ids: Vec<i64>,
    /// Their weights, likewise.
    pub ad_w: Vec<f32>,
    /// The candidate count (the graph's batch `N`).
    pub ads: usize,
}

/// Random padded slots: some real ids (`1..buckets`), the rest padding, weights of both signs.
fn random_slots(rng: &mut Gaussian, slots: usize, buckets: u64) -> Slots {
    let used = 1 + (rng.next_u64() as usize % slots);
    let mut ids = vec![0i64; slots];
    let mut weights = vec![0f32; slots];
    for i in 0..used {
        ids[i] = 1 + (rng.next_u64() % (buckets - 1)) as i64;
        weights[i] = rng.normal() as f32;
    }
    Slots { ids, weights }
}

impl Case {
    /// A deterministic random input for `pack` with `ads` candidates.
    pub fn random(pack: &ModelPack, rng: &mut Gaussian, ads: usize) -> Case {
        let f = &pack.manifest.features;
        let buckets = u64::from(f.buckets);
        let request = Request {
            user: random_slots(rng, f.user_slots, buckets),
            local_u: (0..pack.manifest.embedding_dim).map(|_| 0.3 * rng.normal() as f32).collect(),
            context: random_slots(rng, f.context_slots, buckets),
        };
        let rows: Vec<Slots> = (0..ads).map(|_| random_slots(rng, f.ad_slots, buckets)).collect();
        let ad_ids = rows.iter().flat_map(|s| s.ids.iter().copied()).collect();
        let ad_w = rows.iter().flat_map(|s| s.weights.iter().copied()).collect();
        Case { request, ad_ids, ad_w, ads }
    }

    /// The graph input `name` (one of the pack's declared inputs) as a tensor.
    pub fn tensor(&self, name: &str) -> Result<Tensor, String> {
        let r = &self.request;
        let n = self.ads;
        let t = match name {
            "user_ids" => Tensor::from_shape(&[1, r.user.ids.len()], &r.user.ids),
            "user_w" => Tensor::from_shape(&[1, r.user.weights.len()], &r.user.weights),
            "local_u" => Tensor::from_shape(&[1, r.local_u.len()], &r.local_u),
            "ctx_ids" => Tensor::from_shape(&[1, r.context.ids.len()], &r.context.ids),
            "ctx_w" => Tensor::from_shape(&[1, r.context.weights.len()], &r.context.weights),
            "ad_ids" => Tensor::from_shape(&[n, self.ad_ids.len() / n.max(1)], &self.ad_ids),
            "ad_w" => Tensor::from_shape(&[n, self.ad_w.len() / n.max(1)], &self.ad_w),
            other => return Err(format!("the graph has an input `{other}` no pack declares")),
        };
        t.map_err(|e| format!("{e:#}"))
    }

    /// Logits from hearth-core's scorer: the ad side, then the request side (the cut graph, as
    /// devices rank).
    pub fn hearth_logits(&self, scorer: &Scorer) -> hearth_core::Result<Vec<f32>> {
        scorer.logits(&self.request, &scorer.ad_side(&self.ad_ids, &self.ad_w)?)
    }

    /// Logits from tract-onnx on the whole graph.
    pub fn reference_logits(&self, reference: &Reference) -> Result<Vec<f32>, String> {
        let inputs = reference.input_names().iter().map(|n| self.tensor(n).map(TValue::from)).collect::<Result<_, _>>()?;
        let out = reference.run(inputs)?;
        let first = out.first().ok_or("the model has no output")?;
        Ok(first.to_plain_array_view::<f32>().map_err(|e| format!("{e:#}"))?.iter().copied().collect())
    }
}

/// Loads `onnx` (the bytes `pack` was loaded from) with tract-onnx and scores deterministic
/// random inputs (one per [`BATCHES`] entry, drawn from `seed`) both with it, on the whole
/// graph, and with `scorer`, hearth-core's cut graph; every logit must agree within
/// [`TOLERANCE`].
pub fn check_pack(pack: &ModelPack, scorer: &Scorer, onnx: &[u8], seed: u64) -> Result<(), Disagreement> {
    let reference = Reference::load(onnx).map_err(Disagreement::Refused)?;
    if let Some(what) = reference.data_dependent_shape() {
        return Err(Disagreement::Refused(format!("it reads a shape that depends on the data: {what}")));
    }
    let mut rng = Gaussian::new(seed);
    for (case, ads) in BATCHES.into_iter().enumerate() {
        let input = Case::random(pack, &mut rng, ads);
        let want = input.reference_logits(&reference).map_err(Disagreement::Refused)?;
        let got = input.hearth_logits(scorer).map_err(|source| Disagreement::Hearth { case, ads, source })?;
        compare(&got, &want).map_err(|detail| Disagreement::Differs { case, ads, detail })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_is_relative_above_one_and_absolute_below() {
        assert!(close(1.0, 1.0 + 1.9e-5));
        assert!(!close(1.0, 1.0 + 2.1e-5));
        assert!(close(100.0, 100.0 + 1e-3));
        assert!(!close(0.0, 1.1e-5));
        assert!(close(f64::NAN, f64::NAN) && close(f64::INFINITY, f64::INFINITY));
        assert!(!close(f64::NAN, 0.0) && !close(f64::INFINITY, f64::NEG_INFINITY) && !close(5.0, f64::INFINITY));
    }

    #[test]
    fn compare_names_the_first_logit_that_differs() {
        assert!(compare(&[1.0, -2.0], &[1.0, -2.0 + 1e-6]).is_ok());
        assert_eq!(compare(&[1.0, -2.0, 3.0], &[1.0, -2.1, 3.5]).unwrap_err(), "logit 1: hearth-core -2 vs tract-onnx -2.1");
        assert!(compare(&[1.0], &[1.0, 2.0]).unwrap_err().contains("1 logits, tract-onnx 2"));
    }

    #[test]
    fn compare_tensors_wants_the_same_type_and_shape() {
        let a = Tensor::from_shape(&[2], &[1f32, 2.]).unwrap();
        assert!(compare_tensors(&a, &Tensor::from_shape(&[2], &[1f32, 2.000001]).unwrap()).is_ok());
        assert!(compare_tensors(&a, &Tensor::from_shape(&[1, 2], &[1f32, 2.]).unwrap()).is_err());
        assert!(compare_tensors(&a, &Tensor::from_shape(&[2], &[1f64, 2.]).unwrap()).is_err());
        let ints = Tensor::from_shape(&[2], &[7i64, 8]).unwrap();
        assert!(compare_tensors(&ints, &Tensor::from_shape(&[2], &[7i64, 9]).unwrap()).unwrap_err().contains("value 1"));
    }

    #[test]
    fn bytes_that_are_not_onnx_are_refused_not_a_panic() {
        assert!(Reference::load(b"not a model").is_err());
        assert!(Reference::load(&[]).is_err());
    }
}
