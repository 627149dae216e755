//! The config's types read from a parsed JSON value (see `crate::util::valueread`), with the
//! rules they had as derived `Deserialize`s: the same required fields and defaults, `null`
//! as `None` for an optional field, no unknown field.

use super::*;
use crate::util::valueread::{variant, At, Fields, FromValue};
use serde_json::Value;

impl FromValue for Config {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(Config {
            deployments: f.req("deployments")?,
            aliases: f.req("aliases")?,
            keys: f.or("keys", Vec::new())?,
            residency: f.req("residency")?,
            limits: f.or("limits", Limits::default())?,
            budgets: f.or("budgets", Budgets::default())?,
        })
    }
}

impl FromValue for Deployment {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        let id: String = f.req("id")?;
        let name: String = f.req("provider")?;
        let named = |e: String| format!("deployment `{id}`: {e}");
        let provider = ProviderSettings::read(&name, &f, at).map_err(named)?;
        let d = Deployment {
            provider,
            id: id.clone(),
            model: f.req("model")?,
            base_url: f.req("base_url")?,
            api_key_secret: f.opt("api_key_secret")?,
            jurisdiction: f.req("jurisdiction")?,
            region: f.req("region")?,
            location: f.opt("location")?,
            first_byte_timeout_ms: f.or("first_byte_timeout_ms", default_first_byte_timeout_ms())?,
            price: f.req("price")?,
            capabilities: f.or("capabilities", Capabilities::default())?,
            health: f.opt("health")?,
        };
        match f.unread() {
            Some(e) => Err(format!("deployment `{id}` ({name}): {e}")),
            None => Ok(d),
        }
    }
}

impl FromValue for Capabilities {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(Capabilities {
            vision: f.or("vision", true)?,
            tools: f.or("tools", true)?,
            json_mode: f.or("json_mode", true)?,
            context_window: f.opt("context_window")?,
        })
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
        let f = Fields::strict(v, at)?;
        f.done(Alias {
            name: f.req("name")?,
            description: f.opt("description")?,
            strategy: f.or("strategy", Strategy::default())?,
            deployments: f.req("deployments")?,
            weights: f.or("weights", BTreeMap::new())?,
            sticky: f.or("sticky", Sticky::default())?,
        })
    }
}

impl FromValue for KeyConfig {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(KeyConfig {
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
        let f = Fields::strict(v, at)?;
        f.done(Budgets { teams: f.or("teams", BTreeMap::new())? })
    }
}

impl FromValue for Residency {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(Residency {
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
        let f = Fields::strict(v, at)?;
        f.done(Rule {
            id: f.req("id")?,
            description: f.opt("description")?,
            when: f.or("when", Conditions::default())?,
            allow: f.req("allow")?,
        })
    }
}

impl FromValue for Conditions {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::strict(v, at)?;
        f.done(Conditions {
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
        let f = Fields::strict(v, at)?;
        f.done(Limits {
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
        let f = Fields::strict(v, at)?;
        f.done(HealthLimits {
            failure_threshold: f.or("failure_threshold", default_failure_threshold())?,
            window_ms: f.or("window_ms", default_window_ms())?,
            cooldown_ms: f.or("cooldown_ms", default_cooldown_ms())?,
        })
    }
}
