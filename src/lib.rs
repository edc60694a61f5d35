//! Hearth's browser module: hearth-core behind a JavaScript API. Values cross the boundary as
//! plain JS objects (serde-wasm-bindgen); every error becomes a thrown `Error` with the typed
//! message from the core.

use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{Event, RawEvent};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use hearth_core::learning::round::{self, RoundTask};
use hearth_core::model::pack::ModelPack;
use hearth_core::privacy::accountant::{self, Deployment};
use hearth_core::privacy::noise::Sampler;
use hearth_gpu::GpuScorer;
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
export type EventKind = "page_view" | "impression" | "click" | "conversion" | "dismissal";
export interface HearthEvent {
  kind: EventKind;
  /** Milliseconds since the Unix epoch. */
  ts: number;
  topics?: string[];
  keywords?: string[];
  ad_id?: string;
  campaign?: string;
  advertiser?: string;
  category?: string;
}
export interface Ad {
  id: string;
  campaign?: string;
  advertiser?: string;
  category?: string;
  /** Content features in `kind:value` form, e.g. "topic:sports". */
  features?: string[];
}
export interface PageContext {
  topics?: string[];
  keywords?: string[];
  slot?: string;
  /** Local hour, 0..=23. */
  hour?: number;
}
export interface Cap { max: number; window_ms: number; }
export interface RankOptions {
  now_ms: number;
  k?: number;
  explain?: number;
  caps?: { per_ad?: Cap; per_campaign?: Cap };
  diversity?: { slots: number; max_per_advertiser?: number; max_per_category?: number };
}
export interface Contribution { feature: string; contribution: number; }
export interface RankedAd { ad_id: string; score: number; probability: number; why: Contribution[]; }
export interface AdamConfig { lr: number; beta1: number; beta2: number; eps: number; }
export interface TrainConfig {
  reconstruction_steps?: number; reconstruction?: AdamConfig; local_l2?: number;
  epochs?: number; batch_size?: number; global?: AdamConfig;
}
/** A federated round as the aggregator announces it. */
export interface RoundTask {
  round_id: number; model_version: number;
  /** L2 clip norm C; the noise per coordinate has standard deviation noise_multiplier × C. */
  clip_norm: number; noise_multiplier: number;
  min_events?: number; encoding?: "f32" | "quantized"; train?: TrainConfig;
  /** Unix time (ms) after which the aggregator abandons the round. */
  deadline_ms?: number;
}
export interface Deployment {
  population: number;
  sampling: { clients_per_round: number } | { rate: number };
  rounds: number; noise_multiplier: number; delta: number;
}
export interface PrivacyReport {
  central_epsilon: number; local_epsilon: number; delta: number; noise_multiplier: number;
  sampling_rate: number; rounds: number; population: number; best_order: number;
}
/**
 * Ranking on the GPU: `scorer.load(hearth)` after every setCatalog / setModel, then per request
 * `hearth.rankScored(ctx, opts, await scorer.logits(hearth.gpuRequest(ctx, opts.now_ms)))`.
 * `WebGpuScorer.create()` resolves to undefined without WebGPU; rank with `hearth.rank` then.
 */
export interface ModelInputs {
  user_ids: BigInt64Array; user_w: Float32Array; local_u: Float32Array;
  ctx_ids: BigInt64Array; ctx_w: Float32Array; ad_ids: BigInt64Array; ad_w: Float32Array;
  n: number; user_slots: number; context_slots: number; ad_slots: number; dim: number;
}
"#;

// wasm-ld runs static constructors (tract registers its ops and kernels through `inventory`)
// at the top of *every* export unless the module calls `__wasm_call_ctors` itself. Calling it
// once at instantiation turns that off; measured, it was a third of a 1,000-ad ranking.
#[cfg(target_family = "wasm")]
#[allow(unsafe_code)]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

