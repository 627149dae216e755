//! The gateway config: deployments (where a model is served), aliases (what clients ask
//! for), gateway keys and residency rules. Parsed from JSON and validated as a whole, so a
//! typo is a load-time error naming the offending entry instead of a surprise in
//! production. Unknown fields are rejected for the same reason.

pub mod budget;
pub mod litellm;
pub mod price;
pub mod provider;
mod read;
pub mod secrets;
mod validate;

use crate::config::budget::Budget;
use crate::config::price::Price;
use crate::util::valueread::{self, FromValue};
pub use provider::ProviderSettings;
use std::collections::{BTreeMap, HashMap, HashSet};
use validate::is_secret_name;
pub use validate::{validate, validate_key};

/// Jurisdictions a deployment may declare. `global` is for endpoints that may process
/// anywhere (Bedrock `global.` profiles, Azure Global deployments, the Gemini API, Vertex's
/// global host); it never satisfies a rule that restricts jurisdiction.
pub const JURISDICTIONS: &[&str] =
    &["eu", "uk", "ch", "europe", "us", "ca", "apac", "jp", "au", "in", "br", "me", "global"];

/// Jurisdictions that stand for "any one of these": a deployment declaring one may process
/// in any of its parts, so a rule allows it only when it allows all of them. `europe`: the
/// EU/EEA, the UK or Switzerland, as Bedrock's `eu.` inference profiles and OpenAI's
/// European data residency may.
pub const UNIONS: &[(&str, &[&str])] = &[("europe", &["eu", "uk", "ch"])];

/// The jurisdictions `j` may mean: its parts, for a union; itself otherwise.
pub fn parts(j: &str) -> impl Iterator<Item = &str> + '_ {
    let union = UNIONS.iter().find(|(union, _)| *union == j).map(|(_, parts)| *parts);
    union.into_iter().flatten().copied().chain(union.is_none().then_some(j))
}

/// The `allow` entry meaning "no restriction" (global endpoints included).
pub const ANY: &str = "any";

const CONTINENTS: &[&str] = &["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub deployments: Vec<Deployment>,
    pub aliases: Vec<Alias>,
    pub keys: Vec<KeyConfig>,
    pub residency: Residency,
    pub limits: Limits,
    pub budgets: Budgets,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: String,
    /// Which provider serves it, with the settings only that provider has.
    pub provider: ProviderSettings,
    /// The provider's model name, sent upstream in place of the client's alias.
    pub model: String,
    /// Everything before the provider's operation path, e.g. `https://eu.api.openai.com/v1`.
    pub base_url: String,
    /// Name of the Worker secret holding the provider key; none for keyless endpoints.
    pub api_key_secret: Option<String>,
    pub jurisdiction: String,
    /// Provider region name, reported in `x-gateway-region`.
    pub region: String,
    /// Latitude and longitude of the region, for nearest-first ordering.
    pub location: Option<[f64; 2]>,
    /// Time allowed for the upstream to send its response head (and, for streams, the
    /// first event) before the gateway gives up on this deployment.
    pub first_byte_timeout_ms: u32,
    /// USD per million tokens, as decimal strings; required, so no request is ever costed
    /// at a silent $0. Regional price differences go in each regional deployment.
    pub price: Price,
    pub capabilities: Capabilities,
    /// This deployment's circuit breaker, instead of `limits.health`.
    pub health: Option<HealthLimits>,
}

impl Deployment {
    /// Every Worker secret the deployment names, with its field.
    pub fn secrets(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let (mut sigv4, mut service_account) = (None, None);
        match &self.provider {
            ProviderSettings::Bedrock(b) => sigv4 = b.sigv4.as_ref(),
            ProviderSettings::Vertex(v) => service_account = Some(v.service_account_secret.as_str()),
            _ => {}
        }
        [
            ("api_key_secret", self.api_key_secret.as_deref()),
            ("aws_access_key_id_secret", sigv4.map(|k| k.access_key_id.as_str())),
            ("aws_secret_access_key_secret", sigv4.map(|k| k.secret_access_key.as_str())),
            ("aws_session_token_secret", sigv4.and_then(|k| k.session_token.as_deref())),
            ("gcp_service_account_secret", service_account),
        ]
        .into_iter()
        .filter_map(|(field, name)| Some((field, name?)))
    }

