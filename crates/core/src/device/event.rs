//! Events a page reports about the visitor. Parsed from JSON with an explicit kind check so
//! that an unknown kind is a typed error, not a silently ignored record.

use crate::error::{HearthError, Result};
use serde::{Deserialize, Serialize};

/// Most topics, and separately most keywords, one event may carry.
pub const MAX_TERMS: usize = 32;
/// Longest string (topic, keyword, ad id, campaign, ...) in bytes of UTF-8, in events, ads and
/// page context alike; see [`check_text`].
pub const MAX_TEXT: usize = 128;

/// What happened. Serialised in snake_case (`page_view`, `impression`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The visitor read a page; carries topics or keywords and no ad.
    PageView,
    /// An ad was shown. Moves no profile weight; counts for frequency caps, and is a training
    /// negative unless a click or conversion on the same ad follows within
    /// `learning::train::ATTRIBUTION_MS`.
    Impression,
    /// The visitor clicked an ad: a positive example and a boost to its features.
    Click,
    /// A conversion on an ad (the visitor acted on it): a positive example and twice a click's
    /// boost.
    Conversion,
    /// The visitor dismissed an ad: a negative example of weight `learning::train::DISMISSAL_WEIGHT`
    /// and a penalty on its features.
    Dismissal,
}

impl EventKind {
    /// The kind named by its snake_case wire name; any other name is `UnknownEventKind`.
    pub fn parse(s: &str) -> Result<EventKind> {
        Ok(match s {
            "page_view" => EventKind::PageView,
            "impression" => EventKind::Impression,
            "click" => EventKind::Click,
            "conversion" => EventKind::Conversion,
            "dismissal" => EventKind::Dismissal,
            other => return Err(HearthError::UnknownEventKind(other.to_string())),
        })
    }
}

/// The ad an ad event is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdRef {
    /// The ad's id as in the catalog.
    pub ad_id: String,
    /// The ad's campaign, if the page reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The ad's advertiser, if the page reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertiser: Option<String>,
    /// The ad's category, if the page reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// A validated event, as the profile stores it. Deserialising goes through [`RawEvent`] and
/// [`Event::from_raw`], so stored and incoming events meet the same checks; in JSON the ad fields
/// sit flat beside `kind` and `ts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEvent")]
pub struct Event {
    /// What happened; decides which of the other fields must be present.
    pub kind: EventKind,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// Page topics (page views only), at most [`MAX_TERMS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Page keywords (page views only), at most [`MAX_TERMS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// The ad concerned: present on every ad event, absent on page views.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub ad: Option<AdRef>,
}

impl TryFrom<RawEvent> for Event {
    type Error = HearthError;
    fn try_from(raw: RawEvent) -> Result<Event> {
        Event::from_raw(raw)
    }
}

/// The wire shape: every field optional, kind as a string, so each problem gets its own error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvent {
    /// Kind name, checked by [`EventKind::parse`].
    pub kind: String,
    /// Milliseconds since the Unix epoch; a JSON number, accepted only if whole, non-negative
    /// and at most 9e15.
    pub ts: f64,
    /// As [`Event::topics`].
    #[serde(default)]
    pub topics: Vec<String>,
    /// As [`Event::keywords`].
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Required on ad events; the other ad fields are refused without it.
    pub ad_id: Option<String>,
    /// As [`AdRef::campaign`].
    pub campaign: Option<String>,
    /// As [`AdRef::advertiser`].
    pub advertiser: Option<String>,
    /// As [`AdRef::category`].
    pub category: Option<String>,
}

impl Event {
    /// Parses one event as a page reports it. Malformed JSON or an unknown field is
    /// `InvalidEvent`; see [`Event::from_raw`] for the rest.
    pub fn from_json(json: &str) -> Result<Event> {
        let raw: RawEvent = serde_json::from_str(json).map_err(|e| HearthError::InvalidEvent(e.to_string()))?;
        Event::from_raw(raw)
    }

    /// Checks the kind (`UnknownEventKind`), the timestamp, the ad fields and every invariant of
    /// [`Event::validate`] (`InvalidEvent`, or `TooLarge` for long term lists).
    pub fn from_raw(raw: RawEvent) -> Result<Event> {
        let kind = EventKind::parse(&raw.kind)?;
        if !raw.ts.is_finite() || raw.ts < 0.0 || raw.ts.fract() != 0.0 || raw.ts > 9.0e15 {
            return Err(HearthError::InvalidEvent(format!("ts {} is not a millisecond timestamp", raw.ts)));
        }
        let ad = match raw.ad_id {
            Some(ad_id) => Some(AdRef { ad_id, campaign: raw.campaign, advertiser: raw.advertiser, category: raw.category }),
            None if raw.campaign.is_some() || raw.advertiser.is_some() || raw.category.is_some() => {
                return Err(HearthError::InvalidEvent("ad fields given without ad_id".into()));
            }
            None => None,
        };
        let event = Event { kind, ts: raw.ts as i64, topics: raw.topics, keywords: raw.keywords, ad };
        event.validate()?;
        Ok(event)
    }

    /// Checks the invariants every stored event keeps; run on input and on stored profiles.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(HearthError::InvalidEvent(m));
        if self.ts < 0 {
            return bad(format!("negative ts {}", self.ts));
        }
        match (self.kind, &self.ad) {
            (EventKind::PageView, Some(_)) => return bad("page_view carries no ad".into()),
            (EventKind::PageView, None) if self.topics.is_empty() && self.keywords.is_empty() => {
                return bad("page_view needs topics or keywords".into());
            }
            (EventKind::PageView, None) => {}
            (_, None) => return bad(format!("{:?} needs ad_id", self.kind)),
            (_, Some(_)) if !self.topics.is_empty() || !self.keywords.is_empty() => {
                return bad("ad events carry no topics or keywords".into());
            }
            (_, Some(_)) => {}
        }
        for list in [&self.topics, &self.keywords] {
            if list.len() > MAX_TERMS {
                return Err(HearthError::TooLarge { what: "event term list", found: list.len(), limit: MAX_TERMS });
            }
        }
        let ad_texts =
            self.ad.iter().flat_map(|a| [Some(&a.ad_id), a.campaign.as_ref(), a.advertiser.as_ref(), a.category.as_ref()]);
        for text in self.topics.iter().chain(&self.keywords).map(Some).chain(ad_texts).flatten() {
            check_text(text).map_err(HearthError::InvalidEvent)?;
        }
        Ok(())
    }
}

/// Non-empty after trimming, bounded, no control characters.
pub fn check_text(text: &str) -> std::result::Result<(), String> {
    if text.trim().is_empty() {
        return Err("empty string".into());
    }
    if text.len() > MAX_TEXT {
        return Err(format!("string of {} bytes exceeds {MAX_TEXT}", text.len()));
    }
    if text.chars().any(char::is_control) {
        return Err("control character in string".into());
    }
    Ok(())
}