#[cfg(target_family = "wasm")]
#[wasm_bindgen(start)]
#[allow(unsafe_code)]
fn run_constructors_once() {
    // SAFETY: runs once, from wasm-bindgen's start hook, before any other export.
    unsafe { __wasm_call_ctors() }
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn from_js<T: serde::de::DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsError> {
    serde_wasm_bindgen::from_value(value).map_err(|e| JsError::new(&format!("invalid {what}: {e}")))
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(js_err)
}

#[wasm_bindgen]
pub struct Hearth {
    engine: Engine,
}

#[wasm_bindgen]
impl Hearth {
    /// Loads a model pack and a stored profile (or starts an empty one). A stored profile that
    /// cannot be read is replaced by an empty one, with a console warning saying why.
    #[wasm_bindgen(constructor)]
    pub fn new(onnx: &[u8], manifest_json: &str, profile_json: Option<String>) -> Result<Hearth, JsError> {
        let pack = ModelPack::load(onnx, manifest_json).map_err(js_err)?;
        Ok(Hearth { engine: Engine::new(pack, stored_profile(profile_json)?).map_err(js_err)? })
    }

    /// Replaces the profile with a stored one (or an empty one), as the constructor reads it.
    #[wasm_bindgen(js_name = loadProfile)]
    pub fn load_profile(&mut self, profile_json: Option<String>) -> Result<(), JsError> {
        self.engine.set_profile(stored_profile(profile_json)?);
        Ok(())
    }

    /// Replaces the model; the profile and catalog stay.
    #[wasm_bindgen(js_name = setModel)]
    pub fn set_model(&mut self, onnx: &[u8], manifest_json: &str) -> Result<(), JsError> {
        let pack = ModelPack::load(onnx, manifest_json).map_err(js_err)?;
        self.engine.set_model(pack).map_err(js_err)
    }

    #[wasm_bindgen(getter, js_name = modelVersion)]
    pub fn model_version(&self) -> f64 {
        self.engine.pack().manifest.model_version as f64
    }

    pub fn record(&mut self, #[wasm_bindgen(unchecked_param_type = "HearthEvent")] event: JsValue) -> Result<(), JsError> {
        let raw: RawEvent = from_js(event, "event")?;
        self.engine.record(Event::from_raw(raw).map_err(js_err)?).map_err(js_err)
    }

    /// Validates and installs the catalog; returns the number of ads.
    #[wasm_bindgen(js_name = setCatalog)]
    pub fn set_catalog(&mut self, #[wasm_bindgen(unchecked_param_type = "Ad[]")] ads: JsValue) -> Result<usize, JsError> {
        let ads: Vec<Ad> = from_js(ads, "catalog")?;
        self.engine.set_catalog(ads).map_err(js_err)
    }

    /// Ranks the installed catalog.
    #[wasm_bindgen(unchecked_return_type = "RankedAd[]")]
    pub fn rank(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PageContext")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "RankOptions")] options: JsValue,
    ) -> Result<JsValue, JsError> {
        let context: Context = from_js(context, "context")?;
        let options: RankOptions = from_js(options, "rank options")?;
        to_js(&self.engine.rank(&context, &options).map_err(js_err)?)
    }

    /// Ranks a one-off candidate list.
    #[wasm_bindgen(js_name = rankCandidates, unchecked_return_type = "RankedAd[]")]
    pub fn rank_candidates(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PageContext")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Ad[]")] ads: JsValue,
        #[wasm_bindgen(unchecked_param_type = "RankOptions")] options: JsValue,
    ) -> Result<JsValue, JsError> {
        let context: Context = from_js(context, "context")?;
        let ads: Vec<Ad> = from_js(ads, "candidates")?;
        let options: RankOptions = from_js(options, "rank options")?;
        to_js(&self.engine.rank_candidates(ads, &context, &options).map_err(js_err)?)
    }

    /// Ranks the installed catalog with logits computed elsewhere (`WebGpuScorer.logits`): one
    /// per catalog ad, in catalog order. Caps, diversity and explanations are those of `rank`.
    #[wasm_bindgen(js_name = rankScored, unchecked_return_type = "RankedAd[]")]
    pub fn rank_scored(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PageContext")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "RankOptions")] options: JsValue,
        logits: &[f32],
    ) -> Result<JsValue, JsError> {
        let context: Context = from_js(context, "context")?;
        let options: RankOptions = from_js(options, "rank options")?;
        to_js(&self.engine.rank_scored(&context, &options, logits).map_err(js_err)?)
    }

    /// The request side for the GPU scorer: the first-layer pre-activation q (hidden units)
    /// followed by user + context (embedding dim).
    #[wasm_bindgen(js_name = gpuRequest)]
    pub fn gpu_request(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PageContext")] context: JsValue,
        now_ms: f64,
    ) -> Result<Vec<f32>, JsError> {
        let context: Context = from_js(context, "context")?;
        Ok(hearth_gpu::request_vector(&self.engine.request_side(&context, now_ms as i64).map_err(js_err)?))
    }

    /// Logits of the installed catalog, in catalog order.
    #[wasm_bindgen(js_name = catalogLogits)]
    pub fn catalog_logits(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PageContext")] context: JsValue,
        now_ms: f64,
    ) -> Result<Vec<f32>, JsError> {
        let context: Context = from_js(context, "context")?;
        self.engine.catalog_logits(&context, now_ms as i64).map_err(js_err)
    }

    /// The exact padded inputs of `model.onnx` for this profile, page and catalog, so another
    /// ONNX runtime can be checked against this one.
    #[wasm_bindgen(js_name = modelInputs, unchecked_return_type = "ModelInputs")]
    pub fn model_inputs(
        &self,
        #[wasm_bindgen(unchecked_param_type = "PageContext")] context: JsValue,
        now_ms: f64,
    ) -> Result<JsValue, JsError> {
        let context: Context = from_js(context, "context")?;
        let (req, _) = self.engine.request(&context, now_ms as i64).map_err(js_err)?;
        let spec = self.engine.spec();
        let catalog = self.engine.catalog();
        let out = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&out, &k.into(), v).map(|_| ());
        set("user_ids", &js_sys::BigInt64Array::from(&req.user.ids[..]).into()).map_err(js_value_err)?;
        set("user_w", &js_sys::Float32Array::from(&req.user.weights[..]).into()).map_err(js_value_err)?;
        set("local_u", &js_sys::Float32Array::from(&req.local_u[..]).into()).map_err(js_value_err)?;
        set("ctx_ids", &js_sys::BigInt64Array::from(&req.context.ids[..]).into()).map_err(js_value_err)?;
        set("ctx_w", &js_sys::Float32Array::from(&req.context.weights[..]).into()).map_err(js_value_err)?;
        set("ad_ids", &js_sys::BigInt64Array::from(&catalog.ids[..]).into()).map_err(js_value_err)?;
        set("ad_w", &js_sys::Float32Array::from(&catalog.weights[..]).into()).map_err(js_value_err)?;
        for (k, v) in [
            ("n", catalog.len()),
            ("user_slots", spec.user_slots),
            ("context_slots", spec.context_slots),
            ("ad_slots", spec.ad_slots),
            ("dim", req.local_u.len()),
        ] {
            set(k, &JsValue::from(v as f64)).map_err(js_value_err)?;
        }
        Ok(out.into())
    }

    /// Trains on this device's events for `task` and returns the update to upload: clipped to
    /// `clip_norm`, noised from `crypto.getRandomValues`, in the versioned wire format. The
    /// reconstructed local embedding stays in this object; nothing else changes.
    #[wasm_bindgen(js_name = trainAndBuildUpdate)]
    pub fn train_and_build_update(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "RoundTask")] task: JsValue,
    ) -> Result<Vec<u8>, JsError> {
        // Through JSON, not serde-wasm-bindgen, which reads only the fields it knows: a task
        // with fields this build does not understand is refused rather than half-followed.
        let json: String = js_sys::JSON::stringify(&task).map_err(js_value_err)?.into();
        let task: RoundTask = serde_json::from_str(&json).map_err(|e| JsError::new(&format!("invalid round task: {e}")))?;
        Ok(round::participate(&mut self.engine, &task, &mut Sampler::os()).map_err(js_err)?.upload)
    }

    /// The whole profile as a JSON document: what Hearth keeps, for the visitor to see or save.
    #[wasm_bindgen(js_name = exportProfile)]
    pub fn export_profile(&self) -> String {
        self.engine.profile().to_json()
    }

    /// The profile's features with their decayed weights at `now_ms`, strongest first: what
    /// the ranking reads from the profile, for the visitor to see.
    #[wasm_bindgen(unchecked_return_type = "{feature: string, weight: number}[]")]
    pub fn weights(&self, now_ms: f64) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        struct Weight<'a> {
            feature: &'a str,
            weight: f64,
        }
        let weights = self.engine.profile().weights_at(now_ms as i64);
        to_js(&weights.into_iter().map(|(feature, weight)| Weight { feature, weight }).collect::<Vec<_>>())
    }

    /// Labelled examples local training would see now (a round's `min_events` counts these).
    #[wasm_bindgen(js_name = labelledEvents)]
    pub fn labelled_events(&self) -> Result<usize, JsError> {
        Ok(self.engine.examples().map_err(js_err)?.len())
    }

    /// Erases the profile and zeroes the local embedding.
    #[wasm_bindgen(js_name = eraseProfile)]
    pub fn erase_profile(&mut self) {
        self.engine.erase_profile();
    }

    /// The device-only user embedding local training fits (zeros until then). It never leaves
    /// the device; the shell stores it beside the profile so it survives a reload.
    #[wasm_bindgen(js_name = localEmbedding)]
    pub fn local_embedding(&self) -> Vec<f32> {
        self.engine.local_u().to_vec()
    }

    /// Restores a stored local embedding; refused (and the current one kept) when its length
    /// is not the model's width or a value is not finite.
    #[wasm_bindgen(js_name = setLocalEmbedding)]
    pub fn set_local_embedding(&mut self, values: &[f32]) -> Result<(), JsError> {
        self.engine.set_local_u(values).map_err(js_err)
    }
}