    pub fn health_limits<'a>(&'a self, defaults: &'a HealthLimits) -> &'a HealthLimits {
        self.health.as_ref().unwrap_or(defaults)
    }
}

/// What a deployment can do, for capability routing: a request with images goes only to
/// vision-capable deployments, with tools only to tool-capable ones, a long prompt only
/// where it fits. Everything is assumed possible unless the config says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    pub vision: bool,
    pub tools: bool,
    pub json_mode: bool,
    /// Tokens of prompt plus answer; unknown when absent.
    pub context_window: Option<u64>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities { vision: true, tools: true, json_mode: true, context_window: None }
    }
}

fn default_first_byte_timeout_ms() -> u32 {
    30_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Ordered failover: the deployments in the order listed.
    #[default]
    Priority,
    /// A/B split by `weights`; the rest follow by weight as fallbacks.
    Weighted,
    /// The best recent time to first byte seen from this colo first.
    Latency,
    /// Cheapest first by the price table.
    Cost,
}

/// What keeps a weighted draw stable across requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sticky {
    /// A fresh draw per request.
    #[default]
    None,
    /// The same deployment for the same gateway key and caller country.
    Caller,
    /// The same deployment for the same OpenAI `user` field.
    User,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alias {
    pub name: String,
    pub description: Option<String>,
    pub strategy: Strategy,
    pub deployments: Vec<String>,
    /// For `weighted`: deployment id → weight (relative; e.g. 90 and 10).
    pub weights: BTreeMap<String, u32>,
    pub sticky: Sticky,
}

/// A gateway key. Its secret is never in the config in clear: either its SHA-256 (hex) or
/// the name of a Worker secret that holds it.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct KeyConfig {
    pub id: String,
    pub sha256: Option<String>,
    pub secret: Option<String>,
    pub team: Option<String>,
    pub feature: Option<String>,
    pub env: Option<String>,
    /// Aliases this key may use; all when absent.
    pub aliases: Option<Vec<String>>,
    /// Jurisdictions this key's requests may reach; it can only narrow the rules' answer.
    pub residency: Option<Vec<String>>,
    pub budget: Option<Budget>,
    /// Name of the rate-limiting binding (wrangler.toml `[[ratelimits]]`) whose limit
    /// applies to this key, counted per key.
    pub rate_limit: Option<String>,
}

/// Budgets that are not a key's own.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    pub teams: BTreeMap<String, Budget>,
}

#[derive(Debug, Clone)]
pub struct Residency {
    pub unknown_location: UnknownLocation,
    /// Compliance tag → the jurisdictions a request carrying it may reach.
    pub compliance_tags: BTreeMap<String, Vec<String>>,
    /// Candidates closer than this to each other count as equally near, so the alias's
    /// own order decides between them.
    pub distance_band_km: f64,
    pub rules: Vec<Rule>,
}

fn default_distance_band_km() -> f64 {
    1000.0
}

/// What to do when the caller's location is unknown or anonymised (`XX`, Tor's `T1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownLocation {
    /// Of the rules that could match the caller wherever they are, the one allowing the
    /// fewest jurisdictions applies.
    #[default]
    MostRestrictive,
    /// Location conditions do not match; the first rule without one applies.
    IgnoreLocation,
}

impl UnknownLocation {
    /// The name the config uses.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownLocation::MostRestrictive => "most_restrictive",
            UnknownLocation::IgnoreLocation => "ignore_location",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub description: Option<String>,
    pub when: Conditions,
    /// Allowed jurisdictions, or `["any"]`.
    pub allow: Vec<String>,
}

/// Every listed condition must hold; an empty list means "any".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    pub countries: Vec<String>,
    pub continents: Vec<String>,
    pub eu: Option<bool>,
    pub compliance: Vec<String>,
    pub teams: Vec<String>,
    pub keys: Vec<String>,
}

