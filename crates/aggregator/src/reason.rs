//! Why a request was refused: one table of every machine-readable reason the API answers with,
//! its HTTP status, and whether it counts as a refused upload in the metrics. The OpenAPI
//! document's `Error.error` enum is held equal to this table by a test.

use serde::Serialize;

/// Declares [`Reason`] and its lookups from one table, so no list of codes is kept by hand
/// beside the enum.
macro_rules! reasons {
    ($($variant:ident => $code:literal, $status:literal, $upload:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant,)*
        }

        impl Reason {
            /// Every reason, in table order.
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The `error` field of the refusal body.
            pub fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            pub fn status(self) -> u16 {
                match self {
                    $(Reason::$variant => $status,)*
                }
            }

            /// Whether this refuses an upload (`hearth_updates_rejected_total` counts these).
            pub fn is_upload(self) -> bool {
                match self {
                    $(Reason::$variant => $upload,)*
                }
            }
        }
    };
}

reasons! {
    UnsupportedMediaType => "unsupported_media_type", 415, true;
    UnsupportedContentEncoding => "unsupported_content_encoding", 415, true;
    PayloadTooLarge => "payload_too_large", 413, true;
    BodyTimeout => "body_timeout", 408, true;
    BodyReadFailed => "body_read_failed", 400, true;
    MalformedUpdate => "malformed_update", 400, true;
    UnsupportedFormatVersion => "unsupported_format_version", 400, true;
    NonFinite => "non_finite", 422, true;
    NoOpenRound => "no_open_round", 503, true;
    PrivacyBudgetSpent => "privacy_budget_spent", 410, true;
    StaleModel => "stale_model", 409, true;
    WrongRound => "wrong_round", 409, true;
    PrivacyParametersMismatch => "privacy_parameters_mismatch", 422, true;
    WrongEncoding => "wrong_encoding", 422, true;
    WrongParameterCount => "wrong_parameter_count", 422, true;
    ImplausibleNorm => "implausible_norm", 422, true;
    DuplicateNonce => "duplicate_nonce", 409, true;
    Busy => "busy", 503, true;
    StorageUnavailable => "storage_unavailable", 503, true;
    WrongHelperKey => "wrong_helper_key", 422, true;
    TransferEncodingRefused => "transfer_encoding_refused", 400, false;
    BadVersion => "bad_version", 400, false;
    Unauthorized => "unauthorized", 401, false;
    TooFewReports => "too_few_reports", 422, false;
    RepeatedReport => "repeated_report", 409, false;
    UnopenableReport => "unopenable_report", 422, false;
    RoundAlreadyAggregated => "round_already_aggregated", 409, false;
    BindingMismatch => "binding_mismatch", 422, false;
    MalformedBatch => "malformed_batch", 400, false;
    UnknownModelVersion => "unknown_model_version", 404, false;
    NotFound => "not_found", 404, false;
    NoCatalog => "no_catalog", 404, false;
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// A refusal: its reason and a sentence for the person reading the logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reject {
    #[serde(rename = "error")]
    pub reason: Reason,
    pub detail: String,
}

impl Reject {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Reject {
        Reject { reason, detail: detail.into() }
    }

    pub fn status(&self) -> u16 {
        self.reason.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_statuses_are_errors() {
        let codes: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        assert!(Reason::ALL.iter().all(|r| (400..600).contains(&r.status())));
    }

    #[test]
    fn a_refusal_serialises_its_code() {
        let body = serde_json::to_value(Reject::new(Reason::Busy, "retry")).unwrap();
        assert_eq!(body, serde_json::json!({"error": "busy", "detail": "retry"}));
    }
}
