//! The config's types read from a parsed JSON value (see `crate::util::valueread`), with the
//! rules they had as derived `Deserialize`s: the same required fields and defaults, `null`
//! as `None` for an optional field, no unknown field.

use super::*;
use crate::util::valueread::{variant, At, Fields, FromValue};
use serde_json::Value;

impl FromValue for Config {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, &["deployments", "aliases", "keys", "residency", "limits", "budgets"])?;
        Ok(Config {
            deployments: f.req("deployments")?,
            aliases: f.req("aliases")?,
            keys: f.or("keys", Vec::new())?,
            residency: f.req("residency")?,
            limits: f.or("limits", Limits::default())?,
            budgets: f.or("budgets", Budgets::default())?,
        })
    }
}

impl FromValue for ProviderKind {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        use ProviderKind::*;
        let names = &["openai", "anthropic", "bedrock", "azure_openai", "mistral", "gemini", "vertex"];
        Ok([Openai, Anthropic, Bedrock, AzureOpenai, Mistral, Gemini, Vertex][variant(v, at, names)?])
    }
}

const DEPLOYMENT_FIELDS: &[&str] = &[
    "id",
    "provider",
    "model",
    "base_url",
    "api_key_secret",
    "aws_region",
    "aws_access_key_id_secret",
    "aws_secret_access_key_secret",
    "aws_session_token_secret",
    "api_version",
    "azure_deployment_type",
    "gcp_project",
    "gcp_location",
    "vertex_publisher",
    "gcp_service_account_secret",
    "jurisdiction",
    "region",
    "location",
    "first_byte_timeout_ms",
    "price",
    "capabilities",
    "health",
];

impl FromValue for Deployment {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, DEPLOYMENT_FIELDS)?;
        Ok(Deployment {
            id: f.req("id")?,
            provider: f.req("provider")?,
            model: f.req("model")?,
            base_url: f.req("base_url")?,
            api_key_secret: f.opt("api_key_secret")?,
            aws_region: f.opt("aws_region")?,
            aws_access_key_id_secret: f.opt("aws_access_key_id_secret")?,
            aws_secret_access_key_secret: f.opt("aws_secret_access_key_secret")?,
            aws_session_token_secret: f.opt("aws_session_token_secret")?,
            api_version: f.opt("api_version")?,
            azure_deployment_type: f.opt("azure_deployment_type")?,
            gcp_project: f.opt("gcp_project")?,
            gcp_location: f.opt("gcp_location")?,
            vertex_publisher: f.opt("vertex_publisher")?,
            gcp_service_account_secret: f.opt("gcp_service_account_secret")?,
            jurisdiction: f.req("jurisdiction")?,
            region: f.req("region")?,
            location: f.opt("location")?,
            first_byte_timeout_ms: f.or("first_byte_timeout_ms", default_first_byte_timeout_ms())?,
            price: f.req("price")?,
            capabilities: f.or("capabilities", Capabilities::default())?,
            health: f.opt("health")?,
        })
    }
}

impl FromValue for Capabilities {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, &["vision", "tools", "json_mode", "context_window"])?;
        Ok(Capabilities {
            vision: f.or("vision", true)?,
            tools: f.or("tools", true)?,
            json_mode: f.or("json_mode", true)?,
            context_window: f.opt("context_window")?,
        })
    }
}

impl FromValue for AzureDeploymentType {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        use AzureDeploymentType::*;
        Ok([Global, DataZoneEu, DataZoneUs, Regional]
            [variant(v, at, &["global", "data_zone_eu", "data_zone_us", "regional"])?])
    }
}

impl FromValue for VertexPublisher {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        Ok([VertexPublisher::Google, VertexPublisher::Anthropic][variant(v, at, &["google", "anthropic"])?])
    }
}

impl FromValue for Strategy {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        use Strategy::*;
        Ok([Priority, Weighted, Latency, Cost][variant(v, at, &["priority", "weighted", "latency", "cost"])?])
    }
}

