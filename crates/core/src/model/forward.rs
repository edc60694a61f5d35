//! The model's forward pass in plain Rust, written from the math rather than from the graph,
//! and the vector helpers every plain-Rust computation shares.
//!
//! tract runs the shipped graph; this is the same function for what tract cannot give: local
//! training differentiates it (`train`), explanations take its gradient with respect to the user
//! vector (`explain`), and the tests hold tract, the GPU kernel and onnxruntime to it.
//!
//! ```text
//! a = pool(emb, ad)          u = pool(emb, user) + local_u          c = pool(emb, context)
//! pre = a·W1a + (u·W1u + c·W1c + b1)        h = relu(pre)
//! logit = h·w2 + a·(u + c) + Σ wₛ·bias[idₛ] + b2
//! ```
//! The ad side `[a, a·W1a, Σ wₛ·bias[idₛ]]` depends only on the ad and the model; the request
//! side `(u, c, q = u·W1u + c·W1c + b1)` only on the visitor and the page.

use crate::model::features::Slots;
use crate::model::params::Params;
use crate::model::scorer::Request;

/// Weighted sum of `table` rows (`width` wide) over padded ids.
pub fn pool(table: &[f32], width: usize, ids: &[i64], weights: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; width];
    for (&id, &w) in ids.iter().zip(weights) {
        let row = &table[id as usize * width..(id as usize + 1) * width];
        for (o, r) in out.iter_mut().zip(row) {
            *o += w * r;
        }
    }
    out
}

/// `x` (len rows) times `m` (rows × cols, row-major).
pub fn vec_mat(x: &[f32], m: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; cols];
    for (xi, row) in x.iter().zip(m.chunks_exact(cols)) {
        for (o, r) in out.iter_mut().zip(row) {
            *o += xi * r;
        }
    }
    out
}

/// `m` (rows × `v.len()`, row-major) times `v`.
pub fn mat_vec(m: &[f32], v: &[f32]) -> Vec<f32> {
    m.chunks_exact(v.len()).map(|row| dot(row, v)).collect()
}

/// Dot product over the shorter of the two slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The click probability of a logit.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One ad's cached row: pooled embedding, its first-layer projection, its bias.
pub fn ad_side(p: &Params, ids: &[i64], weights: &[f32]) -> Vec<f32> {
    let d = p.arch.dim;
    let a = pool(p.get("emb"), d, ids, weights);
    let mut row = vec_mat(&a, p.get("w1_ad"), p.arch.hidden);
    row.splice(0..0, a);
    row.extend(pool(p.get("bias"), 1, ids, weights));
    row
}

/// What the request contributes to every candidate's score.
#[derive(Debug, Clone)]
pub struct RequestSide {
    /// Pooled profile features plus the local embedding.
    pub user: Vec<f32>,
    /// Pooled page-context features, `dim` wide.
    pub context: Vec<f32>,
    /// First-layer pre-activation from user and context, bias included.
    pub q: Vec<f32>,
}

/// The request side of the forward pass, computed once per ranking and shared by every
/// candidate.
pub fn request_side(p: &Params, req: &Request) -> RequestSide {
    request_side_of(p, &req.user, &req.local_u, &req.context)
}

/// [`request_side`] from its parts, as training holds them.
pub fn request_side_of(p: &Params, user_slots: &Slots, local_u: &[f32], context_slots: &Slots) -> RequestSide {
    let (d, h) = (p.arch.dim, p.arch.hidden);
    let mut user = pool(p.get("emb"), d, &user_slots.ids, &user_slots.weights);
    for (u, l) in user.iter_mut().zip(local_u) {
        *u += l;
    }
    let context = pool(p.get("emb"), d, &context_slots.ids, &context_slots.weights);
    let qu = vec_mat(&user, p.get("w1_user"), h);
    let qc = vec_mat(&context, p.get("w1_ctx"), h);
    let q = qu.iter().zip(&qc).zip(p.get("b1")).map(|((a, b), c)| a + b + c).collect();
    RequestSide { user, context, q }
}

/// One candidate's pass: what the logit is made of, kept for the backward pass.
#[derive(Debug, Clone)]
pub struct Pass {
    /// The hidden layer before ReLU.
    pub pre: Vec<f32>,
    /// `relu(pre)·w2 + a·(u + c) + ad bias + b2`: the score before the sigmoid.
    pub logit: f32,
}

/// The forward pass of the ad whose ad-side row is `side` (see [`ad_side`]).
pub fn pass(p: &Params, rs: &RequestSide, side: &[f32]) -> Pass {
    let (d, h) = (p.arch.dim, p.arch.hidden);
    let (a, rest) = side.split_at(d);
    let (proj, bias) = rest.split_at(h);
    let pre: Vec<f32> = proj.iter().zip(&rs.q).map(|(x, q)| x + q).collect();
    let mlp: f32 = pre.iter().zip(p.get("w2")).map(|(x, w)| x.max(0.0) * w).sum();
    let uc: Vec<f32> = rs.user.iter().zip(&rs.context).map(|(u, c)| u + c).collect();
    let logit = mlp + dot(a, &uc) + bias[0] + p.get("b2")[0];
    Pass { pre, logit }
}

/// The logit alone of [`pass`].
pub fn logit(p: &Params, rs: &RequestSide, side: &[f32]) -> f32 {
    pass(p, rs, side).logit
}

/// The logit of one request and one ad, both in input form.
pub fn score(p: &Params, req: &Request, ad: &Slots) -> f32 {
    logit(p, &request_side(p, req), &ad_side(p, &ad.ids, &ad.weights))
}

/// ∂logit/∂user for one ad: the dot-product term gives the ad embedding, the MLP the
/// user-side weights of the hidden units that are active.
pub fn user_gradient(p: &Params, rs: &RequestSide, side: &[f32]) -> Vec<f32> {
    let (d, h) = (p.arch.dim, p.arch.hidden);
    let (a, proj) = (&side[..d], &side[d..d + h]);
    let gate: Vec<f32> = proj.iter().zip(&rs.q).zip(p.get("w2")).map(|((x, q), w)| if x + q > 0.0 { *w } else { 0.0 }).collect();
    let w1u = p.get("w1_user");
    (0..d).map(|i| a[i] + dot(&w1u[i * h..(i + 1) * h], &gate)).collect()
}
