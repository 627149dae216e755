//! Anthropic's API processes a request wherever Anthropic chooses (`global`) unless it
//! carries `inference_geo`, which today takes only `"us"`, only on Claude 4.6 and later
//! models, and costs 1.1× on every token (Anthropic's "Data residency" documentation). The
//! answer reports where inference ran in `usage.inference_geo`. So a deployment's
//! jurisdiction is `global`, or `us` with a model that takes the parameter: the
//! jurisdiction implies the parameter, and the gateway checks the report against it.

use super::{Deployment, ProviderSettings};
use crate::config::price::PerThousand;

/// The one processing geography Anthropic's API can be held to.
pub const US: &str = "us";

/// Anthropic's price for `inference_geo: "us"`: 1.1×, in percent.
pub const US_UPLIFT_PCT: u32 = 110;

/// Anthropic's list price for its web search server tool: $10 per 1,000 searches
/// (Anthropic's pricing documentation, "Web search tool").
pub const WEB_SEARCH_PRICE: PerThousand = PerThousand(10_000_000);

/// The `inference_geo` a deployment's requests carry, and its answers must report.
pub fn inference_geo(d: &Deployment) -> Option<&'static str> {
    (matches!(d.provider, ProviderSettings::Anthropic) && d.jurisdiction == US).then_some(US)
}

pub fn validate(d: &Deployment) -> Result<(), String> {
    if d.api_key_secret.is_none() {
        return Err("anthropic needs api_key_secret".into());
    }
    match d.jurisdiction.as_str() {
        "global" => Ok(()),
        US if takes_inference_geo(&d.model) => Ok(()),
        US => Err(format!(
            "model `{}` does not take inference_geo (Claude 4.6 and later do), so Anthropic may process it anywhere: the jurisdiction must be `global`",
            d.model
        )),
        other => Err(format!(
            "Anthropic's API processes requests anywhere (`global`) or, with inference_geo, in the US (`us`); it cannot be held to `{other}` (Claude on Bedrock or Vertex AI can)"
        )),
    }
}

/// Whether a model id names Claude 4.6 or later (`claude-sonnet-4-6`, `claude-opus-4-6-…`,
/// `claude-opus-5`): the models that take `inference_geo`.
fn takes_inference_geo(model: &str) -> bool {
    let Some(rest) = model.strip_prefix("claude-") else { return false };
    let Some((family, version)) = rest.split_once('-') else { return false };
    if !family.bytes().all(|b| b.is_ascii_lowercase()) {
        return false;
    }
    // A date (`20250514`) is not a minor version.
    let mut numbers = version.split('-').map_while(|n| n.parse::<u32>().ok().filter(|_| n.len() <= 2));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= (4, 6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::valueread::FromValue;
    use serde_json::json;

    fn deployment(jurisdiction: &str, model: &str) -> Deployment {
        Deployment::read(&json!({
            "id": "claude", "provider": "anthropic", "model": model, "api_key_secret": "ANTHROPIC_API_KEY",
            "base_url": "https://api.anthropic.com/v1", "jurisdiction": jurisdiction, "region": "us",
            "price": {"input": "3", "output": "15"}
        }))
        .unwrap()
    }

    #[test]
    fn the_jurisdiction_is_global_or_us_with_a_model_that_takes_inference_geo() {
        for model in
            ["claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-6-20260205", "claude-opus-5", "claude-haiku-4-7"]
        {
            assert_eq!(validate(&deployment("us", model)), Ok(()), "{model}");
            assert_eq!(inference_geo(&deployment("us", model)), Some("us"));
        }
        for model in [
            "claude-haiku-4-5",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-20250514",
            "claude-3-5-sonnet-20241022",
            "model-x",
        ] {
            let e = validate(&deployment("us", model)).unwrap_err();
            assert!(e.contains("does not take inference_geo"), "{model}: {e}");
        }
        assert_eq!(validate(&deployment("global", "claude-haiku-4-5")), Ok(()));
        assert_eq!(inference_geo(&deployment("global", "claude-opus-4-6")), None);
        let e = validate(&deployment("eu", "claude-opus-4-6")).unwrap_err();
        assert!(e.contains("cannot be held to `eu`"), "{e}");
    }
}
