//! The visitor's interest profile. It never leaves the device: events fold into time-decayed
//! feature weights, both bounded, and the whole profile serialises to a versioned document.

use crate::device::event::{AdRef, Event, EventKind, check_text};
use crate::error::{HearthError, Result};
use crate::model::features::{FeatureSpec, Slots, feature};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// The `format` tag of a stored profile document; anything else is refused as corrupt.
pub const FORMAT: &str = "hearth-profile";
/// The stored profile format version this build writes. It reads this one and, through
/// [`Profile::from_json`]'s upgrade chain, every earlier one (version 1: no dismissal lists and no
/// slots).
pub const VERSION: u32 = 2;
/// Ceilings no configuration may exceed, so a stored profile cannot grow without bound.
pub const MAX_EVENTS_CEILING: usize = 100_000;
/// Ceiling on [`ProfileConfig::max_features`].
pub const MAX_FEATURES_CEILING: usize = 10_000;
/// Longest stored feature name: a `kind:` prefix plus a term of up to `MAX_TEXT` bytes, which
/// lower-casing can lengthen (`İ`, 2 bytes, becomes `i̇`, 3 bytes).
pub const MAX_FEATURE_NAME: usize = 2 * crate::device::event::MAX_TEXT + 16;
/// Most dismissed ads the profile remembers; past it the one dismissed longest ago is forgotten
/// and may be ranked again. 2,000 ids of up to 128 bytes stay under 300 KB of the stored document.
pub const MAX_DISMISSED_ADS: usize = 2_000;
/// Most campaigns whose dismissals the profile counts; past it the campaign dismissed longest
/// ago is forgotten.
pub const MAX_DISMISSED_CAMPAIGNS: usize = 500;
/// Dismissals of a campaign's ads (any of them) after which none of its ads is ranked again.
pub const CAMPAIGN_DISMISSALS: u32 = 2;
/// Most ad slots whose last shown ad the profile remembers; past it the slot updated longest ago
/// is forgotten.
pub const MAX_SLOTS: usize = 64;

/// How a profile forgets: the decay rate and the caps on stored events and features. Stored
/// with the profile; [`ProfileConfig::validate`] checks it on creation and on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Time for a feature weight to halve, in milliseconds.
    pub half_life_ms: f64,
    /// Events kept; past it the earliest recorded are dropped (at most [`MAX_EVENTS_CEILING`]).
    pub max_events: usize,
    /// Feature weights kept; past it those with the oldest [`Weight::ts`] are dropped (at most
    /// [`MAX_FEATURES_CEILING`]).
    pub max_features: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig { half_life_ms: 14.0 * 86_400_000.0, max_events: 5_000, max_features: 1_000 }
    }
}

impl ProfileConfig {
    /// A half-life that is not finite and positive is `InvalidProfileConfig`; a cap above its
    /// ceiling is `TooLarge`.
    pub fn validate(&self) -> Result<()> {
        if !(self.half_life_ms.is_finite() && self.half_life_ms > 0.0) {
            return Err(HearthError::InvalidProfileConfig(format!("half-life {} ms", self.half_life_ms)));
        }
        for (what, found, limit) in [
            ("profile event cap", self.max_events, MAX_EVENTS_CEILING),
            ("profile feature cap", self.max_features, MAX_FEATURES_CEILING),
        ] {
            if found > limit {
                return Err(HearthError::TooLarge { what, found, limit });
            }
        }
        Ok(())
    }
}

/// A feature's weight as of `ts`; it decays from there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    /// Weight at `ts`: the sum of the event deltas, each decayed to `ts`; dismissals can make it
    /// negative.
    pub w: f64,
    /// When the weight was last updated, in milliseconds since the Unix epoch.
    pub ts: i64,
}

/// How much one event moves each feature it touches. Impressions move nothing: being shown
/// an ad says nothing about interest, but they are kept for frequency caps and training.
const PAGE_TOPIC: f64 = 1.0;
const PAGE_KEYWORD: f64 = 0.5;
const CLICK: f64 = 2.0;
const CONVERSION: f64 = 4.0;
const DISMISSAL: f64 = -2.0;

/// What the visitor dismissed ("not interested"), kept apart from the event log: the log is
/// capped and drops its oldest events, and a dismissal must outlive them. Ranking leaves these
/// ads and campaigns out (`rank::eligible`). Least recently dismissed first in both lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dismissed {
    /// Dismissed ad ids, at most [`MAX_DISMISSED_ADS`].
    ads: VecDeque<String>,
    /// Dismissals per campaign, at most [`MAX_DISMISSED_CAMPAIGNS`] campaigns.
    campaigns: VecDeque<CampaignDismissals>,
}

