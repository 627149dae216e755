//! Vertex AI's settings: the Google Cloud project and location in the request path, whose
//! models `model` names (which decides the wire format), and the service account.

use super::{host, required, Deployment};
use crate::util::valueread::{variant, At, Fields, FromValue};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Vertex {
    pub project: String,
    pub location: String,
    pub publisher: VertexPublisher,
    /// The Worker secret holding the service account's JSON key.
    pub service_account_secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VertexPublisher {
    Google,
    Anthropic,
}

impl FromValue for VertexPublisher {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        Ok([VertexPublisher::Google, VertexPublisher::Anthropic][variant(v, at, &["google", "anthropic"])?])
    }
}

const GLOBAL_HOST: &str = "aiplatform.googleapis.com";

/// The jurisdictional multi-region endpoints and their locations.
const MULTI_REGION_HOSTS: &[(&str, &str)] =
    &[("aiplatform.eu.rep.googleapis.com", "eu"), ("aiplatform.us.rep.googleapis.com", "us")];

impl Vertex {
    pub fn read(f: &Fields) -> Result<Vertex, String> {
        Ok(Vertex {
            project: required(f.opt("gcp_project")?, "vertex deployments need `gcp_project`")?,
            location: required(f.opt("gcp_location")?, "vertex deployments need `gcp_location`")?,
            publisher: required(
                f.opt("vertex_publisher")?,
                "vertex deployments need `vertex_publisher`: `google` (Gemini) or `anthropic` (Claude)",
            )?,
            service_account_secret: required(
                f.opt("gcp_service_account_secret")?,
                "vertex deployments authenticate with `gcp_service_account_secret` (a service account's JSON key), not `api_key_secret`",
            )?,
        })
    }

    pub fn validate(&self, d: &Deployment) -> Result<(), String> {
        for (field, value) in [("gcp_project", &self.project), ("gcp_location", &self.location)] {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err(format!("{field} `{value}` is not a Google Cloud name (lowercase letters, digits, `-`)"));
            }
        }
        let location = self.location.as_str();
        if d.api_key_secret.is_some() {
            return Err("vertex deployments authenticate with `gcp_service_account_secret` (a service account's JSON key), not `api_key_secret`".into());
        }
        if d.model.contains(['/', ':', '?']) {
            return Err(format!("model `{}` must be a bare model id such as gemini-2.5-flash", d.model));
        }
        let host = host(&d.base_url);
        let served = if host == GLOBAL_HOST {
            Some("global")
        } else if let Some((_, multi)) = MULTI_REGION_HOSTS.iter().find(|(h, _)| *h == host) {
            Some(*multi)
        } else if let Some(region) = host.strip_suffix("-aiplatform.googleapis.com") {
            Some(region)
        } else if host.ends_with(".googleapis.com") {
            return Err(format!("base_url host `{host}` is not a Vertex AI endpoint"));
        } else {
            // A proxy or a test server: the location alone tells where Google processes.
            None
        };
        if let Some(served) = served.filter(|s| *s != location) {
            return Err(format!("base_url host `{host}` serves location `{served}`, not gcp_location `{location}`"));
        }
        let (required, why) = match location {
            "global" => ("global", "the global endpoint may process requests in any Google Cloud region"),
            "eu" => ("eu", "the `eu` multi-region endpoint keeps ML processing within the EU"),
            "us" => ("us", "the `us` multi-region endpoint keeps ML processing within the United States"),
            // Google commits to in-region processing on a regional endpoint only for the
            // models and regions its data-residency tables list, which change and which the
            // gateway cannot check per request: such a deployment cannot promise a
            // jurisdiction. EU or US residency is what the multi-region endpoints are for.
            _ => (
                "global",
                "a regional endpoint keeps processing in its region only for some models (use the `eu` or `us` multi-region endpoint, aiplatform.eu.rep.googleapis.com, for residency)",
            ),
        };
        if d.jurisdiction != required {
            return Err(format!(
                "location `{location}`: {why}, so the jurisdiction must be `{required}`, not `{}`",
                d.jurisdiction
            ));
        }
        Ok(())
    }
}
