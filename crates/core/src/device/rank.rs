//! Ranking policy around the model: frequency caps before scoring, top-k and an optional
//! diversity re-rank after, and "why this ad" from the profile features that moved the score.

use crate::device::catalog::Ad;
use crate::device::event::EventKind;
use crate::device::explain::Contribution;
use crate::device::profile::Profile;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// At most `max` impressions within the last `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cap {
    /// Impressions allowed in the window; at `max` the ad (or campaign) is left out.
    pub max: u32,
    /// Window length in milliseconds, ending at the ranking's `now_ms`.
    pub window_ms: i64,
}

/// Impression caps applied before scoring; a missing cap does not limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCaps {
    /// Impressions of the same ad id.
    #[serde(default)]
    pub per_ad: Option<Cap>,
    /// Impressions of any ad of the same campaign; ads without a campaign are not limited.
    #[serde(default)]
    pub per_campaign: Option<Cap>,
}

/// In the first `slots` places, at most `max_per_advertiser` ads of one advertiser and
/// `max_per_category` of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diversity {
    /// How many leading places the rule fills; the ads it passes over follow in score order.
    pub slots: usize,
    /// Most ads of one advertiser in those places; ads without an advertiser are not limited.
    #[serde(default)]
    pub max_per_advertiser: Option<usize>,
    /// Most ads of one category in those places; ads without a category are not limited.
    #[serde(default)]
    pub max_per_category: Option<usize>,
}

/// One ranking request's settings. In JSON only `now_ms` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankOptions {
    /// The ranking's time in milliseconds since the Unix epoch: profile weights decay to it and
    /// caps count back from it.
    pub now_ms: i64,
    /// How many ads to return (default 10); 0 is `InvalidRankOptions`.
    #[serde(default = "default_k")]
    pub k: usize,
    /// How many profile features to report per result.
    #[serde(default = "default_explain")]
    pub explain: usize,
    /// Frequency caps (default: none).
    #[serde(default)]
    pub caps: FrequencyCaps,
    /// Diversity re-rank of the top places (default: none).
    #[serde(default)]
    pub diversity: Option<Diversity>,
}

fn default_k() -> usize {
    10
}

fn default_explain() -> usize {
    3
}

impl RankOptions {
    /// The defaults at `now_ms`: top 10, three explaining features each, no caps, no diversity.
    pub fn at(now_ms: i64) -> RankOptions {
        RankOptions { now_ms, k: default_k(), explain: default_explain(), caps: FrequencyCaps::default(), diversity: None }
    }
}

/// One ranked ad, best first in the list `Engine::rank` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    /// The ad's catalog id.
    pub ad_id: String,
    /// The model's logit.
    pub score: f32,
    /// The predicted click probability, `sigmoid(score)`.
    pub probability: f32,
    /// The profile features that moved the logit most, largest magnitude first, at most
    /// [`RankOptions::explain`] of them.
    pub why: Vec<Contribution>,
}

/// Indices of the ads still under their caps at `now_ms`.
pub fn eligible(profile: &Profile, ads: &[Ad], caps: &FrequencyCaps, now_ms: i64) -> Vec<usize> {
    let mut per_ad: HashMap<&str, u32> = HashMap::new();
    let mut per_campaign: HashMap<&str, u32> = HashMap::new();
    let horizon = |cap: &Option<Cap>| cap.map(|c| now_ms.saturating_sub(c.window_ms));
    let (ad_since, camp_since) = (horizon(&caps.per_ad), horizon(&caps.per_campaign));
    for e in profile.events().filter(|e| e.kind == EventKind::Impression && e.ts <= now_ms) {
        let Some(ad) = &e.ad else { continue };
        if ad_since.is_some_and(|s| e.ts > s) {
            *per_ad.entry(ad.ad_id.as_str()).or_default() += 1;
        }
        if let (Some(s), Some(c)) = (camp_since, &ad.campaign)
            && e.ts > s
        {
            *per_campaign.entry(c.as_str()).or_default() += 1;
        }
    }
    let under = |counts: &HashMap<&str, u32>, key: Option<&str>, cap: &Option<Cap>| match (cap, key) {
        (Some(c), Some(k)) => counts.get(k).copied().unwrap_or(0) < c.max,
        _ => true,
    };
    (0..ads.len())
        .filter(|&i| {
            under(&per_ad, Some(&ads[i].id), &caps.per_ad) && under(&per_campaign, ads[i].campaign.as_deref(), &caps.per_campaign)
        })
        .collect()
}

/// Greedy re-rank: walk the score order and fill the first `slots` places with ads that keep
/// within the per-advertiser and per-category limits; the ads passed over follow in order.
pub fn diversify<'a>(order: &[usize], ad_of: impl Fn(usize) -> &'a Ad, rule: &Diversity) -> Vec<usize> {
    let mut top = Vec::with_capacity(rule.slots);
    let mut rest = Vec::new();
    let mut by_adv: HashMap<&str, usize> = HashMap::new();
    let mut by_cat: HashMap<&str, usize> = HashMap::new();
    for &i in order {
        let fits = |counts: &HashMap<&str, usize>, key: Option<&str>, max: Option<usize>| match (key, max) {
            (Some(k), Some(m)) => counts.get(k).copied().unwrap_or(0) < m,
            _ => true,
        };
        let ad = ad_of(i);
        let (adv, cat) = (ad.advertiser.as_deref(), ad.category.as_deref());
        if top.len() < rule.slots && fits(&by_adv, adv, rule.max_per_advertiser) && fits(&by_cat, cat, rule.max_per_category) {
            if let Some(a) = adv {
                *by_adv.entry(a).or_default() += 1;
            }
            if let Some(c) = cat {
                *by_cat.entry(c).or_default() += 1;
            }
            top.push(i);
        } else {
            rest.push(i);
        }
    }
    top.extend(rest);
    top
}

/// Positions into `scores`, best first, ties by ad id so the order is total and portable.
/// With `keep`, only that many are selected and sorted.
pub fn by_score(candidates: &[usize], scores: &[f32], ads: &[Ad], keep: Option<usize>) -> Vec<usize> {
    let cmp = |a: &usize, b: &usize| {
        scores[*b].total_cmp(&scores[*a]).then_with(|| ads[candidates[*a]].id.cmp(&ads[candidates[*b]].id))
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    if let Some(k) = keep.filter(|&k| k > 0 && k < order.len()) {
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
    }
    order.sort_by(cmp);
    order
}