impl Conditions {
    pub fn has_location(&self) -> bool {
        !self.countries.is_empty() || !self.continents.is_empty() || self.eu.is_some()
    }

    fn is_empty(&self) -> bool {
        !self.has_location() && self.compliance.is_empty() && self.teams.is_empty() && self.keys.is_empty()
    }

    /// True when every request these conditions match is also matched by `self`, so a
    /// rule with `other` after a rule with `self` can never match.
    fn covers(&self, other: &Conditions) -> bool {
        let list = |mine: &[String], theirs: &[String]| {
            mine.is_empty() || (!theirs.is_empty() && theirs.iter().all(|t| mine.contains(t)))
        };
        list(&self.countries, &other.countries)
            && list(&self.continents, &other.continents)
            && list(&self.compliance, &other.compliance)
            && list(&self.teams, &other.teams)
            && list(&self.keys, &other.keys)
            && (self.eu.is_none() || self.eu == other.eu)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_body_bytes: usize,
    /// Upper bound on upstream attempts for one client request.
    pub max_attempts: usize,
    /// Upper bound on the time spent trying upstreams before the answer starts, so a
    /// failing provider cannot become a retry storm.
    pub total_deadline_ms: u64,
    /// A `Retry-After` longer than this is not waited for on the same deployment.
    pub max_retry_after_ms: u64,
    pub health: HealthLimits,
}

fn default_total_deadline_ms() -> u64 {
    60_000
}

fn default_max_retry_after_ms() -> u64 {
    5_000
}

/// The circuit breaker: a deployment with `failure_threshold` failures within
/// `window_ms` is skipped for `cooldown_ms`, then probed by a single request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthLimits {
    pub failure_threshold: u32,
    pub window_ms: u64,
    pub cooldown_ms: u64,
}

fn default_failure_threshold() -> u32 {
    5
}

fn default_window_ms() -> u64 {
    60_000
}

fn default_cooldown_ms() -> u64 {
    30_000
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits {
            failure_threshold: default_failure_threshold(),
            window_ms: default_window_ms(),
            cooldown_ms: default_cooldown_ms(),
        }
    }
}

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

fn default_max_attempts() -> usize {
    3
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_attempts: default_max_attempts(),
            total_deadline_ms: default_total_deadline_ms(),
            max_retry_after_ms: default_max_retry_after_ms(),
            health: HealthLimits::default(),
        }
    }
}

/// A validated config with its lookups built once.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    deployment_index: HashMap<String, usize>,
    alias_index: HashMap<String, usize>,
}

impl Gateway {
    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployment_index.get(id).map(|&i| &self.config.deployments[i])
    }

    pub fn alias(&self, name: &str) -> Option<&Alias> {
        self.alias_index.get(name).map(|&i| &self.config.aliases[i])
    }
}

