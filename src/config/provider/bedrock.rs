//! Bedrock's settings: the AWS region requests are signed for, and the credentials (a
//! Bedrock API key in `api_key_secret`, or SigV4 keys in Worker secrets). Model ids may be
//! cross-region inference profiles, whose prefix names the geography they may process in.

use super::{host, required, Deployment};
use crate::util::valueread::Fields;

#[derive(Debug, Clone, PartialEq)]
pub struct Bedrock {
    pub aws_region: String,
    /// SigV4 credentials, in place of a Bedrock API key.
    pub sigv4: Option<AwsSecrets>,
}

/// The Worker secrets holding a deployment's AWS credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSecrets {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Only for temporary (STS) credentials.
    pub session_token: Option<String>,
}

/// Cross-region inference profile prefixes, and the jurisdictions a deployment using one
/// may declare. A profile may process in any region of its geography, so the deployment
/// must declare that geography; `jp.` and `au.` stay within one country, which `apac`
/// also covers. `global.` may process in any commercial region. The EU geography's
/// regions include London and Zurich for some models (Bedrock user guide, "Supported
/// Regions and models for inference profiles"), so `eu.` is `europe`, not `eu`.
pub const PROFILES: &[(&str, &[&str])] = &[
    ("global.", &["global"]),
    ("us-gov.", &["us"]),
    ("us.", &["us"]),
    ("eu.", &["europe"]),
    ("apac.", &["apac"]),
    ("jp.", &["jp", "apac"]),
    ("au.", &["au", "apac"]),
];

impl Bedrock {
    pub fn read(f: &Fields) -> Result<Bedrock, String> {
        let aws_region = required(
            f.opt("aws_region")?,
            "bedrock deployments need `aws_region`, the region requests are signed for",
        )?;
        let id: Option<String> = f.opt("aws_access_key_id_secret")?;
        let key: Option<String> = f.opt("aws_secret_access_key_secret")?;
        let session_token: Option<String> = f.opt("aws_session_token_secret")?;
        let sigv4 = match (id, key) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Some(AwsSecrets { access_key_id, secret_access_key, session_token })
            }
            (None, None) if session_token.is_none() => None,
            (None, None) => return Err("aws_session_token_secret goes with the aws_*_secret key pair".into()),
            _ => return Err("aws_access_key_id_secret and aws_secret_access_key_secret go together".into()),
        };
        Ok(Bedrock { aws_region, sigv4 })
    }

    pub fn validate(&self, d: &Deployment) -> Result<(), String> {
        let region = &self.aws_region;
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("aws_region `{region}` is not an AWS region name such as eu-central-1"));
        }
        let host = host(&d.base_url);
        if host.ends_with(".amazonaws.com") && !host.contains(&format!(".{region}.")) {
            return Err(format!(
                "base_url host `{host}` is not in aws_region `{region}`; a signature is only valid for the endpoint's own region"
            ));
        }
        match (d.api_key_secret.is_some(), self.sigv4.is_some()) {
            (true, true) => {
                return Err(
                    "give either api_key_secret (a Bedrock API key) or the aws_*_secret fields (SigV4), not both"
                        .into(),
                )
            }
            (false, false) => {
                return Err("needs credentials: api_key_secret (a Bedrock API key), or aws_access_key_id_secret and aws_secret_access_key_secret (SigV4)".into())
            }
            _ => {}
        }
        // An inference-profile ARN ends with the profile id.
        let profile = d.model.rsplit('/').next().unwrap_or_default();
        if let Some((prefix, allowed)) = PROFILES.iter().find(|(prefix, _)| profile.starts_with(prefix)) {
            if !allowed.contains(&d.jurisdiction.as_str()) {
                let allowed = allowed.iter().map(|j| format!("`{j}`")).collect::<Vec<_>>().join(" or ");
                let reach =
                    if *prefix == "global." { "in any commercial AWS region" } else { "anywhere in its geography" };
                return Err(format!(
                    "model `{}` is a `{prefix}` cross-region inference profile, which may process {reach}, so the jurisdiction must be {allowed}, not `{}`",
                    d.model, d.jurisdiction
                ));
            }
        }
        Ok(())
    }
}
