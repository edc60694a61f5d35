//! A refusal of the DAP endpoints: an RFC 7807 problem document (`application/problem+json`), as
//! DAP requires. `type` names DAP's error (`urn:ietf:params:ppm:dap:error:<dap>`) where DAP
//! defines one, and `reason` carries Hearth's own snake_case code, in the style of
//! [`crate::reason`], for the refusals DAP has no name for.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The media type of a problem document (RFC 7807).
pub const PROBLEM_MEDIA_TYPE: &str = "application/problem+json";
/// The prefix of a DAP error's problem type.
pub const DAP_ERROR_PREFIX: &str = "urn:ietf:params:ppm:dap:error:";

#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    /// DAP's error type (`invalidMessage`, `unrecognizedTask`, …), when DAP names the refusal.
    pub dap: Option<&'static str>,
    /// Hearth's machine-readable code, snake_case.
    pub reason: &'static str,
    /// A sentence for the person reading the logs.
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, dap: Option<&'static str>, reason: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, dap, reason, detail: detail.into() }
    }

    /// The document's `type`: DAP's URN, or `about:blank` (RFC 7807: no further semantics).
    pub fn type_uri(&self) -> String {
        match self.dap {
            Some(dap) => format!("{DAP_ERROR_PREFIX}{dap}"),
            None => "about:blank".into(),
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.type_uri(),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "reason": self.reason,
        })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.status.as_u16(), self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).expect("a JSON value serialises");
        (self.status, [(header::CONTENT_TYPE, PROBLEM_MEDIA_TYPE)], body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dap_error_names_its_urn_and_hearths_reason() {
        let p = Problem::new(StatusCode::BAD_REQUEST, Some("unrecognizedTask"), "unknown_task", "no such task");
        assert_eq!(
            p.body(),
            serde_json::json!({
                "type": "urn:ietf:params:ppm:dap:error:unrecognizedTask",
                "title": "Bad Request",
                "status": 400,
                "detail": "no such task",
                "reason": "unknown_task",
            })
        );
    }

    #[test]
    fn a_refusal_dap_has_no_name_for_is_about_blank() {
        let p = Problem::new(StatusCode::UNAUTHORIZED, None, "unauthorized", "bearer token missing");
        assert_eq!(p.body()["type"], "about:blank");
        let response = p.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_MEDIA_TYPE);
    }
}
