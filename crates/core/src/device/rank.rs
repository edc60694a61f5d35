//! Ranking policy around the model: dismissals, frequency caps and ads to avoid before scoring,
//! top-k and an optional diversity re-rank after, and "why this ad" from the profile features
//! that moved the score.

use crate::device::catalog::Ad;
use crate::device::event::EventKind;
use crate::device::explain::Contribution;
use crate::device::profile::Profile;
use crate::error::{HearthError, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{HashMap, HashSet};

/// A session ends after this long without any event in the profile; the next event starts a
/// new one. The session is worked out from the profile's events ([`session_start`]), so every
/// page and tab of the site shares it.
pub const SESSION_GAP_MS: i64 = 30 * 60_000;
/// A day cap counts the impressions of the 24 hours before the ranking's `now_ms`: a rolling day,
/// the same in every time zone.
pub const DAY_MS: i64 = 86_400_000;
/// The default caps of one ad: 3 impressions a day and 2 a session.
pub const AD_CAPS: CapSpec = CapSpec { day: Some(3), session: Some(2) };
/// The default caps of one campaign (any of its ads): 6 impressions a day and 4 a session.
pub const CAMPAIGN_CAPS: CapSpec = CapSpec { day: Some(6), session: Some(4) };

/// Most impressions of one ad (or campaign) per day and per session; `None`: no such cap. In
/// JSON, `{"day": 3, "session": 2}`: a field left out keeps its default, `null` removes that cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CapSpec {
    /// Impressions within [`DAY_MS`] before the ranking; at the cap the ad is left out.
    pub day: Option<u32>,
    /// Impressions since [`session_start`]; at the cap the ad is left out.
    pub session: Option<u32>,
}

impl CapSpec {
    /// No cap at all.
    pub const NONE: CapSpec = CapSpec { day: None, session: None };
}

/// Impression caps of a ranking. An ad at a cap is left out unless fewer than `k` ads would
/// remain (see [`Relax`]). In JSON, `{"ad": {...}, "campaign": {...}}`: a field left out keeps
/// its default ([`AD_CAPS`], [`CAMPAIGN_CAPS`]), `null` removes that kind's caps, and within a
/// [`CapSpec`] the same holds field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RawCaps")]
pub struct FrequencyCaps {
    /// Impressions of the same ad id.
    pub ad: CapSpec,
    /// Impressions of any ad of the same campaign; ads without a campaign are not limited.
    pub campaign: CapSpec,
}

impl FrequencyCaps {
    /// No caps at all.
    pub const NONE: FrequencyCaps = FrequencyCaps { ad: CapSpec::NONE, campaign: CapSpec::NONE };