/// The model's request side as a WebGPU compute kernel over the catalog's cached ad side.
/// Works in a window or a dedicated worker.
#[wasm_bindgen]
pub struct WebGpuScorer {
    inner: GpuScorer,
}

#[wasm_bindgen]
impl WebGpuScorer {
    /// A scorer on the browser's GPU, or undefined when there is no WebGPU or no adapter.
    #[wasm_bindgen(unchecked_return_type = "WebGpuScorer | undefined")]
    pub async fn create() -> Result<JsValue, JsError> {
        // Checked here first: wgpu assumes a window or a worker global that has WebGPU.
        if !has_webgpu() {
            return Ok(JsValue::UNDEFINED);
        }
        Ok(GpuScorer::new().await.map_err(js_err)?.map_or(JsValue::UNDEFINED, |inner| WebGpuScorer { inner }.into()))
    }

    /// The adapter in words (browsers may reveal little).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.inner.adapter().to_string()
    }

    /// Uploads `hearth`'s installed catalog (its cached ad side) and model output layer; call
    /// again after `setCatalog` or `setModel`.
    pub fn load(&mut self, hearth: &Hearth) -> Result<(), JsError> {
        self.inner.load_engine(&hearth.engine).map_err(js_err)
    }

    /// Logits of the loaded catalog, in catalog order, for `request` from `Hearth.gpuRequest`.
    #[wasm_bindgen(unchecked_return_type = "Promise<Float32Array>")]
    pub fn logits(&self, request: &[f32]) -> js_sys::Promise {
        // The work is submitted now; the promise only waits for the read-back, so it does not
        // hold on to `self` (wasm-bindgen futures must be 'static).
        let hidden = request.len().saturating_sub(self.inner.dim());
        let pending = self.inner.logits(&request[..hidden], &request[hidden..]);
        wasm_bindgen_futures::future_to_promise(async move {
            let logits = pending.await.map_err(|e| JsValue::from(js_err(e)))?;
            Ok(js_sys::Float32Array::from(&logits[..]).into())
        })
    }
}

