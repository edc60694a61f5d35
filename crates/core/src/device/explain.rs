//! "Why this ad": each profile feature's first-order share of one ad's logit, so the visitor
//! sees which of their own interests moved a ranking.
//!
//! A feature's share is its weighted embedding (its part of the pooled user vector) dotted with
//! ∂logit/∂user ([`forward::user_gradient`]): exact for the dot-product term, first-order for
//! the MLP.

use crate::model::forward::{self, RequestSide};
use crate::model::params::Params;
use crate::model::scorer::Request;
use serde::{Deserialize, Serialize};

/// One line of "why this ad": a profile feature and how much it moved the ad's logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The profile feature, as stored (`topic:sports`, `adv:acme`).
    pub feature: String,
    /// This feature's share of the logit, to first order.
    pub contribution: f32,
}

/// What explaining any ad for one request needs, computed once per ranking.
pub struct Explainer {
    request_side: RequestSide,
    /// Profile feature names, in user-slot order.
    names: Vec<String>,
    /// Each feature's weighted embedding, in the same order.
    shares: Vec<Vec<f32>>,
}

impl Explainer {
    /// `names` are the profile features in `req`'s user slots, in slot order.
    pub fn new(p: &Params, req: &Request, names: Vec<String>) -> Explainer {
        let shares = names
            .iter()
            .zip(req.user.ids.iter().zip(&req.user.weights))
            .map(|(_, (&id, &w))| forward::pool(p.get("emb"), p.arch.dim, &[id], &[w]))
            .collect();
        Explainer { request_side: forward::request_side(p, req), names, shares }
    }

    /// The `n` profile features with the largest share (by magnitude) of the logit of the ad
    /// whose ad-side row is `side`; ties by name.
    pub fn explain(&self, p: &Params, side: &[f32], n: usize) -> Vec<Contribution> {
        let grad = forward::user_gradient(p, &self.request_side, side);
        let mut out: Vec<Contribution> = self
            .names
            .iter()
            .zip(&self.shares)
            .map(|(name, share)| Contribution {
                feature: name.clone(),
                contribution: share.iter().zip(&grad).map(|(e, g)| e * g).sum(),
            })
            .collect();
        out.sort_by(|a, b| b.contribution.abs().total_cmp(&a.contribution.abs()).then_with(|| a.feature.cmp(&b.feature)));
        out.truncate(n);
        out
    }
}
