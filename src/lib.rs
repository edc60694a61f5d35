//! Hearth's browser module: hearth-core behind a JavaScript API. Values cross the boundary as
//! plain JS objects (serde-wasm-bindgen); every error becomes a thrown `Error` with the typed
//! message from the core, and the device's own privacy refusals also carry their kind as the
//! error's `name` (`core_err`), so the SDK can tell them apart without parsing messages.

use hearth_core::HearthError;
use hearth_core::device::catalog::{Ad, Context};
use hearth_core::device::engine::Engine;
use hearth_core::device::event::{Event, RawEvent};
use hearth_core::device::profile::{Profile, ProfileConfig};
use hearth_core::device::rank::RankOptions;
use hearth_core::learning::round::{self, HelperConfig, RoundTask};
use hearth_core::measure::hpke_dap::check_suite;
use hearth_core::measure::prio::codec::Decode;
use hearth_core::measure::task::{DEVICE_MAX_EPSILON, DEVICE_REPORT_GAP_SECS};
use hearth_core::measure::{Kind, Tally, TaskParams, build_report, dap};
use hearth_core::model::pack::ModelPack;
use hearth_core::privacy::accountant::{self, Deployment};
use hearth_core::privacy::ledger::{DevicePolicy, Ledger};
use hearth_core::privacy::noise::Sampler;
use hearth_gpu::GpuScorer;
use serde::Serialize;
use serde::de::DeserializeOwned;
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
/**
 * Most impressions of one ad (or campaign): `day` within the 24 hours before the ranking,
 * `session` since the session began (a session ends after 30 minutes without any event). A field
 * left out keeps its default, `null` removes that cap; 0 is refused.
 */
export interface CapSpec { day?: number | null; session?: number | null; }
/**
 * Defaults: ad 3 a day and 2 a session, campaign 6 a day and 4 a session. `null` removes that
 * kind's caps. An ad at a cap is left out unless fewer than `k` ads remain.
 */
export interface Caps { ad?: CapSpec | null; campaign?: CapSpec | null; }
export interface RankOptions {
  now_ms: number;
  k?: number;
  explain?: number;
  caps?: Caps;
  /** Ads to leave out unless fewer than `k` others remain (the last ads of the slots being filled). */
  avoid?: string[];
  /** False: rank on the page context alone, as for an empty profile (default true). */
  personalized?: boolean;
  diversity?: { slots: number; max_per_advertiser?: number; max_per_category?: number };
}
export interface Contribution { feature: string; contribution: number; }
export interface RankedAd { ad_id: string; score: number; probability: number; why: Contribution[]; }
export interface AdamConfig { lr: number; beta1: number; beta2: number; eps: number; }
export interface TrainConfig {
  reconstruction_steps?: number; reconstruction?: AdamConfig; local_l2?: number;
  epochs?: number; batch_size?: number; global?: AdamConfig;
}
/** A federated round as the aggregator (the leader) announces it. */
export interface RoundTask {
  round_id: number; model_version: number;
  /** L2 clip norm C of the update. */
  clip_norm: number;
  /**
   * The device's own noise: standard deviation noise_multiplier × C per coordinate (plaintext),
   * or noise_multiplier × C̃ grid units of discrete Gaussian (secure aggregation).
   */
  noise_multiplier: number;
  min_events?: number;
  /** How a plaintext update's values are written; unused with `secagg`. */
  encoding?: "f32" | "quantized";
  train?: TrainConfig;
  /** Unix time (ms) after which the aggregator abandons the round. */
  deadline_ms?: number;
  /** q: the device joins with this probability, by its own coin (default 1). */
  sampling_rate?: number;
  /** Present when the round runs through the leader and a helper: the upload is a report. */
  secagg?: SecAggTask;
}
/** The secure-aggregation part of a round task. */
export interface SecAggTask {
  /** Reports summed per release. */
  clients: number;
  /** z of each server's discrete Gaussian, in units of C̃. */
  leader_noise: number; helper_noise: number;
}
/** The helper's HPKE key (RFC 9180: X25519, HKDF-SHA256, ChaCha20Poly1305). */
export interface HpkeConfig {
  key_id: number; kem: string; kdf: string; aead: string;
  /** 64 lower-case hex digits. */
  public_key: string;
}
/** What the helper serves at its own /v1/helper_config; never taken from the leader. */
export interface HelperConfig {
  hpke: HpkeConfig;
  /** z of the helper's discrete Gaussian per release. */
  noise_multiplier: number;
  /** The fewest reports the helper releases a sum for. */
  min_clients: number;
}
/** One round the device joined, as its ledger records it. */
export interface LedgerEntry {
  round_id: number; sampling_rate: number; clip_norm: number;
  /** Noise multiplier protecting the upload from one curious server. */
  curious_server_noise: number;
  /** Noise multiplier protecting it if both servers collude (the device's own). */
  collusion_noise: number;
  secure: boolean;
}
/**
 * The device's privacy ledger (stored as its JSON text): the rounds it joined and the coin of
 * the latest round it considered. It holds nothing about events or pages.
 */
