//! Local training, partially local in the style of Federated Reconstruction (Singhal et al.,
//! 2021, "Federated Reconstruction: Partially Local Federated Learning"): the device first fits
//! its own user embedding `local_u` with the global model frozen, then takes a few steps on the
//! global parameters with `local_u` fixed. Only the global change Δ = new − old ever leaves the
//! device (clipped and noised, see `update`); `local_u` stays.
//!
//! The loss is weighted binary cross-entropy on the logit of the plain-Rust forward pass (`forward`); its
//! gradient below is derived by hand and checked against finite differences and an independent
//! numpy implementation in the tests.

use crate::device::catalog::{Ad, Context};
use crate::device::event::{Event, EventKind};
use crate::device::profile::Profile;
use crate::error::{HearthError, Result};
use crate::model::features::{FeatureSpec, Slots};
use crate::model::forward::{self, Pass, mat_vec, sigmoid};
use crate::model::params::Params;
use serde::{Deserialize, Serialize};

/// A click counts for the impressions of the same ad shown up to this long before it.
pub const ATTRIBUTION_MS: i64 = 30 * 60 * 1000;
/// Example weight of a dismissal: a negative the visitor bothered to say out loud.
pub const DISMISSAL_WEIGHT: f32 = 3.0;

/// One labelled interaction, in the model's input form.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The profile's user slots as they stood just before the event.
    pub user: Slots,
    /// The page context; all padding, since ad events do not record their page.
    pub context: Slots,
    /// The ad's slots: catalog features when the catalog still has the ad, else its identity.
    pub ad: Slots,
    /// 1 for a click or conversion, 0 for an unclicked impression or a dismissal.
    pub label: f32,
    /// Weight in the loss: 1, or [`DISMISSAL_WEIGHT`] for a dismissal.
    pub weight: f32,
}

/// Labelled examples from the profile's events, oldest first. The user side of each is the
/// profile as it stood just before that event (replayed), so no label leaks into its own input.
/// Clicks and conversions are positives; an impression is a negative unless a click or
/// conversion on the same ad follows within `ATTRIBUTION_MS` (before that ad's next impression);
/// a dismissal is a strong negative.
/// `ad_of` supplies the full ad (content features) when the catalog still has it.
pub fn examples<'a>(profile: &Profile, spec: &FeatureSpec, ad_of: impl Fn(&str) -> Option<&'a Ad>) -> Result<Vec<Example>> {
    let events: Vec<&Event> = profile.events().collect();
    let mut replay = Profile::new(profile.config().clone())?;
    // Ad events do not record the page they were shown on, so the context side is padding.
    let no_context = Context::default().encode(spec)?;
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(ad) = &e.ad {
            let labelled = match e.kind {
                EventKind::Click | EventKind::Conversion => Some((1.0, 1.0)),
                EventKind::Dismissal => Some((0.0, DISMISSAL_WEIGHT)),
                EventKind::Impression => {
                    // The first later event on the same ad within the window decides: a click
                    // or conversion claims this impression, a newer impression claims the click.
                    let next = events[i + 1..]
                        .iter()
                        .take_while(|l| l.ts - e.ts <= ATTRIBUTION_MS)
                        .find(|l| l.kind != EventKind::Dismissal && l.ad.as_ref().is_some_and(|a| a.ad_id == ad.ad_id));
                    let clicked = next.is_some_and(|l| matches!(l.kind, EventKind::Click | EventKind::Conversion));
                    (!clicked).then_some((0.0, 1.0))
                }
                EventKind::PageView => None,
            };
            if let Some((label, weight)) = labelled {
                let full = ad_of(&ad.ad_id).cloned().unwrap_or_else(|| Ad {
                    id: ad.ad_id.clone(),
                    campaign: ad.campaign.clone(),
                    advertiser: ad.advertiser.clone(),
                    category: ad.category.clone(),
                    features: Vec::new(),
                });
                out.push(Example {
                    user: replay.user_slots(spec, e.ts).0,
                    context: no_context.clone(),
                    ad: full.encode(spec),
                    label,
                    weight,
                });
            }
        }
        replay.record((*e).clone())?;
    }
    Ok(out)
}