impl FromValue for Sticky {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        Ok([Sticky::None, Sticky::Caller, Sticky::User][variant(v, at, &["none", "caller", "user"])?])
    }
}

impl FromValue for Alias {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, &["name", "description", "strategy", "deployments", "weights", "sticky"])?;
        Ok(Alias {
            name: f.req("name")?,
            description: f.opt("description")?,
            strategy: f.or("strategy", Strategy::default())?,
            deployments: f.req("deployments")?,
            weights: f.or("weights", BTreeMap::new())?,
            sticky: f.or("sticky", Sticky::default())?,
        })
    }
}

const KEY_FIELDS: &[&str] =
    &["id", "sha256", "secret", "team", "feature", "env", "aliases", "residency", "budget", "rate_limit"];

impl FromValue for KeyConfig {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, KEY_FIELDS)?;
        Ok(KeyConfig {
            id: f.req("id")?,
            sha256: f.opt("sha256")?,
            secret: f.opt("secret")?,
            team: f.opt("team")?,
            feature: f.opt("feature")?,
            env: f.opt("env")?,
            aliases: f.opt("aliases")?,
            residency: f.opt("residency")?,
            budget: f.opt("budget")?,
            rate_limit: f.opt("rate_limit")?,
        })
    }
}

impl FromValue for Budgets {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        Ok(Budgets { teams: Fields::of(v, at, &["teams"])?.or("teams", BTreeMap::new())? })
    }
}

impl FromValue for Residency {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, &["unknown_location", "compliance_tags", "distance_band_km", "rules"])?;
        Ok(Residency {
            unknown_location: f.or("unknown_location", UnknownLocation::default())?,
            compliance_tags: f.or("compliance_tags", BTreeMap::new())?,
            distance_band_km: f.or("distance_band_km", default_distance_band_km())?,
            rules: f.req("rules")?,
        })
    }
}

impl FromValue for UnknownLocation {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let names = &["most_restrictive", "ignore_location"];
        Ok([UnknownLocation::MostRestrictive, UnknownLocation::IgnoreLocation][variant(v, at, names)?])
    }
}

impl FromValue for Rule {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, &["id", "description", "when", "allow"])?;
        Ok(Rule {
            id: f.req("id")?,
            description: f.opt("description")?,
            when: f.or("when", Conditions::default())?,
            allow: f.req("allow")?,
        })
    }
}

impl FromValue for Conditions {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, &["countries", "continents", "eu", "compliance", "teams", "keys"])?;
        Ok(Conditions {
            countries: f.or("countries", Vec::new())?,
            continents: f.or("continents", Vec::new())?,
            eu: f.opt("eu")?,
            compliance: f.or("compliance", Vec::new())?,
            teams: f.or("teams", Vec::new())?,
            keys: f.or("keys", Vec::new())?,
        })
    }
}

impl FromValue for Limits {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let names = &["max_body_bytes", "max_attempts", "total_deadline_ms", "max_retry_after_ms", "health"];
        let f = Fields::of(v, at, names)?;
        Ok(Limits {
            max_body_bytes: f.or("max_body_bytes", default_max_body_bytes())?,
            max_attempts: f.or("max_attempts", default_max_attempts())?,
            total_deadline_ms: f.or("total_deadline_ms", default_total_deadline_ms())?,
            max_retry_after_ms: f.or("max_retry_after_ms", default_max_retry_after_ms())?,
            health: f.or("health", HealthLimits::default())?,
        })
    }
}

impl FromValue for HealthLimits {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::of(v, at, &["failure_threshold", "window_ms", "cooldown_ms"])?;
        Ok(HealthLimits {
            failure_threshold: f.or("failure_threshold", default_failure_threshold())?,
            window_ms: f.or("window_ms", default_window_ms())?,
            cooldown_ms: f.or("cooldown_ms", default_cooldown_ms())?,
        })
    }
}
