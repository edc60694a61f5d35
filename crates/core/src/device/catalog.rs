//! Ads and page context as the ranker sees them: validated, turned into feature strings, and
//! hashed into the padded slots the model takes.

use crate::device::event::check_text;
use crate::error::{HearthError, Result};
use crate::model::features::{FeatureSpec, Slots, feature};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A candidate ad as the catalog (`catalog.json`) lists it. Every string is checked by
/// [`check_text`] (non-empty, at most [`MAX_TEXT`](crate::device::event::MAX_TEXT) bytes, no control
/// characters) when a [`Catalog`] is built; identity fields hash as `ad:`, `camp:`, `adv:`, `cat:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ad {
    /// Ad id, unique within a catalog; ranking results and ad events name the ad by it.
    pub id: String,
    /// Campaign the ad belongs to; per-campaign frequency caps count by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Advertiser; the diversity rule's per-advertiser limit counts by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertiser: Option<String>,
    /// Ad category; the diversity rule's per-category limit counts by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Free-form content features, already in `kind:value` form (`topic:sports`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// The identity features an ad contributes, shared by catalog ads and profile ad events so
/// that a click on an ad and the ad itself hash to the same buckets.
pub fn ad_feature_names(id: &str, campaign: Option<&str>, advertiser: Option<&str>, category: Option<&str>) -> Vec<String> {
    let mut out = vec![feature("ad", id)];
    out.extend(campaign.map(|c| feature("camp", c)));
    out.extend(advertiser.map(|a| feature("adv", a)));
    out.extend(category.map(|c| feature("cat", c)));
    out
}

impl Ad {
    /// The model's ad input: every feature at equal weight (no validation; see `validate`).
    pub fn encode(&self, spec: &FeatureSpec) -> Slots {
        let names = self.feature_names();
        let weighted: Vec<(&str, f32)> = names.iter().map(|n| (n.as_str(), 1.0)).collect();
        Slots::encode(spec, spec.ad_slots, &weighted)
    }

    /// Identity features (see [`ad_feature_names`]) then the content features, trimmed and
    /// lower-cased: the strings [`Ad::encode`] hashes, one slot each.
    pub fn feature_names(&self) -> Vec<String> {
        let mut out = ad_feature_names(&self.id, self.campaign.as_deref(), self.advertiser.as_deref(), self.category.as_deref());
        out.extend(self.features.iter().map(|f| f.trim().to_lowercase()));
        out
    }

    fn validate(&self, spec: &FeatureSpec) -> Result<()> {
        let bad = |m: String| HearthError::InvalidAd(format!("ad {:?}: {m}", self.id));
        for text in [Some(&self.id), self.campaign.as_ref(), self.advertiser.as_ref(), self.category.as_ref()]
            .into_iter()
            .flatten()
            .chain(&self.features)
        {
            check_text(text).map_err(bad)?;
        }
        if let Some(f) = self.features.iter().find(|f| !f.contains(':')) {
            return Err(bad(format!("feature {f:?} is not of the form kind:value")));
        }
        let n = self.feature_names().len();
        if n > spec.ad_slots {
            return Err(bad(format!("{n} features exceed the model's {} ad slots", spec.ad_slots)));
        }
        Ok(())
    }
}

/// Where the ad would show: the page's topics and keywords, the slot, the local hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Page topics, hashed as `topic:<t>`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Page keywords, hashed as `kw:<k>`.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The ad slot's name on the page, hashed as `slot:<s>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// Local hour of day, 0..=23, hashed as `hour:<h>`.
    #[serde(default)]
    pub hour: Option<u8>,
}

impl Context {
    /// The model's context input. Fails with `InvalidContext` on an hour past 23 or a bad string,
    /// and with `TooLarge` when there are more features than `spec.context_slots`.
    pub fn encode(&self, spec: &FeatureSpec) -> Result<Slots> {
        let bad = |m: String| HearthError::InvalidContext(m);
        let mut names: Vec<String> = self.topics.iter().map(|t| feature("topic", t)).collect();
        names.extend(self.keywords.iter().map(|k| feature("kw", k)));
        names.extend(self.slot.iter().map(|s| feature("slot", s)));
        if let Some(h) = self.hour {
            if h > 23 {
                return Err(bad(format!("hour {h} is not 0..=23")));
            }
            names.push(format!("hour:{h}"));
        }
        for t in self.topics.iter().chain(&self.keywords).chain(&self.slot) {
            check_text(t).map_err(bad)?;
        }
        if names.len() > spec.context_slots {
            return Err(HearthError::TooLarge { what: "context features", found: names.len(), limit: spec.context_slots });
        }
        let weighted: Vec<(&str, f32)> = names.iter().map(|n| (n.as_str(), 1.0)).collect();
        Ok(Slots::encode(spec, spec.context_slots, &weighted))
    }
}

/// Upper bound on a catalog, so a hostile catalog cannot exhaust memory.
pub const MAX_CATALOG: usize = 50_000;

/// A validated list of ads with their hashed, padded features laid out row by row.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The ads in catalog order: row `i` of `ids` and `weights` is `ads[i]`.
    pub ads: Vec<Ad>,
    /// `ads.len() × ad_slots`, row-major.
    pub ids: Vec<i64>,
    /// Slot weights, laid out as `ids`; each ad's nonzero weights are equal and sum to 1.
    pub weights: Vec<f32>,
}

impl Catalog {
    /// Validates every ad (text, `kind:value` features, at most `spec.ad_slots` features) and
    /// hashes it under `spec`. Fails on the first bad ad, on a duplicate id (`InvalidAd`), or past
    /// [`MAX_CATALOG`] ads (`TooLarge`).
    pub fn new(ads: Vec<Ad>, spec: &FeatureSpec) -> Result<Catalog> {
        if ads.len() > MAX_CATALOG {
            return Err(HearthError::TooLarge { what: "candidate list", found: ads.len(), limit: MAX_CATALOG });
        }
        let mut seen = HashSet::with_capacity(ads.len());
        let mut ids = Vec::with_capacity(ads.len() * spec.ad_slots);
        let mut weights = Vec::with_capacity(ads.len() * spec.ad_slots);
        for ad in &ads {
            ad.validate(spec)?;
            if !seen.insert(ad.id.as_str()) {
                return Err(HearthError::InvalidAd(format!("duplicate ad id {:?}", ad.id)));
            }
            let slots = ad.encode(spec);
            ids.extend(slots.ids);
            weights.extend(slots.weights);
        }
        Ok(Catalog { ads, ids, weights })
    }

    /// Number of ads.
    pub fn len(&self) -> usize {
        self.ads.len()
    }

    /// Whether the catalog has no ads.
    pub fn is_empty(&self) -> bool {
        self.ads.is_empty()
    }
}