/// `softplus(z) − y·z`, stable for large |z|.
fn bce(z: f32, y: f32) -> f32 {
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

/// Adds `w × table rows` of the gradient `g` back into the rows the slots pooled.
fn scatter(grad: &mut [f32], offset: usize, width: usize, slots: &Slots, g: &[f32]) {
    for (&id, &w) in slots.ids.iter().zip(&slots.weights) {
        let row = offset + id as usize * width;
        for (t, gi) in grad[row..row + width].iter_mut().zip(g) {
            *t += w * gi;
        }
    }
}

/// Adds `x ⊗ y` into the row-major `x.len() × y.len()` block at `out`.
fn add_outer(out: &mut [f32], x: &[f32], y: &[f32]) {
    for (row, &xi) in out.chunks_exact_mut(y.len()).zip(x) {
        for (o, &yj) in row.iter_mut().zip(y) {
            *o += xi * yj;
        }
    }
}

/// Loss of one example and, when asked, its gradient added into `grad` (same layout as
/// `p.values`) and into `grad_u` (∂/∂local_u). Returns the weighted loss.
///
/// Forward ([`forward::pass`]): a, u (= pooled profile + local_u), c pooled;
/// pre = a·W1a + u·W1u + c·W1c + b1; h = relu(pre); z = h·w2 + b2 + a·(u + c) + Σ wₛ bias\[idₛ\].
/// Backward with g = weight·(σ(z) − y): ∂b2 = g, ∂w2 = g·h, ∂bias\[idₛ\] = g·wₛ,
/// δ = g·w2 ⊙ \[pre > 0\]: ∂b1 = δ, ∂W1a = a⊗δ, ∂W1u = u⊗δ, ∂W1c = c⊗δ,
/// ∂a = W1a·δ + g·(u + c), ∂u = W1u·δ + g·a, ∂c = W1c·δ + g·a, and each pooled row gets wₛ × its side's ∂.
pub fn example_loss(p: &Params, local_u: &[f32], ex: &Example, grad: Option<&mut [f32]>, grad_u: Option<&mut [f32]>) -> f32 {
    let (d, h) = (p.arch.dim, p.arch.hidden);
    let side = forward::ad_side(p, &ex.ad.ids, &ex.ad.weights);
    let rs = forward::request_side_of(p, &ex.user, local_u, &ex.context);
    let Pass { pre, logit: z } = forward::pass(p, &rs, &side);
    let loss = ex.weight * bce(z, ex.label);
    if grad.is_none() && grad_u.is_none() {
        return loss;
    }

    let (a, u, c) = (&side[..d], &rs.user, &rs.context);
    let (w1a, w1u, w1c) = (p.get("w1_ad"), p.get("w1_user"), p.get("w1_ctx"));
    let hid: Vec<f32> = pre.iter().map(|v| v.max(0.0)).collect();
    let uc: Vec<f32> = u.iter().zip(c).map(|(x, y)| x + y).collect();
    let g = ex.weight * (sigmoid(z) - ex.label);
    let delta: Vec<f32> = pre.iter().zip(p.get("w2")).map(|(&v, &w)| if v > 0.0 { g * w } else { 0.0 }).collect();
    let side_grad =
        |w1: &[f32], other: &[f32]| -> Vec<f32> { mat_vec(w1, &delta).iter().zip(other).map(|(x, o)| x + g * o).collect() };
    let du = side_grad(w1u, a);
    if let Some(grad_u) = grad_u {
        grad_u.iter_mut().zip(&du).for_each(|(t, x)| *t += x);
    }
    let Some(grad) = grad else { return loss };
    let off = |name: &str| p.spec(name).offset;
    grad[off("b2")] += g;
    grad[off("w2")..off("w2") + h].iter_mut().zip(&hid).for_each(|(t, x)| *t += g * x);
    grad[off("b1")..off("b1") + h].iter_mut().zip(&delta).for_each(|(t, x)| *t += x);
    scatter(grad, off("bias"), 1, &ex.ad, &[g]);
    for (name, x) in [("w1_ad", a), ("w1_user", u.as_slice()), ("w1_ctx", c.as_slice())] {
        add_outer(&mut grad[off(name)..off(name) + d * h], x, &delta);
    }
    scatter(grad, off("emb"), d, &ex.ad, &side_grad(w1a, &uc));
    scatter(grad, off("emb"), d, &ex.user, &du);
    scatter(grad, off("emb"), d, &ex.context, &side_grad(w1c, a));
    loss
}

/// Weighted mean loss over `examples`.
pub fn mean_loss(p: &Params, local_u: &[f32], examples: &[Example]) -> f32 {
    let total: f32 = examples.iter().map(|e| e.weight).sum();
    if total == 0.0 {
        return 0.0;
    }
    examples.iter().map(|e| example_loss(p, local_u, e, None, None)).sum::<f32>() / total
}

/// Largest learning rate accepted, of a device's Adam steps or the server's step. Adam moves each
/// coordinate by about lr a step and the server by lr times the mean update, so a larger rate only
/// diverges; near `f32::MAX` it overflows the parameters to infinity.
pub const MAX_LR: f32 = 10.0;

/// Adam (Kingma & Ba, 2015) with bias-corrected moments:
/// m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g², θ ← θ − lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adam {
    /// Learning rate; > 0 and at most [`MAX_LR`].
    pub lr: f32,
    /// Decay of the first moment, in [0, 1).
    pub beta1: f32,
    /// Decay of the second moment, in [0, 1).
    pub beta2: f32,
    /// Added to the root of the second moment to keep the step finite; > 0.
    pub eps: f32,
}