export interface Ledger {
  entries: LedgerEntry[];
  coin?: { round_id: number; heads: boolean };
}
/** What the ledger adds up to. */
export interface Spent {
  /** Rounds joined. */
  rounds: number;
  /** ε against one curious server, or a fake-client (Sybil) attack; the budget applies to it. */
  curious_server_epsilon: number;
  /** ε if both servers colluded: Infinity without the device's own noise. */
  collusion_epsilon: number;
  /** The device's budget: 8 in this release, or less where the publisher lowered it. */
  epsilon_budget: number;
  delta: number;
  max_rounds: number;
  /** Whether one more round like the last still fits the budget. */
  may_join: boolean;
}
/**
 * `Hearth.takePart`: "joined" with the upload to send (the ledger already records it), or
 * "not_sampled" when the device's coin says sit this round out. Store `ledger` before sending.
 * Refusals throw an Error named "BelowDeviceFloor" (a task asking for less protection than this
 * release allows), "DeviceBudgetSpent" (the ledger's budget) or "LedgerUnreadable" (a stored
 * ledger that does not parse: treat it as spent).
 */
export type TakePart =
  | { status: "joined"; upload: Uint8Array; contentType: "application/vnd.hearth.report" | "application/vnd.hearth.update"; ledger: string }
  | { status: "not_sampled"; ledger: string };
export interface Deployment {
  population: number;
  sampling: { clients_per_round: number } | { rate: number };
  rounds: number; noise_multiplier: number; delta: number;
}
/**
 * A measurement task this device reports to (`measureTask`): the leader's task document
 * (GET /v1/measure/task) checked, its id recomputed here.
 */
