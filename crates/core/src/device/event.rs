//! Events a page reports about the visitor. Parsed from JSON with an explicit kind check so
//! that an unknown kind is a typed error, not a silently ignored record.

use crate::error::{HearthError, Result};
use serde::{Deserialize, Serialize};

pub const MAX_TERMS: usize = 32;
pub const MAX_TEXT: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    PageView,
    Impression,
    Click,
    Conversion,
    Dismissal,
}

impl EventKind {
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
    pub ad_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertiser: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEvent")]
pub struct Event {
    pub kind: EventKind,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
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
    pub kind: String,
    pub ts: f64,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub ad_id: Option<String>,
    pub campaign: Option<String>,
    pub advertiser: Option<String>,
    pub category: Option<String>,
}

impl Event {
    pub fn from_json(json: &str) -> Result<Event> {
        let raw: RawEvent = serde_json::from_str(json).map_err(|e| HearthError::InvalidEvent(e.to_string()))?;
        Event::from_raw(raw)
    }

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
