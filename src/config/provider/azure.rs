//! Azure OpenAI's settings: the API version, and the deployment type, which decides where
//! a deployment may process (its URL does not show it).

use super::{required, Deployment};
use crate::util::valueread::{variant, At, Fields, FromValue};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub struct Azure {
    /// A dated API version such as `2024-10-21`, which calls the deployment named by
    /// `model` at `/openai/deployments/{model}/chat/completions`, or `v1` for the
    /// `/openai/v1/chat/completions` API, which takes the model in the body.
    pub api_version: String,
    pub deployment_type: AzureDeploymentType,
}

/// The `api_version` that selects the v1 API.
pub const V1: &str = "v1";

/// Azure OpenAI's deployment types, by where they may process a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureDeploymentType {
    /// Global Standard / Global Provisioned: any Azure region worldwide.
    Global,
    /// Data Zone EU: any EU member state.
    DataZoneEu,
    /// Data Zone US: anywhere in the United States.
    DataZoneUs,
    /// Standard / Provisioned: the resource's own region.
    Regional,
}

impl FromValue for AzureDeploymentType {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        use AzureDeploymentType::*;
        Ok([Global, DataZoneEu, DataZoneUs, Regional]
            [variant(v, at, &["global", "data_zone_eu", "data_zone_us", "regional"])?])
    }
}

impl Azure {
    pub fn read(f: &Fields) -> Result<Azure, String> {
        Ok(Azure {
            api_version: required(
                f.opt("api_version")?,
                "azure_openai deployments need `api_version`: `v1`, or a dated version such as 2024-10-21 for the deployments API",
            )?,
            deployment_type: required(
                f.opt("azure_deployment_type")?,
                "azure_openai deployments need `azure_deployment_type` (global, data_zone_eu, data_zone_us or regional): the URL does not show where a deployment processes requests",
            )?,
        })
    }

    pub fn validate(&self, d: &Deployment) -> Result<(), String> {
        let version = &self.api_version;
        if version != V1 && !is_dated_version(version) {
            return Err(format!("api_version `{version}` is neither `v1` nor a dated version such as 2024-10-21"));
        }
        if d.api_key_secret.is_none() {
            return Err(
                "azure_openai deployments need `api_key_secret`, the Worker secret with the resource's key".into()
            );
        }
        // The deployment name is a URL path segment (deployments API) or the body's model (v1).
        if !d.model.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err(format!(
                "model `{}` is not an Azure deployment name (letters, digits, `-`, `_`, `.`)",
                d.model
            ));
        }
        let kind = self.deployment_type;
        let (fits, required, reach) = match kind {
            AzureDeploymentType::Global => (d.jurisdiction == "global", "`global`", "may process in any Azure region"),
            AzureDeploymentType::DataZoneEu => {
                (d.jurisdiction == "eu", "`eu`", "processes within the EU member states")
            }
            AzureDeploymentType::DataZoneUs => (d.jurisdiction == "us", "`us`", "processes within the United States"),
            AzureDeploymentType::Regional => (
                d.jurisdiction != "global",
                "the jurisdiction of the resource's region, not `global`",
                "processes in the resource's region",
            ),
        };
        if !fits {
            return Err(format!(
                "a {kind:?} deployment {reach}, so the jurisdiction must be {required}, not `{}`",
                d.jurisdiction
            ));
        }
        Ok(())
    }
}

/// `YYYY-MM-DD`, optionally followed by `-preview`.
fn is_dated_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v).as_bytes();
    date.len() == 10
        && date.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() })
}