export interface MeasureTask {
  /** The id this device computed from the parameters (base64url): the upload names it. */
  taskId: string;
  /** The period, in seconds: one report per period, sent during the next one. */
  periodSecs: number;
  /** The device counts a period only this long (s) after the last period it counted: one report a day at most. */
  reportGapSecs: number;
}
/** How an ad event is counted: the kinds of `EventKind` that measurement counts. */
export type MeasuredKind = "impression" | "click" | "conversion" | "dismissal";
export interface PrivacyReport {
  /** ε of the released models over all rounds (add/remove one device, sampling amplifies). */
  central_epsilon: number;
  /**
   * ε of one plaintext upload seen alone by whoever receives it: replace-one neighbours (two
   * possible histories of the device, sensitivity 2C), no sampling amplification.
   */
  local_epsilon: number;
  delta: number; noise_multiplier: number;
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

/// A core error as a thrown `Error`. The device's own privacy refusals are named after their
/// kind, because the SDK answers them differently: a task below the floor or a helper key the
/// device cannot seal to (`SecAgg`) is the servers' doing and warned about, a spent budget is
/// the device's normal end of participation.
fn core_err(e: HearthError) -> JsValue {
    let name = match e {
        HearthError::BelowDeviceFloor(_) => Some("BelowDeviceFloor"),
        HearthError::DeviceBudgetSpent(_) => Some("DeviceBudgetSpent"),
        HearthError::SecAgg(_) => Some("SecAgg"),
        _ => None,
    };
    named_err(name, &e.to_string())
}

fn named_err(name: Option<&str>, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    if let Some(name) = name {
        error.set_name(name);
    }
    error.into()
}

fn from_js<T: serde::de::DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsError> {
    serde_wasm_bindgen::from_value(value).map_err(|e| JsError::new(&format!("invalid {what}: {e}")))
}

/// Through JSON, not serde-wasm-bindgen, which reads only the fields it knows: a task or helper
/// configuration with fields this build does not understand is refused rather than half-followed.
/// The error is the message, for the caller to name.
fn from_json<T: DeserializeOwned>(value: &JsValue, what: &str) -> Result<T, String> {
    let json = js_sys::JSON::stringify(value).map_err(|v| format!("invalid {what}: {v:?}"))?;
    serde_json::from_str(&String::from(json)).map_err(|e| format!("invalid {what}: {e}"))
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

    /// Remembers that `adId` is the ad now shown in `slot`, so that the next fill can avoid it
    /// there (`RankOptions.avoid`). Kept in the profile: erased with it.
    #[wasm_bindgen(js_name = noteShown)]
    pub fn note_shown(&mut self, slot: &str, ad_id: &str) -> Result<(), JsError> {
        self.engine.note_shown(slot, ad_id).map_err(js_err)
    }

    /// The ad last shown in `slot`, if the profile remembers one.
    #[wasm_bindgen(js_name = lastShown)]
    pub fn last_shown(&self, slot: &str) -> Option<String> {
        self.engine.profile().last_shown(slot).map(str::to_string)
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
    /// per catalog ad, in catalog order. Dismissals, caps, diversity and explanations are those of
    /// `rank`; `personalized: false` is refused (the logits carry the profile): use `rank`.
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

    /// Trains on this device's events for a plaintext `task` and returns the update to upload:
    /// clipped to `clip_norm`, noised from `crypto.getRandomValues`, in the versioned wire format.
    /// The device's floor applies (`DevicePolicy::RELEASE`); no coin and no ledger, so this is
    /// for measuring, not for taking part (`takePart`). The reconstructed local embedding stays
    /// in this object; nothing else changes.
    #[wasm_bindgen(js_name = trainAndBuildUpdate)]
    pub fn train_and_build_update(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "RoundTask")] task: JsValue,
    ) -> Result<Vec<u8>, JsValue> {
        let task: RoundTask = from_json(&task, "round task").map_err(|m| JsError::new(&m))?;
        let taken = round::participate(&mut self.engine, &task, None, &DevicePolicy::RELEASE, &mut Sampler::os());
        Ok(taken.map_err(core_err)?.upload)
    }

    /// This device's part in a round: the floor, its coin (once per round, kept in the ledger),
    /// the ledger's budget, then training and the upload, recorded in the returned ledger.
    /// `helper` is the helper's own configuration (required when the task has `secagg`),
    /// `ledger_json` the stored ledger (`null`: none yet), `budget` the publisher's ε budget,
    /// which can only lower this release's.
    #[wasm_bindgen(js_name = takePart, unchecked_return_type = "TakePart")]
    pub fn take_part(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "RoundTask")] task: JsValue,
        #[wasm_bindgen(unchecked_param_type = "HelperConfig | null")] helper: JsValue,
        ledger_json: Option<String>,
        budget: Option<f64>,
    ) -> Result<JsValue, JsValue> {
        let task: RoundTask = from_json(&task, "round task").map_err(|m| JsError::new(&m))?;
        // A helper configuration this build cannot read is the helper's (or an impostor's) fault,
        // like a key of another suite: named as a secure-aggregation refusal.
        let helper: Option<HelperConfig> = if helper.is_null() || helper.is_undefined() {
            None
        } else {
            Some(from_json(&helper, "helper configuration").map_err(|m| named_err(Some("SecAgg"), &m))?)
        };
        let policy = device_policy(budget)?;
        let mut ledger = stored_ledger(ledger_json)?;
        let taken = round::take_part(&mut self.engine, &task, helper.as_ref(), &mut ledger, &policy, &mut Sampler::os())
            .map_err(core_err)?;
        let out = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&out, &k.into(), v).map(|_| ());
        set("ledger", &serde_json::to_string(&ledger).map_err(js_err)?.into())?;
        match taken {
            None => set("status", &"not_sampled".into())?,
            Some(p) => {
                set("status", &"joined".into())?;
                set("upload", &js_sys::Uint8Array::from(&p.upload[..]).into())?;
                let content_type =
                    if task.secagg.is_some() { "application/vnd.hearth.report" } else { "application/vnd.hearth.update" };
                set("contentType", &content_type.into())?;
            }
        }
        Ok(out.into())
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