/// How many times the visitor dismissed an ad of one campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignDismissals {
    /// The campaign, as the dismissed ads named it.
    pub campaign: String,
    /// Dismissals of its ads, at least 1.
    pub count: u32,
}

impl Dismissed {
    /// Adds a dismissal of `ad`, as the most recent one.
    fn note(&mut self, ad: &AdRef) {
        self.ads.retain(|a| a != &ad.ad_id);
        self.ads.push_back(ad.ad_id.clone());
        truncate_front(&mut self.ads, MAX_DISMISSED_ADS);
        if let Some(campaign) = &ad.campaign {
            let count = match self.campaigns.iter().position(|c| &c.campaign == campaign) {
                Some(i) => self.campaigns.remove(i).map_or(0, |c| c.count),
                None => 0,
            };
            self.campaigns.push_back(CampaignDismissals { campaign: campaign.clone(), count: count.saturating_add(1) });
            truncate_front(&mut self.campaigns, MAX_DISMISSED_CAMPAIGNS);
        }
    }

    /// The ad ids never to rank again.
    pub fn ads(&self) -> impl Iterator<Item = &str> {
        self.ads.iter().map(String::as_str)
    }

    /// The campaigns never to rank again: those dismissed [`CAMPAIGN_DISMISSALS`] times or more.
    pub fn campaigns(&self) -> impl Iterator<Item = &str> {
        self.campaigns.iter().filter(|c| c.count >= CAMPAIGN_DISMISSALS).map(|c| c.campaign.as_str())
    }

    /// Dismissals counted per campaign, least recently dismissed first.
    pub fn campaign_counts(&self) -> impl Iterator<Item = &CampaignDismissals> {
        self.campaigns.iter()
    }

    fn validate(&self) -> Result<()> {
        for (what, found, limit) in [
            ("stored dismissed ads", self.ads.len(), MAX_DISMISSED_ADS),
            ("stored dismissed campaigns", self.campaigns.len(), MAX_DISMISSED_CAMPAIGNS),
        ] {
            if found > limit {
                return Err(HearthError::TooLarge { what, found, limit });
            }
        }
        checked_unique(self.ads.iter(), "dismissed ad")?;
        checked_unique(self.campaigns.iter().map(|c| &c.campaign), "dismissed campaign")?;
        if let Some(c) = self.campaigns.iter().find(|c| c.count == 0) {
            return Err(HearthError::ProfileCorrupt(format!("dismissed campaign {:?} with no dismissals", c.campaign)));
        }
        Ok(())
    }
}

/// The ad last shown in one slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotAd {
    /// The slot's name on the page (`data-hearth-slot`).
    pub slot: String,
    /// The ad last shown there.
    pub ad_id: String,
}

/// Drops the oldest entries past `limit`.
fn truncate_front<T>(list: &mut VecDeque<T>, limit: usize) {
    while list.len() > limit {
        list.pop_front();
    }
}

/// Every name passes [`check_text`] and none repeats; otherwise the document is corrupt.
fn checked_unique<'a>(names: impl Iterator<Item = &'a String>, what: &str) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        check_text(name).map_err(|m| HearthError::ProfileCorrupt(format!("{what} {name:?}: {m}")))?;
        if !seen.insert(name) {
            return Err(HearthError::ProfileCorrupt(format!("{what} {name:?} listed twice")));
        }
    }
    Ok(())
}

/// The visitor's events and decayed feature weights, under one [`ProfileConfig`], with what
/// they dismissed and the ad last shown in each slot. Stays on the device; the shell stores it
/// with [`Profile::to_json`] and reads it back with [`Profile::from_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    format: String,
    version: u32,
    config: ProfileConfig,
    events: VecDeque<Event>,
    features: BTreeMap<String, Weight>,
    dismissed: Dismissed,
    last_shown: VecDeque<SlotAd>,
}

impl Profile {
    /// An empty profile; fails if `config` does not validate.
    pub fn new(config: ProfileConfig) -> Result<Profile> {
        config.validate()?;
        Ok(Profile {
            format: FORMAT.into(),
            version: VERSION,
            config,
            events: VecDeque::new(),
            features: BTreeMap::new(),
            dismissed: Dismissed::default(),
            last_shown: VecDeque::new(),
        })
    }

    /// The configuration it was created or stored with.
    pub fn config(&self) -> &ProfileConfig {
        &self.config
    }

    /// Stored events in the order they were recorded (not sorted by `ts`), at most
    /// `max_events`.
    pub fn events(&self) -> impl ExactSizeIterator<Item = &Event> + DoubleEndedIterator {
        self.events.iter()
    }

    /// Features with a stored weight, at most `max_features`.
    pub fn feature_count(&self) -> usize {
        self.features.len()
    }

