//! A plain-Rust forward pass of the starter architecture, written from the math rather than
//! from the graph. Tests hold tract to it; ranking uses its gradient to explain scores.

use crate::params::Params;
use crate::scorer::Request;

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

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
    pub context: Vec<f32>,
    /// First-layer pre-activation from user and context, bias included.
    pub q: Vec<f32>,
}

pub fn request_side(p: &Params, req: &Request) -> RequestSide {
    let (d, h) = (p.arch.dim, p.arch.hidden);
    let mut user = pool(p.get("emb"), d, &req.user.ids, &req.user.weights);
    for (u, l) in user.iter_mut().zip(&req.local_u) {
        *u += l;
    }
    let context = pool(p.get("emb"), d, &req.context.ids, &req.context.weights);
    let qu = vec_mat(&user, p.get("w1_user"), h);
    let qc = vec_mat(&context, p.get("w1_ctx"), h);
    let q = qu.iter().zip(&qc).zip(p.get("b1")).map(|((a, b), c)| a + b + c).collect();
    RequestSide { user, context, q }
}

pub fn logit(p: &Params, rs: &RequestSide, side: &[f32]) -> f32 {
    let (d, h) = (p.arch.dim, p.arch.hidden);
    let (a, rest) = side.split_at(d);
    let (proj, bias) = rest.split_at(h);
    let mlp: f32 = proj.iter().zip(&rs.q).zip(p.get("w2")).map(|((x, q), w)| (x + q).max(0.0) * w).sum();
    let uc: Vec<f32> = rs.user.iter().zip(&rs.context).map(|(u, c)| u + c).collect();
    mlp + dot(a, &uc) + bias[0] + p.get("b2")[0]
}

/// ∂logit/∂user for one ad: the dot-product term gives the ad embedding, the MLP the
/// user-side weights of the hidden units that are active.
pub fn user_gradient(p: &Params, rs: &RequestSide, side: &[f32]) -> Vec<f32> {
    let (d, h) = (p.arch.dim, p.arch.hidden);
    let (a, proj) = (&side[..d], &side[d..d + h]);
    let gate: Vec<f32> =
        proj.iter().zip(&rs.q).zip(p.get("w2")).map(|((x, q), w)| if x + q > 0.0 { *w } else { 0.0 }).collect();
    let w1u = p.get("w1_user");
    (0..d).map(|i| a[i] + dot(&w1u[i * h..(i + 1) * h], &gate)).collect()
}