/// What a stored ledger (`null`: none yet) adds up to under this release's policy, with the
/// publisher's `budget` when given.
#[wasm_bindgen(js_name = ledgerSummary, unchecked_return_type = "Spent")]
pub fn ledger_summary(ledger_json: Option<String>, budget: Option<f64>) -> Result<JsValue, JsValue> {
    let policy = device_policy(budget)?;
    Ok(to_js(&stored_ledger(ledger_json)?.spent(&policy).map_err(core_err)?)?)
}

/// `DevicePolicy::RELEASE`, with the publisher's ε budget when it is lower: a publisher may
/// protect its visitors more than this release does, never less.
fn device_policy(budget: Option<f64>) -> Result<DevicePolicy, JsError> {
    let mut policy = DevicePolicy::RELEASE;
    policy.epsilon_budget = lowered(policy.epsilon_budget, budget)?;
    Ok(policy)
}

/// This release's ε limit `own`, or the publisher's `budget` where that is lower. A budget that
/// is not a finite positive number is refused, never read as "no budget".
fn lowered(own: f64, budget: Option<f64>) -> Result<f64, JsError> {
    match budget {
        None => Ok(own),
        Some(b) if b.is_finite() && b > 0.0 => Ok(own.min(b)),
        Some(b) => Err(JsError::new(&format!("invalid privacy budget {b}: ε must be finite and positive"))),
    }
}

/// Checks the leader's measurement task document (its parameters and the `task_id` it names
/// them by) before this device counts for it or reports to it. `budget` is the publisher's
/// ε ceiling per period (`data-measure-budget`), which can only lower this release's.
#[wasm_bindgen(js_name = measureTask, unchecked_return_type = "MeasureTask")]
pub fn measure_task(task_json: &str, budget: Option<f64>) -> Result<JsValue, JsError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Checked {
        task_id: String,
        period_secs: u64,
        report_gap_secs: u64,
    }
    let task = checked_task(task_json, budget)?;
    to_js(&Checked {
        task_id: task.task_id().to_string(),
        period_secs: task.period_secs,
        report_gap_secs: DEVICE_REPORT_GAP_SECS,
    })
}

/// Counts one ad event in the tally of the period starting at `period_start` (seconds): `tally`
/// is that period's stored tally (JSON), or `null` to start it. Returns the tally to store. The
/// tally keeps names, not task positions, and its own bounds; the task's apply in `measureReport`.
#[wasm_bindgen(js_name = measureRecord)]
pub fn measure_record(
    tally_json: Option<String>,
    period_start: f64,
    #[wasm_bindgen(unchecked_param_type = "MeasuredKind")] kind: &str,
    campaign: Option<String>,
    slot: Option<String>,
) -> Result<String, JsError> {
    let kind = Kind::parse(kind).ok_or_else(|| JsError::new(&format!("{kind:?} is not an event kind measurement counts")))?;
    if !(period_start >= 0.0 && period_start.fract() == 0.0 && period_start < u64::MAX as f64) {
        return Err(JsError::new(&format!("period start {period_start} is not a whole number of seconds")));
    }
    let start = period_start as u64;
    let mut tally = match tally_json {
        None => Tally::new(start),
        Some(json) => serde_json::from_str(&json).map_err(|e| JsError::new(&format!("invalid stored tally: {e}")))?,
    };
    if tally.period_start != start {
        return Err(JsError::new(&format!("the stored tally is of the period starting at {}, not {start}", tally.period_start)));
    }
    tally.record(kind, campaign.as_deref(), slot.as_deref());
    serde_json::to_string(&tally).map_err(js_err)
}

