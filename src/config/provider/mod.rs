//! Each provider's own part of a deployment: the settings only its deployments carry, read
//! and checked here so that a deployment is complete and consistent before any request.

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod vertex;

use super::Deployment;
use crate::util::valueread::{At, Fields};

/// Declares [`ProviderSettings`], its config [`NAMES`], `name` and `read` from one list.
macro_rules! providers {
    ($($(#[doc = $doc:literal])* $variant:ident $(($settings:ty))? = $name:literal,)*) => {
        /// A deployment's provider, with the settings only that provider has.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProviderSettings {
            $($(#[doc = $doc])* $variant $(($settings))?,)*
        }

        /// The names the config gives providers.
        pub const NAMES: &[&str] = &[$($name),*];

        impl ProviderSettings {
            /// As the config names it, and as reported in `x-gateway-provider` and the ledger.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $name,)*
                }
            }

            /// The provider `name` with its settings, read from the deployment's fields.
            pub fn read(name: &str, f: &Fields, at: At) -> Result<Self, String> {
                $(if name == $name {
                    return Ok(Self::$variant $((<$settings>::read(f)?))?);
                })*
                let at = At::Field(&at, "provider");
                Err(format!("{at}: unknown variant `{name}`, expected one of `{}`", NAMES.join("`, `")))
            }
        }
    };
}

// The registry of providers a deployment may name: one line each, with the struct of its
// own settings where it has some.
providers! {
    /// OpenAI's Chat Completions wire format (api.openai.com and its regional hosts, and
    /// any OpenAI-compatible server).
    Openai = "openai",
    /// Anthropic's Messages API (api.anthropic.com).
    Anthropic = "anthropic",
    /// AWS Bedrock's Converse API (bedrock-runtime), SigV4-signed or with a Bedrock API key.
    Bedrock(bedrock::Bedrock) = "bedrock",
    /// Azure OpenAI: OpenAI's format on a resource's deployment (`api-key` header).
    AzureOpenai(azure::Azure) = "azure_openai",
    /// Mistral's La Plateforme (api.mistral.ai): OpenAI-like, with Mistral's own fields.
    Mistral = "mistral",
    /// Google's Gemini API (generativelanguage.googleapis.com), with an API key.
    Gemini = "gemini",
    /// Google Cloud Vertex AI: Gemini, or Claude (Anthropic's format), with a service account.
    Vertex(vertex::Vertex) = "vertex",
}

impl ProviderSettings {
    /// The provider's own rules for a deployment; the caller names the deployment.
    pub fn validate(&self, d: &Deployment) -> Result<(), String> {
        match self {
            Self::Anthropic => anthropic::validate(d),
            Self::Openai => endpoint(d, OPENAI_HOSTS, ".api.openai.com"),
            Self::Mistral if d.api_key_secret.is_none() => Err(format!("{} needs api_key_secret", self.name())),
            Self::Mistral => endpoint(d, MISTRAL_HOSTS, ".mistral.ai"),
            Self::Bedrock(b) => b.validate(d),
            Self::AzureOpenai(a) => a.validate(d),
            Self::Gemini => validate_gemini(d),
            Self::Vertex(v) => v.validate(d),
        }
    }
}

/// Where OpenAI's hosts process ("Data residency" in OpenAI's platform documentation):
/// in-region only in the US and in Europe (the EEA and Switzerland); its other regional
/// hosts keep data at rest in their region, which says nothing of processing.
const OPENAI_HOSTS: &[(&str, &str)] = &[("us.api.openai.com", "us"), ("eu.api.openai.com", "europe")];

/// Mistral's regional endpoints (Mistral's "Regional inference"); `api.mistral.ai` is its
/// global one, with no guarantee of where it processes.
const MISTRAL_HOSTS: &[(&str, &str)] = &[("api.eu.mistral.ai", "eu"), ("api.us.mistral.ai", "us")];

/// A provider's own hosts process where its documentation says: one of `hosts` in its
/// region, any other of its domain (`provider_domain`) anywhere (`global`). A host of
/// another domain (a proxy, a test server) is as declared.
fn endpoint(d: &Deployment, hosts: &[(&str, &str)], provider_domain: &str) -> Result<(), String> {
    let host = host(&d.base_url);
    let required = match hosts.iter().find(|(h, _)| *h == host) {
        Some((_, j)) => *j,
        None if host.ends_with(provider_domain) || format!(".{host}").ends_with(provider_domain) => "global",
        None => return Ok(()),
    };
    if d.jurisdiction == required {
        return Ok(());
    }
    Err(format!(
        "base_url host `{host}` may process in `{required}`, so the jurisdiction must be `{required}`, not `{}`",
        d.jurisdiction
    ))
}

fn validate_gemini(d: &Deployment) -> Result<(), String> {
    if d.jurisdiction != "global" {
        return Err(format!(
            "the Gemini API has no region control (Google may process its requests anywhere), so the jurisdiction must be `global`, not `{}`; for in-region processing use a vertex deployment",
            d.jurisdiction
        ));
    }
    if d.api_key_secret.is_none() {
        return Err("gemini deployments need `api_key_secret`, the Worker secret with the Gemini API key".into());
    }
    if d.model.contains('/') {
        return Err(format!("model `{}` must be a bare model name such as gemini-2.5-flash", d.model));
    }
    Ok(())
}

/// The host of a deployment's base URL.
pub(crate) fn host(base_url: &str) -> &str {
    base_url.split_once("://").map_or("", |(_, rest)| rest.split(['/', ':']).next().unwrap_or_default())
}

/// A required setting, with what it is for when it is missing.
fn required<T>(value: Option<T>, missing: &str) -> Result<T, String> {
    value.ok_or_else(|| missing.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_name_reads_back_as_itself() {
        let settings = json!({
            "aws_region": "eu-central-1", "api_version": "v1", "azure_deployment_type": "global",
            "gcp_project": "p", "gcp_location": "eu", "vertex_publisher": "google",
            "gcp_service_account_secret": "SA"
        });
        for name in NAMES {
            let f = Fields::any(&settings, At::Root).unwrap();
            assert_eq!(ProviderSettings::read(name, &f, At::Root).unwrap().name(), *name);
        }
        let f = Fields::any(&settings, At::Root).unwrap();
        let e = ProviderSettings::read("openia", &f, At::Root).unwrap_err();
        assert!(e.starts_with("provider: unknown variant `openia`, expected one of `openai`, "), "{e}");
    }

    fn deployment(provider: &str, base_url: &str, jurisdiction: &str) -> Deployment {
        use crate::util::valueread::FromValue;
        Deployment::read(&json!({
            "id": "d", "provider": provider, "model": "m", "base_url": base_url, "api_key_secret": "KEY",
            "jurisdiction": jurisdiction, "region": "r", "price": {"input": "1", "output": "1"}
        }))
        .unwrap()
    }

    #[test]
    fn a_providers_own_endpoints_decide_where_they_process() {
        let check = |provider: &str, url: &str, j: &str| {
            deployment(provider, url, j).provider.validate(&deployment(provider, url, j))
        };
        // OpenAI: in-region processing only in the US and the EU (EEA and Switzerland); its
        // other regional hosts keep data at rest there, not processing.
        assert_eq!(check("openai", "https://eu.api.openai.com/v1", "europe"), Ok(()));
        assert!(check("openai", "https://eu.api.openai.com/v1", "eu")
            .unwrap_err()
            .contains("must be `europe`, not `eu`"));
        assert_eq!(check("openai", "https://us.api.openai.com/v1", "us"), Ok(()));
        assert!(check("openai", "https://api.openai.com/v1", "us").unwrap_err().contains("must be `global`"));
        assert!(check("openai", "https://jp.api.openai.com/v1", "jp").unwrap_err().contains("must be `global`"));
        assert_eq!(check("openai", "http://127.0.0.1:9/v1", "eu"), Ok(()), "a server of one's own: as declared");
        // Mistral: the global endpoint guarantees nothing; its regional ones their region.
        assert!(check("mistral", "https://api.mistral.ai/v1", "eu").unwrap_err().contains("must be `global`"));
        assert_eq!(check("mistral", "https://api.eu.mistral.ai/v1", "eu"), Ok(()));
        assert_eq!(check("mistral", "https://api.us.mistral.ai/v1", "us"), Ok(()));
        assert_eq!(check("mistral", "http://127.0.0.1:9/v1", "eu"), Ok(()));
    }
}