    /// What the visitor dismissed: ads and campaigns ranking leaves out.
    pub fn dismissed(&self) -> &Dismissed {
        &self.dismissed
    }

    /// The ad last shown in `slot` (see [`Profile::note_shown`]).
    pub fn last_shown(&self, slot: &str) -> Option<&str> {
        self.last_shown.iter().find(|s| s.slot == slot).map(|s| s.ad_id.as_str())
    }

    /// Remembers that `ad_id` is the ad now shown in `slot`, so that the next page view can
    /// avoid showing it there again (`RankOptions::avoid`). Names that fail [`check_text`] are
    /// `InvalidEvent`.
    pub fn note_shown(&mut self, slot: &str, ad_id: &str) -> Result<()> {
        for text in [slot, ad_id] {
            check_text(text).map_err(HearthError::InvalidEvent)?;
        }
        self.last_shown.retain(|s| s.slot != slot);
        self.last_shown.push_back(SlotAd { slot: slot.into(), ad_id: ad_id.into() });
        truncate_front(&mut self.last_shown, MAX_SLOTS);
        Ok(())
    }

    /// Validates `event`, moves the weights of the features it touches (see
    /// [`touched_features`]), appends it and applies the caps. A dismissal is also added to
    /// [`Profile::dismissed`]. An invalid event changes nothing.
    pub fn record(&mut self, event: Event) -> Result<()> {
        event.validate()?;
        for (name, delta) in touched_features(&event) {
            self.bump(name, delta, event.ts);
        }
        if let (EventKind::Dismissal, Some(ad)) = (event.kind, &event.ad) {
            self.dismissed.note(ad);
        }
        self.events.push_back(event);
        while self.events.len() > self.config.max_events {
            self.events.pop_front();
        }
        self.evict_features();
        Ok(())
    }

    /// Decay the stored weight to the event's time and add the delta. An event older than the
    /// stored time (clocks and batches arrive out of order) adds its delta decayed instead.
    fn bump(&mut self, name: String, delta: f64, ts: i64) {
        let half_life = self.config.half_life_ms;
        let slot = self.features.entry(name).or_insert(Weight { w: 0.0, ts });
        if ts >= slot.ts {
            slot.w = slot.w * decay(ts - slot.ts, half_life) + delta;
            slot.ts = ts;
        } else {
            slot.w += delta * decay(slot.ts - ts, half_life);
        }
    }

    /// Oldest-updated features go first; ties break by name so eviction is deterministic.
    fn evict_features(&mut self) {
        let excess = self.features.len().saturating_sub(self.config.max_features);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(i64, String)> = self.features.iter().map(|(k, v)| (v.ts, k.clone())).collect();
        by_age.sort();
        for (_, name) in by_age.into_iter().take(excess) {
            self.features.remove(&name);
        }
    }