    /// A cap of 0 is refused as `InvalidRankOptions`: it would hold every ad back, and it is too
    /// easily meant as "no cap", which is `null`.
    fn validate(&self) -> Result<()> {
        for (kind, spec) in [("ad", self.ad), ("campaign", self.campaign)] {
            for (window, cap) in [("day", spec.day), ("session", spec.session)] {
                if cap == Some(0) {
                    return Err(HearthError::InvalidRankOptions(format!(
                        "{kind} cap of 0 per {window}: a cap is at least 1; null removes it"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Default for FrequencyCaps {
    /// [`AD_CAPS`] and [`CAMPAIGN_CAPS`].
    fn default() -> Self {
        FrequencyCaps { ad: AD_CAPS, campaign: CAMPAIGN_CAPS }
    }
}

/// The JSON shape, where a missing field (outer `None`) and `null` (`Some(None)`) differ.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaps {
    #[serde(default, deserialize_with = "present")]
    ad: Option<Option<RawCapSpec>>,
    #[serde(default, deserialize_with = "present")]
    campaign: Option<Option<RawCapSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapSpec {
    #[serde(default, deserialize_with = "present")]
    day: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    session: Option<Option<u32>>,
}

/// A field that is there, `null` included; serde's `default` makes a missing one `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl From<RawCaps> for FrequencyCaps {
    fn from(raw: RawCaps) -> Self {
        let over = |default: CapSpec, given: Option<Option<RawCapSpec>>| match given {
            None => default,
            Some(None) => CapSpec::NONE,
            Some(Some(r)) => CapSpec { day: r.day.unwrap_or(default.day), session: r.session.unwrap_or(default.session) },
        };
        FrequencyCaps { ad: over(AD_CAPS, raw.ad), campaign: over(CAMPAIGN_CAPS, raw.campaign) }
    }
}

/// How far the rules relaxed for an ad to be ranked, in the order they relax when fewer than
/// `k` ads remain: first the ads to avoid come back, then the ads at a session cap, then those
/// at a day cap. Dismissed ads and campaigns never come back. Ads that needed more relaxing
/// rank after all those that needed less.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Relax {
    /// Within every rule.
    None,
    /// In [`RankOptions::avoid`]: shown last time in a slot being filled.
    Avoid,
    /// At a session cap (of the ad or its campaign), within the day caps.
    Session,
    /// At a day cap.
    Day,
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
    /// Frequency caps (default: [`AD_CAPS`] and [`CAMPAIGN_CAPS`]).
    #[serde(default)]
    pub caps: FrequencyCaps,
    /// Ads to leave out unless fewer than `k` others remain: those last shown in the slots being
    /// filled, so that no slot shows the same ad twice in a row.
    #[serde(default)]
    pub avoid: Vec<String>,
    /// Whether the profile and the local embedding shape the scores (default true). False ranks
    /// on the page context alone, as for an empty profile: for a visitor who gave no consent
    /// to a profile. Dismissals, caps and `avoid` apply either way: they keep ads away and
    /// target nothing.
    #[serde(default = "personalized")]
    pub personalized: bool,
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

fn personalized() -> bool {
    true
}

impl RankOptions {
    /// The defaults at `now_ms`: top 10, three explaining features each, the default caps,
    /// nothing to avoid, personalized, no diversity.
    pub fn at(now_ms: i64) -> RankOptions {
        RankOptions {
            now_ms,
            k: default_k(),
            explain: default_explain(),
            caps: FrequencyCaps::default(),
            avoid: Vec::new(),
            personalized: true,
            diversity: None,
        }
    }

    /// `k` of 0 and caps of 0 are `InvalidRankOptions`.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(HearthError::InvalidRankOptions("k must be at least 1".into()));
        }
        self.caps.validate()
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

/// When the session of `now_ms` began: the earliest event of the unbroken run (no gap of
/// [`SESSION_GAP_MS`] or more) of profile events that ends with the latest event at or before
/// `now_ms`, if that one is less than [`SESSION_GAP_MS`] before `now_ms`; otherwise `now_ms`.
pub fn session_start(profile: &Profile, now_ms: i64) -> i64 {
    let mut times: Vec<i64> = profile.events().map(|e| e.ts).filter(|&t| t <= now_ms).collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    let mut start = now_ms;
    for t in times {
        if start - t >= SESSION_GAP_MS {
            break;
        }
        start = t;
    }
    start
}

/// The ads `opts` lets a ranking return, in catalog order, with how far the rules relaxed for
/// each. Dismissed ads and campaigns ([`Profile::dismissed`]) are never among them. The rules
/// relax a level at a time ([`Relax`]) only while fewer than `opts.k` ads are in.
pub fn eligible(profile: &Profile, ads: &[Ad], opts: &RankOptions) -> Vec<(usize, Relax)> {
    let dismissed = profile.dismissed();
    let gone_ads: HashSet<&str> = dismissed.ads().collect();
    let gone_campaigns: HashSet<&str> = dismissed.campaigns().collect();
    let avoid: HashSet<&str> = opts.avoid.iter().map(String::as_str).collect();
    let (day_since, session_since) = (opts.now_ms.saturating_sub(DAY_MS), session_start(profile, opts.now_ms));
    // Impressions (day, session) per ad and per campaign.
    let mut per_ad: HashMap<&str, (u32, u32)> = HashMap::new();
    let mut per_campaign: HashMap<&str, (u32, u32)> = HashMap::new();
    for e in profile.events().filter(|e| e.kind == EventKind::Impression && e.ts <= opts.now_ms) {
        let Some(ad) = &e.ad else { continue };
        let (day, session) = (u32::from(e.ts > day_since), u32::from(e.ts >= session_since));
        for key in [Some((&mut per_ad, &ad.ad_id)), ad.campaign.as_ref().map(|c| (&mut per_campaign, c))].into_iter().flatten() {
            let seen = key.0.entry(key.1.as_str()).or_default();
            *seen = (seen.0 + day, seen.1 + session);
        }
    }
    let over = |counts: &HashMap<&str, (u32, u32)>, key: Option<&str>, cap: CapSpec| {
        let (day, session) = key.and_then(|k| counts.get(k)).copied().unwrap_or_default();
        if cap.day.is_some_and(|m| day >= m) {
            Relax::Day
        } else if cap.session.is_some_and(|m| session >= m) {
            Relax::Session
        } else {
            Relax::None
        }
    };
    let mut levels: Vec<(usize, Relax)> = ads
        .iter()
        .enumerate()
        .filter(|(_, ad)| {
            !gone_ads.contains(ad.id.as_str()) && !ad.campaign.as_deref().is_some_and(|c| gone_campaigns.contains(c))
        })
        .map(|(i, ad)| {
            let shown = if avoid.contains(ad.id.as_str()) { Relax::Avoid } else { Relax::None };
            let capped =
                over(&per_ad, Some(&ad.id), opts.caps.ad).max(over(&per_campaign, ad.campaign.as_deref(), opts.caps.campaign));
            (i, shown.max(capped))
        })
        .collect();
    let level = [Relax::None, Relax::Avoid, Relax::Session]
        .into_iter()
        .find(|&l| levels.iter().filter(|(_, r)| *r <= l).count() >= opts.k)
        .unwrap_or(Relax::Day);
    levels.retain(|(_, r)| *r <= level);
    levels
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

/// Positions into `candidates` (ad index, how far the rules relaxed for it) and `scores`: the
/// least relaxed first, then best score first, ties by ad id so the order is total and portable.
/// With `keep`, only that many are selected and sorted.
pub fn by_score(candidates: &[(usize, Relax)], scores: &[f32], ads: &[Ad], keep: Option<usize>) -> Vec<usize> {
    let cmp = |a: &usize, b: &usize| {
        let ((ia, ra), (ib, rb)) = (candidates[*a], candidates[*b]);
        ra.cmp(&rb).then_with(|| scores[*b].total_cmp(&scores[*a])).then_with(|| ads[ia].id.cmp(&ads[ib].id))
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    if let Some(k) = keep.filter(|&k| k > 0 && k < order.len()) {
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
    }
    order.sort_by(cmp);
    order
}