/// The DAP report of a finished period's tally: its measurement under `task_json` (the task
/// document it was counted for, checked again as `measureTask` does), sharded by Prio3SumVec,
/// one share sealed to the leader and one to the helper, for `PUT {leader}/dap/tasks/{id}/reports`.
/// `leader_configs` and `helper_configs` are each server's own `GET /dap/hpke_config` answer.
#[wasm_bindgen(js_name = measureReport)]
pub fn measure_report(
    task_json: &str,
    tally_json: &str,
    leader_configs: &[u8],
    helper_configs: &[u8],
    budget: Option<f64>,
) -> Result<Vec<u8>, JsError> {
    let task = checked_task(task_json, budget)?;
    let tally: Tally = serde_json::from_str(tally_json).map_err(|e| JsError::new(&format!("invalid stored tally: {e}")))?;
    let leader = dap_config(leader_configs, "leader")?;
    let helper = dap_config(helper_configs, "helper")?;
    build_report(&task, &tally.measurement(&task), tally.period_start, &leader, &helper).map_err(js_err)
}

/// The task of a leader's task document, when the id it serves is the one its parameters hash
/// to and the task passes this device's check (`TaskParams::device_check`).
fn checked_task(json: &str, budget: Option<f64>) -> Result<TaskParams, JsError> {
    let invalid = |e: &dyn std::fmt::Display| JsError::new(&format!("invalid measurement task: {e}"));
    let mut doc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).map_err(|e| invalid(&e))?;
    let Some(serde_json::Value::String(served_id)) = doc.remove("task_id") else {
        return Err(invalid(&"no task_id"));
    };
    // The parameters alone, strictly: a field this build does not know is refused.
    let task: TaskParams = serde_json::from_value(serde_json::Value::Object(doc)).map_err(|e| invalid(&e))?;
    let id = task.task_id().to_string();
    if id != served_id {
        return Err(JsError::new(&format!(
            "the leader names its measurement task {served_id}, but its parameters are task {id}"
        )));
    }
    task.device_check(lowered(DEVICE_MAX_EPSILON, budget)?).map_err(js_err)?;
    Ok(task)
}

/// The first configuration of a server's DAP HPKE configuration list that this device can seal
/// to (one suite: X25519, HKDF-SHA256, ChaCha20-Poly1305).
fn dap_config(list: &[u8], server: &str) -> Result<dap::HpkeConfig, JsError> {
    let list = dap::HpkeConfigList::get_decoded(list)
        .map_err(|e| JsError::new(&format!("the {server}'s HPKE configuration list: {e}")))?;
    list.hpke_configs().iter().find(|c| check_suite(c).is_ok()).cloned().ok_or_else(|| {
        JsError::new(&format!(
            "the {server} offers no HPKE configuration this device can seal to (X25519, HKDF-SHA256, ChaCha20-Poly1305)"
        ))
    })
}

/// A stored ledger, or an empty one when there is none. One that does not parse, or whose
/// entries the accountant refuses, is an error named `LedgerUnreadable`, never an empty ledger:
/// that would give the device its budget again.
fn stored_ledger(json: Option<String>) -> Result<Ledger, JsValue> {
    let Some(json) = json else { return Ok(Ledger::default()) };
    let unreadable =
        |e: &dyn std::fmt::Display| named_err(Some("LedgerUnreadable"), &format!("the stored privacy ledger is unreadable: {e}"));
    let ledger: Ledger = serde_json::from_str(&json).map_err(|e| unreadable(&e))?;
    ledger.spent(&DevicePolicy::RELEASE).map_err(|e| unreadable(&e))?;
    Ok(ledger)
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