    /// Feature weights decayed to `now_ms`, strongest (by magnitude) first, ties by name.
    pub fn weights_at(&self, now_ms: i64) -> Vec<(&str, f64)> {
        let half_life = self.config.half_life_ms;
        let mut out: Vec<(&str, f64)> = self
            .features
            .iter()
            .map(|(k, v)| (k.as_str(), v.w * decay(now_ms.saturating_sub(v.ts).max(0), half_life)))
            .filter(|(_, w)| *w != 0.0)
            .collect();
        out.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(b.0)));
        out
    }

    /// The strongest features at `now_ms` as the model's user input, with their names.
    pub fn user_slots(&self, spec: &FeatureSpec, now_ms: i64) -> (Slots, Vec<String>) {
        let weights = self.weights_at(now_ms);
        let top: Vec<(&str, f32)> = weights.iter().take(spec.user_slots).map(|(f, w)| (*f, *w as f32)).collect();
        (Slots::encode(spec, spec.user_slots, &top), top.iter().map(|(f, _)| f.to_string()).collect())
    }

    /// Forget everything, dismissals and slots included; the configuration stays.
    pub fn erase(&mut self) {
        self.events.clear();
        self.features.clear();
        self.dismissed = Dismissed::default();
        self.last_shown.clear();
    }

    /// The whole profile (format tag, version, configuration, events, weights) as one JSON
    /// document for the device's storage.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("profile serialises: keys are strings, numbers finite")
    }

    /// Reads a stored profile, checking the format tag, the version and every invariant. An
    /// earlier version is upgraded one step at a time (`v1 -> v2`); a newer one, or none, is
    /// refused rather than misread.
    pub fn from_json(json: &str) -> Result<Profile> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| HearthError::ProfileCorrupt(e.to_string()))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(HearthError::ProfileCorrupt("not a hearth profile".into()));
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        let value = match version {
            1 => v1_to_v2(value)?,
            2 => value,
            _ => {
                let found = u32::try_from(version).unwrap_or(u32::MAX);
                return Err(HearthError::ProfileVersion { found, supported: VERSION });
            }
        };
        let profile: Profile = serde_json::from_value(value).map_err(|e| HearthError::ProfileCorrupt(e.to_string()))?;
        profile.validate()?;
        Ok(profile)
    }

    fn validate(&self) -> Result<()> {
        // A stored configuration that cannot hold is damage to the stored document.
        self.config.validate().map_err(|e| match e {
            HearthError::InvalidProfileConfig(m) => HearthError::ProfileCorrupt(m),
            other => other,
        })?;
        for (what, found, limit) in [
            ("stored profile events", self.events.len(), self.config.max_events),
            ("stored profile features", self.features.len(), self.config.max_features),
        ] {
            if found > limit {
                return Err(HearthError::TooLarge { what, found, limit });
            }
        }
        self.dismissed.validate()?;
        if self.last_shown.len() > MAX_SLOTS {
            return Err(HearthError::TooLarge { what: "stored slots", found: self.last_shown.len(), limit: MAX_SLOTS });
        }
        checked_unique(self.last_shown.iter().map(|s| &s.slot), "slot")?;
        for s in &self.last_shown {
            check_text(&s.ad_id).map_err(|m| HearthError::ProfileCorrupt(format!("ad shown in slot {:?}: {m}", s.slot)))?;
        }
        for (name, weight) in &self.features {
            // Not `check_text`: a name is a prefixed, lower-cased term and may be longer.
            if name.trim().is_empty() || name.len() > MAX_FEATURE_NAME || name.chars().any(char::is_control) {
                return Err(HearthError::ProfileCorrupt(format!("feature name {name:?}")));
            }
            if !weight.w.is_finite() || weight.ts < 0 {
                return Err(HearthError::ProfileCorrupt(format!("feature {name:?} weight {weight:?}")));
            }
        }
        Ok(())
    }

    /// Reads a stored profile, or starts a fresh one and says why the stored one was dropped.
    pub fn load_or_reset(json: &str, config: ProfileConfig) -> Result<(Profile, Option<HearthError>)> {
        match Profile::from_json(json) {
            Ok(p) => Ok((p, None)),
            Err(e) => Ok((Profile::new(config)?, Some(e))),
        }
    }
}

/// Version 1 kept dismissals only as events, so its dismissal lists are rebuilt from the
/// dismissal events still in its log (those the log had dropped are lost); it remembered no
/// slots. Everything else is as in version 2, and is checked there.
fn v1_to_v2(mut value: serde_json::Value) -> Result<serde_json::Value> {
    let corrupt = |e: serde_json::Error| HearthError::ProfileCorrupt(e.to_string());
    let doc = value.as_object_mut().ok_or_else(|| HearthError::ProfileCorrupt("not a JSON object".into()))?;
    if let Some(field) = ["dismissed", "last_shown"].into_iter().find(|f| doc.contains_key(*f)) {
        return Err(HearthError::ProfileCorrupt(format!("a version 1 profile with a `{field}` field")));
    }
    let events: Vec<Event> = serde_json::from_value(doc.get("events").cloned().unwrap_or_default()).map_err(corrupt)?;
    let mut dismissed = Dismissed::default();
    for ad in events.iter().filter(|e| e.kind == EventKind::Dismissal).filter_map(|e| e.ad.as_ref()) {
        dismissed.note(ad);
    }
    doc.insert("dismissed".into(), serde_json::to_value(dismissed).map_err(corrupt)?);
    doc.insert("last_shown".into(), serde_json::Value::Array(Vec::new()));
    doc.insert("version".into(), 2.into());
    Ok(value)
}

fn decay(elapsed_ms: i64, half_life_ms: f64) -> f64 {
    (-(elapsed_ms as f64) / half_life_ms).exp2()
}

/// The features an event moves, with how far.
pub fn touched_features(event: &Event) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    match event.kind {
        EventKind::PageView => {
            out.extend(event.topics.iter().map(|t| (feature("topic", t), PAGE_TOPIC)));
            out.extend(event.keywords.iter().map(|k| (feature("kw", k), PAGE_KEYWORD)));
        }
        EventKind::Impression => {}
        EventKind::Click | EventKind::Conversion | EventKind::Dismissal => {
            let delta = match event.kind {
                EventKind::Click => CLICK,
                EventKind::Conversion => CONVERSION,
                _ => DISMISSAL,
            };
            if let Some(ad) = &event.ad {
                out.extend(
                    crate::device::catalog::ad_feature_names(
                        &ad.ad_id,
                        ad.campaign.as_deref(),
                        ad.advertiser.as_deref(),
                        ad.category.as_deref(),
                    )
                    .into_iter()
                    .map(|f| (f, delta)),
                );
            }
        }
    }
    out
}
