//! What one report counts: for each campaign and each slot of the task, four kinds of event.

use serde::{Deserialize, Serialize};

/// The event kinds counted, in their order within a target's four cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An ad was shown.
    Impression,
    /// An ad was clicked.
    Click,
    /// A conversion was attributed to an ad.
    Conversion,
    /// An ad was dismissed ("not interested").
    Dismissal,
}

impl Kind {
    /// Every kind, in cell order.
    pub const ALL: [Kind; 4] = [Kind::Impression, Kind::Click, Kind::Conversion, Kind::Dismissal];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Impression => "impression",
            Kind::Click => "click",
            Kind::Conversion => "conversion",
            Kind::Dismissal => "dismissal",
        }
    }

    /// The kind of a snake_case name, if it is one.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Position within a target's cells.
    pub fn offset(self) -> usize {
        self as usize
    }
}

/// What a cell counts for: an advertiser's campaign, or a publisher's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A campaign of the catalog.
    Campaign,
    /// A slot of the publisher's pages (`data-hearth-slot`).
    Slot,
}

impl TargetKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Campaign => "campaign",
            TargetKind::Slot => "slot",
        }
    }
}

/// One entry of the measurement vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// Campaign or slot.
    pub target: TargetKind,
    /// The campaign's or slot's name.
    pub name: String,
    /// Which event it counts.
    pub kind: Kind,
}
