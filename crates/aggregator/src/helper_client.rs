//! The leader's side of the helper's API, over blocking HTTP from the round keeper's thread
//! (the keeper is synchronous; a round closes rarely).

use crate::config::SecAggConfig;
use crate::helper::{AggregateRequest, SHARE_MEDIA_TYPE};
use hearth_core::learning::round::HelperConfig;
use std::time::{Duration, Instant};

/// The helper's configuration is small; anything larger is refused.
const CONFIG_LIMIT: u64 = 64 << 10;
/// An aggregate share is 3 bytes per parameter; this bounds any answer.
const SHARE_LIMIT: u64 = 64 << 20;

/// Why the helper gave no aggregate share.
#[derive(Debug)]
pub enum HelperError {
    /// No answer (network, timeout, 5xx): the batch may be sent again.
    Unreachable(String),
    /// The helper refused the batch (4xx, with its reason): the round must release nothing.
    Refused(String),
}

pub struct HelperClient {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    timeout: Duration,
}

impl HelperClient {
    pub fn new(c: &SecAggConfig) -> Result<HelperClient, String> {
        let base = c.helper_url.clone().ok_or("a leader needs secagg.helper_url")?;
        let timeout = Duration::from_millis(c.helper_timeout_ms);
        let agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
        Ok(HelperClient {
            agent,
            base: if base.ends_with('/') { base } else { format!("{base}/") },
            authorization: format!("Bearer {}", c.token),
            timeout,
        })
    }

    /// `GET /v1/helper_config`, retried every 200 ms until the helper timeout.
    pub fn config_with_retry(&self) -> Result<HelperConfig, String> {
        let until = Instant::now() + self.timeout;
        loop {
            match self.config() {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= until => return Err(format!("{}v1/helper_config: {e}", self.base)),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn config(&self) -> Result<HelperConfig, String> {
        let mut resp = self.agent.get(format!("{}v1/helper_config", self.base)).call().map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body = resp.body_mut().with_config().limit(CONFIG_LIMIT).read_to_vec().map_err(|e| e.to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("not a helper configuration: {e}"))
    }

    /// `POST /v1/aggregate`: the helper's noised aggregate share for the batch.
    pub fn aggregate(&self, request: &AggregateRequest) -> Result<Vec<u8>, HelperError> {
        let body = serde_json::to_vec(request).expect("a batch serialises");
        let mut resp = self
            .agent
            .post(format!("{}v1/aggregate", self.base))
            .header("Authorization", &self.authorization)
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| HelperError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(SHARE_LIMIT)
            .read_to_vec()
            .map_err(|e| HelperError::Unreachable(e.to_string()))?;
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        match status {
            200 if content_type == SHARE_MEDIA_TYPE => Ok(body),
            200 => Err(HelperError::Refused(format!("answered {content_type:?}, not an aggregate share"))),
            400..=499 => Err(HelperError::Refused(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))),
            _ => Err(HelperError::Unreachable(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))),
        }
    }
}