fn has_webgpu() -> bool {
    let get = |target: &JsValue, key: &str| js_sys::Reflect::get(target, &JsValue::from_str(key)).ok().filter(|v| v.is_object());
    get(&js_sys::global(), "navigator").and_then(|n| get(&n, "gpu")).is_some()
}

/// The privacy a deployment gives: ε of the released model and of one upload on its own.
#[wasm_bindgen(js_name = privacyReport, unchecked_return_type = "PrivacyReport")]
pub fn privacy_report(#[wasm_bindgen(unchecked_param_type = "Deployment")] deployment: JsValue) -> Result<JsValue, JsError> {
    let deployment: Deployment = from_js(deployment, "deployment")?;
    to_js(&accountant::report(&deployment).map_err(js_err)?)
}

/// A stored profile, or an empty one; one that cannot be read is replaced by an empty one, with
/// a console warning saying why.
fn stored_profile(json: Option<String>) -> Result<Profile, JsError> {
    let Some(json) = json else {
        return Profile::new(ProfileConfig::default()).map_err(js_err);
    };
    let (profile, dropped) = Profile::load_or_reset(&json, ProfileConfig::default()).map_err(js_err)?;
    if let Some(reason) = dropped {
        console_warn(&format!("hearth: stored profile reset: {reason}"));
    }
    Ok(profile)
}

fn js_value_err(v: JsValue) -> JsError {
    JsError::new(&format!("{v:?}"))
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn console_warn(message: &str);
}