pub fn parse(json: &str) -> Result<Gateway, String> {
    let doc = valueread::parse(json.as_bytes()).map_err(|e| format!("config is not valid: {e}"))?;
    let mut config = Config::read(&doc).map_err(|e| format!("config is not valid: {e}"))?;
    validate(&config)?;
    for d in &mut config.deployments {
        if provider::anthropic::inference_geo(d).is_some() {
            d.price.uplift_pct = provider::anthropic::US_UPLIFT_PCT;
        }
        if matches!(d.provider, ProviderSettings::Anthropic) && d.price.web_search.is_none() {
            d.price.web_search = Some(provider::anthropic::WEB_SEARCH_PRICE);
        }
    }
    let deployment_index = config.deployments.iter().enumerate().map(|(i, d)| (d.id.clone(), i)).collect();
    let alias_index = config.aliases.iter().enumerate().map(|(i, a)| (a.name.clone(), i)).collect();
    Ok(Gateway { config, deployment_index, alias_index })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> String {
        serde_json::json!({
            "deployments": [
                {"id": "eu-a", "provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/eu-a/v1",
                 "jurisdiction": "eu", "region": "eu-central-1", "location": [50.1, 8.7], "price": {"input": "1", "output": "2"}},
                {"id": "eu-b", "provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/eu-b/v1",
                 "jurisdiction": "eu", "region": "eu-west-3", "location": [48.9, 2.4], "price": {"input": "1", "output": "2"}},
                {"id": "us-a", "provider": "openai", "model": "m", "base_url": "https://api.example.com/v1",
                 "api_key_secret": "US_KEY", "jurisdiction": "us", "region": "us-east-1", "location": [38.9, -77.0], "price": {"input": "1", "output": "2"}},
                {"id": "jp-a", "provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/jp-a/v1",
                 "jurisdiction": "apac", "region": "ap-northeast-1", "location": [35.7, 139.7], "price": {"input": "1", "output": "2"}},
                {"id": "sg-a", "provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/sg-a/v1",
                 "jurisdiction": "apac", "region": "ap-southeast-1", "location": [1.35, 103.8], "price": {"input": "1", "output": "2"}},
                {"id": "gl-a", "provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/gl-a/v1",
                 "jurisdiction": "global", "region": "global", "price": {"input": "1", "output": "2"}}
            ],
            "aliases": [
                {"name": "chat", "deployments": ["us-a", "eu-a", "eu-b", "jp-a", "sg-a", "gl-a"]},
                {"name": "us-only", "deployments": ["us-a"]}
            ],
            "keys": [
                {"id": "k1", "sha256": "a".repeat(64), "team": "search"},
                {"id": "k2", "secret": "GATEWAY_KEY_K2", "residency": ["eu"]}
            ],
            "residency": {
                "compliance_tags": {"gdpr": ["eu", "uk", "ch"], "us-only": ["us"]},
                "rules": [
                    {"id": "gdpr-tag", "when": {"compliance": ["gdpr"]}, "allow": ["eu"]},
                    {"id": "eu-callers", "when": {"eu": true}, "allow": ["eu"]},
                    {"id": "apac-callers", "when": {"continents": ["AS", "OC"]}, "allow": ["apac"]},
                    {"id": "default", "allow": ["any"]}
                ]
            }
        })
        .to_string()
    }

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Gateway, String> {
        let mut v: serde_json::Value = serde_json::from_str(&sample()).unwrap();
        edit(&mut v);
        parse(&v.to_string())
    }

    #[test]
    fn sample_is_valid_and_indexed() {
        let g = parse(&sample()).unwrap();
        assert_eq!(g.alias("chat").unwrap().deployments.len(), 6);
        assert_eq!(g.deployment("eu-b").unwrap().region, "eu-west-3");
        assert_eq!(g.deployment("eu-b").unwrap().first_byte_timeout_ms, 30_000);
        assert!(g.alias("nope").is_none());
        assert_eq!(g.config.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    fn rejects(edit: impl FnOnce(&mut serde_json::Value), needle: &str) {
        let err = with(edit).unwrap_err();
        assert!(err.contains(needle), "error `{err}` should mention `{needle}`");
    }

    #[test]
    fn validation_names_the_offending_entry() {
        rejects(|v| v["deployments"][1]["id"] = "eu-a".into(), "duplicate deployment id `eu-a`");
        rejects(|v| v["aliases"][0]["deployments"][0] = "ghost".into(), "unknown deployment `ghost`");
        rejects(|v| v["aliases"][1]["deployments"] = serde_json::json!([]), "alias `us-only` lists no deployments");
        rejects(|v| v["deployments"][0]["jurisdiction"] = "mars".into(), "unknown jurisdiction `mars`");
        rejects(|v| v["deployments"][2]["api_key_secret"] = "bad name".into(), "api_key_secret `bad name`");
        rejects(|v| v["deployments"][0]["base_url"] = "ftp://x".into(), "base_url");
        rejects(|v| v["deployments"][0]["base_url"] = "http://x/v1/".into(), "must not end");
        rejects(|v| v["deployments"][0]["location"] = serde_json::json!([91, 0]), "latitude");
        rejects(
            |v| v["deployments"][0]["surprise"] = 1.into(),
            "config is not valid: deployment `eu-a` (openai): unknown field `surprise`, expected one of `id`, `provider`, ",
        );
        rejects(|v| v["deployments"][0]["provider"] = "anthropic".into(), "anthropic needs api_key_secret");
        rejects(
            |v| v["deployments"][0].as_object_mut().unwrap().remove("price").map(drop).unwrap(),
            "config is not valid: deployments[0]: missing field `price`",
        );
        rejects(
            |v| v["deployments"][0]["price"]["input"] = 0.5.into(),
            "deployments[0].price.input: invalid type: floating point `0.5`, expected a price",
        );
        rejects(|v| v["keys"][0]["sha256"] = "XYZ".into(), "64 lowercase hex");
        rejects(|v| v["keys"][1]["sha256"] = "a".repeat(64).into(), "exactly one of");
        rejects(|v| v["keys"][0]["aliases"] = serde_json::json!(["nope"]), "unknown alias `nope`");
        rejects(|v| v["keys"][1]["residency"] = serde_json::json!(["global"]), "cannot be allowed");
    }

    #[test]
    fn residency_validation() {
        rejects(|v| v["residency"]["rules"][0]["allow"] = serde_json::json!(["us"]), "may not reach `us`");
        rejects(|v| v["residency"]["rules"][0]["allow"] = serde_json::json!(["any"]), "may not reach `any`");
        rejects(
            |v| v["residency"]["rules"][0]["when"]["compliance"] = serde_json::json!(["hipaa"]),
            "unknown compliance tag `hipaa`",
        );
        rejects(|v| v["residency"]["rules"][1]["allow"] = serde_json::json!(["eu", "any"]), "must stand alone");
        rejects(|v| v["residency"]["rules"][1]["allow"] = serde_json::json!([]), "list is empty");
        rejects(|v| v["residency"]["rules"][2]["when"]["continents"] = serde_json::json!(["XX"]), "unknown continent");
        rejects(|v| v["residency"]["rules"][2]["when"]["countries"] = serde_json::json!(["de"]), "country `de`");
        rejects(
            |v| {
                v["residency"]["rules"].as_array_mut().unwrap().push(serde_json::json!({"id": "late", "allow": ["eu"]}))
            },
            "rule `late` can never match",
        );
        rejects(
            |v| v["residency"]["rules"][3]["when"]["teams"] = serde_json::json!(["x"]),
            "the last rule must have no conditions",
        );
        rejects(
            |v| {
                let rules = v["residency"]["rules"].as_array_mut().unwrap();
                rules.insert(1, serde_json::json!({"id": "early", "allow": ["any"]}));
            },
            "rule `eu-callers` can never match: every request it matches is matched first by rule `early`",
        );
        rejects(
            |v| {
                let rules = v["residency"]["rules"].as_array_mut().unwrap();
                rules.insert(
                    2,
                    serde_json::json!({"id": "de-only", "when": {"eu": true, "countries": ["DE"]}, "allow": ["eu"]}),
                );
            },
            "rule `de-only` can never match: every request it matches is matched first by rule `eu-callers`",
        );
        rejects(
            |v| v["residency"]["rules"][1]["when"]["countries"] = serde_json::json!(["US", "JP"]),
            "rule `eu-callers` can never match: none of its countries is an EU member",
        );
        rejects(|v| v["residency"]["compliance_tags"]["Bad Tag"] = serde_json::json!(["eu"]), "lowercase");
        rejects(|v| v["residency"]["rules"] = serde_json::json!([]), "rules is empty");
    }

    #[test]
    fn read_errors_name_the_field_and_what_was_expected() {
        rejects(
            |v| v["residency"]["rules"][1]["when"]["eu"] = "yes".into(),
            "residency.rules[1].when.eu: invalid type: string \"yes\", expected a boolean",
        );
        rejects(
            |v| v["aliases"][0]["strategy"] = "fastest".into(),
            "aliases[0].strategy: unknown variant `fastest`, expected one of `priority`, `weighted`, `latency`, `cost`",
        );
        rejects(
            |v| v["deployments"][0]["first_byte_timeout_ms"] = (-1).into(),
            "deployments[0].first_byte_timeout_ms: invalid value: integer `-1`, expected u32",
        );
        rejects(
            |v| v["deployments"][0]["location"] = serde_json::json!([1]),
            "deployments[0].location: invalid length 1, expected an array of length 2",
        );
        rejects(
            |v| v["keys"][1]["budget"] = serde_json::json!({"monthly_usd": "1", "mode": 1}),
            "keys[1].budget.mode: invalid type: integer `1`, expected a string",
        );
        rejects(
            |v| v["residency"]["compliance_tags"]["gdpr"][0] = 1.into(),
            "residency.compliance_tags.gdpr[0]: invalid type: integer `1`",
        );
        rejects(
            |v| v["limits"] = serde_json::json!({"max_attempts": null}),
            "limits.max_attempts: invalid type: null, expected usize",
        );
        rejects(
            |v| v["surprise"] = 1.into(),
            "config is not valid: unknown field `surprise`, expected one of `deployments`, ",
        );
        let twice = parse(&sample().replacen(r#""region":"#, r#""region":"x","region":"#, 1)).unwrap_err();
        assert!(twice.starts_with("config is not valid: duplicate field `region` at line 1 column "), "{twice}");
        let key = KeyConfig::read(&serde_json::json!({"id": "k", "colour": "red"})).unwrap_err();
        assert!(key.starts_with("unknown field `colour`, expected one of `id`, `sha256`, "), "{key}");
        rejects(
            |v| v["residency"] = serde_json::json!([]),
            "config is not valid: residency: invalid type: sequence, expected an object",
        );
    }

    #[test]
    fn read_fills_in_defaults_and_takes_null_as_none() {
        let g = with(|v| {
            v["deployments"][0]["api_key_secret"] = serde_json::Value::Null;
            v["deployments"][0]["capabilities"] = serde_json::json!({"vision": false});
            v["keys"][0]["budget"] = serde_json::json!({"monthly_usd": "5"});
        })
        .unwrap();
        let d = g.deployment("eu-a").unwrap();
        assert_eq!((d.api_key_secret.as_deref(), d.health, d.first_byte_timeout_ms), (None, None, 30_000));
        assert_eq!(d.capabilities, Capabilities { vision: false, ..Capabilities::default() });
        assert_eq!(d.location, Some([50.1, 8.7]));
        let a = g.alias("chat").unwrap();
        assert_eq!(
            (a.strategy, a.sticky, a.weights.len(), a.description.as_deref()),
            (Strategy::Priority, Sticky::None, 0, None)
        );
        let budget = g.config.keys[0].budget.unwrap();
        assert_eq!((budget.monthly_usd.0, budget.mode), (5_000_000, crate::config::budget::Mode::Hard));
        let r = &g.config.residency;
        assert_eq!((r.unknown_location, r.distance_band_km), (UnknownLocation::MostRestrictive, 1000.0));
        assert_eq!(r.rules[3].when, Conditions::default());
        assert_eq!(g.config.limits, Limits::default());
        assert!(g.config.budgets.teams.is_empty());
    }

    #[test]
    fn names_compare_the_way_requests_do() {
        // Request tags are lowercased; a team written otherwise in a rule or a budget would
        // never match, and the request would fall through to a broader rule.
        rejects(
            |v| {
                v["residency"]["rules"]
                    .as_array_mut()
                    .unwrap()
                    .insert(0, serde_json::json!({"id": "legal", "when": {"teams": ["Legal"]}, "allow": ["any"]}))
            },
            "residency rule `legal`: team `Legal` is not a tag value",
        );
        rejects(
            |v| v["budgets"] = serde_json::json!({"teams": {"Search": {"monthly_usd": "1"}}}),
            "budgets.teams: team `Search` is not a tag value",
        );
        rejects(|v| v["keys"][0]["team"] = "Search".into(), "key `k1`: team `Search` is not a tag value");
        rejects(|v| v["keys"][0]["env"] = "Prod Env".into(), "key `k1`: env `Prod Env` is not a tag value");
    }

    #[test]
    fn bundled_configs_are_valid() {
        parse(include_str!("../../config/gateway.json")).unwrap();
        parse(include_str!("../../config/demo.json")).unwrap();
    }
}