impl Adam {
    /// Adam at learning rate `lr` with the usual β1 = 0.9, β2 = 0.999, ε = 1e-8.
    pub fn with_lr(lr: f32) -> Adam {
        Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Moments of one Adam run over one parameter vector.
pub struct AdamState {
    cfg: Adam,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl AdamState {
    /// Zero moments for a vector of `len` values.
    pub fn new(cfg: Adam, len: usize) -> AdamState {
        AdamState { cfg, m: vec![0.0; len], v: vec![0.0; len], t: 0 }
    }

    /// One Adam step on `theta` along the gradient `grad` (same length).
    pub fn step(&mut self, theta: &mut [f32], grad: &[f32]) {
        let Adam { lr, beta1, beta2, eps } = self.cfg;
        self.t += 1;
        let (c1, c2) = (1.0 - beta1.powi(self.t), 1.0 - beta2.powi(self.t));
        for (((x, g), m), v) in theta.iter_mut().zip(grad).zip(&mut self.m).zip(&mut self.v) {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            *x -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

/// How a device trains. Fields left out of a serialized config take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Full-batch Adam steps fitting `local_u` with the global model frozen.
    pub reconstruction_steps: usize,
    /// The optimiser of the reconstruction steps (default lr 0.05).
    pub reconstruction: Adam,
    /// L2 pull of `local_u` toward zero, so a device with few events stays near the global model.
    pub local_l2: f32,
    /// Passes over the examples for the global parameters.
    pub epochs: usize,
    /// Examples per global step; at least 1.
    pub batch_size: usize,
    /// The optimiser of the global steps (default lr 0.01).
    pub global: Adam,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            reconstruction_steps: 50,
            reconstruction: Adam::with_lr(0.05),
            local_l2: 1e-3,
            epochs: 1,
            batch_size: 32,
            global: Adam::with_lr(0.01),
        }
    }
}

impl TrainConfig {
    /// `InvalidTraining` on a zero batch size, an Adam setting out of range or a negative or
    /// non-finite `local_l2`.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(HearthError::InvalidTraining(m.into()));
        if self.batch_size == 0 {
            return bad("batch size must be at least 1");
        }
        for a in [self.reconstruction, self.global] {
            if !(a.lr > 0.0 && a.lr <= MAX_LR && (0.0..1.0).contains(&a.beta1) && (0.0..1.0).contains(&a.beta2)) {
                return bad(&format!("Adam needs lr in (0, {MAX_LR}] and betas in [0, 1)"));
            }
            if !(a.eps.is_finite() && a.eps > 0.0) {
                return bad("Adam needs eps > 0");
            }
        }
        if !(self.local_l2.is_finite() && self.local_l2 >= 0.0) {
            return bad("local L2 must be finite and >= 0");
        }
        Ok(())
    }
}

/// What one round of local training produced.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The reconstructed device-only embedding.
    pub local_u: Vec<f32>,
    /// New global parameters minus old.
    pub delta: Vec<f32>,
    /// Weighted mean loss with the incoming model and `local_u`, after reconstruction, after
    /// the global steps.
    pub loss_before: f32,
    /// Weighted mean loss after reconstructing `local_u`, before the global steps.
    pub loss_reconstructed: f32,
    /// Weighted mean loss with the new global parameters and `local_u`.
    pub loss_after: f32,
}

/// Stage (a): fit `local_u` from `start` with `p` frozen (full batch).
///
/// Only examples of both labels are fitted. A device that has seen ads but clicked none (most
/// devices) says how often it clicks, not which ads it prefers; fitted anyway, `local_u` would
/// learn to push down exactly the ads it was shown, which are the ones its reading favoured,
/// and turn its ranking away from its own interests. Without a contrast, `start` stays.
pub fn reconstruct(p: &Params, start: &[f32], examples: &[Example], cfg: &TrainConfig) -> Vec<f32> {
    let mut u = start.to_vec();
    let total: f32 = examples.iter().map(|e| e.weight).sum();
    let has = |positive: bool| examples.iter().any(|e| e.weight > 0.0 && (e.label > 0.5) == positive);
    if total == 0.0 || !has(true) || !has(false) {
        return u;
    }
    let mut opt = AdamState::new(cfg.reconstruction, u.len());
    for _ in 0..cfg.reconstruction_steps {
        let mut gu = vec![0.0f32; u.len()];
        for e in examples {
            example_loss(p, &u, e, None, Some(&mut gu));
        }
        gu.iter_mut().zip(&u).for_each(|(g, x)| *g = *g / total + 2.0 * cfg.local_l2 * x);
        opt.step(&mut u, &gu);
    }
    u
}

/// Stage (b): mini-batch Adam on the global parameters with `local_u` fixed; returns the new values.
pub fn global_steps(p: &Params, local_u: &[f32], examples: &[Example], cfg: &TrainConfig) -> Params {
    let mut q = p.clone();
    let mut opt = AdamState::new(cfg.global, q.values.len());
    let mut grad = vec![0.0f32; q.values.len()];
    for _ in 0..cfg.epochs {
        for batch in examples.chunks(cfg.batch_size) {
            let total: f32 = batch.iter().map(|e| e.weight).sum();
            if total == 0.0 {
                continue;
            }
            grad.iter_mut().for_each(|g| *g = 0.0);
            for e in batch {
                example_loss(&q, local_u, e, Some(&mut grad), None);
            }
            grad.iter_mut().for_each(|g| *g /= total);
            opt.step(&mut q.values, &grad);
        }
    }
    q
}

/// Both stages. `local_u` is the device's stored embedding, or zeros on a new device.
pub fn train(p: &Params, local_u: &[f32], examples: &[Example], cfg: &TrainConfig) -> Result<Trained> {
    cfg.validate()?;
    if local_u.len() != p.arch.dim {
        return Err(HearthError::Shape { name: "local_u".into(), expected: vec![p.arch.dim], found: vec![local_u.len()] });
    }
    let loss_before = mean_loss(p, local_u, examples);
    let u = reconstruct(p, local_u, examples, cfg);
    let loss_reconstructed = mean_loss(p, &u, examples);
    let q = global_steps(p, &u, examples, cfg);
    let loss_after = mean_loss(&q, &u, examples);
    let delta = q.values.iter().zip(&p.values).map(|(n, o)| n - o).collect();
    Ok(Trained { local_u: u, delta, loss_before, loss_reconstructed, loss_after })
}
