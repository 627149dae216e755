//! The gateway config: deployments (where a model is served), aliases (what clients ask
//! for), gateway keys and residency rules. Parsed from JSON and validated as a whole, so a
//! typo is a load-time error naming the offending entry instead of a surprise in
//! production. Unknown fields are rejected for the same reason.

pub mod budget;
pub mod litellm;
pub mod price;
mod read;

use crate::config::budget::Budget;
use crate::config::price::Price;
use crate::util::valueread::{self, FromValue};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Jurisdictions a deployment may declare. `global` is for endpoints that may process
/// anywhere (Bedrock `global.` profiles, Azure Global deployments, the Gemini API, Vertex's
/// global host); it never satisfies a rule that restricts jurisdiction.
pub const JURISDICTIONS: &[&str] = &["eu", "uk", "ch", "us", "ca", "apac", "jp", "au", "in", "br", "me", "global"];

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI's Chat Completions wire format (api.openai.com and its regional hosts, and
    /// any OpenAI-compatible server).
    Openai,
    /// Anthropic's Messages API (api.anthropic.com).
    Anthropic,
    /// AWS Bedrock's Converse API (bedrock-runtime), SigV4-signed or with a Bedrock API key.
    Bedrock,
    /// Azure OpenAI: OpenAI's format on a resource's deployment (`api-key` header).
    AzureOpenai,
    /// Mistral's La Plateforme (api.mistral.ai): OpenAI-like, with Mistral's own fields.
    Mistral,
    /// Google's Gemini API (generativelanguage.googleapis.com), with an API key.
    Gemini,
    /// Google Cloud Vertex AI: Gemini, or Claude (Anthropic's format), with a service account.
    Vertex,
}

impl ProviderKind {
    /// As reported in `x-gateway-provider` and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::AzureOpenai => "azure_openai",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Vertex => "vertex",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub provider: ProviderKind,
    /// The provider's model name, sent upstream in place of the client's alias.
    pub model: String,
    /// Everything before the provider's operation path, e.g. `https://eu.api.openai.com/v1`.
    pub base_url: String,
    /// Name of the Worker secret holding the provider key; none for keyless endpoints.
    pub api_key_secret: Option<String>,
    /// Bedrock: the AWS region requests are signed for (required for bedrock deployments).
    pub aws_region: Option<String>,
    /// Bedrock with SigV4: the Worker secrets holding the AWS credentials, in place of
    /// `api_key_secret` (a Bedrock API key).
    pub aws_access_key_id_secret: Option<String>,
    pub aws_secret_access_key_secret: Option<String>,
    /// Only for temporary (STS) credentials.
    pub aws_session_token_secret: Option<String>,
    /// Azure OpenAI (required): a dated API version such as `2024-10-21`, which calls the
    /// deployment named by `model` at `/openai/deployments/{model}/chat/completions`, or
    /// `v1` for the `/openai/v1/chat/completions` API, which takes the model in the body.
    pub api_version: Option<String>,
    /// Azure OpenAI (required): where the deployment processes requests, which its URL
    /// does not show.
    pub azure_deployment_type: Option<AzureDeploymentType>,
    /// Vertex AI (required): the Google Cloud project and location in the request path.
    pub gcp_project: Option<String>,
    pub gcp_location: Option<String>,
    /// Vertex AI (required): whose models `model` names, which decides the wire format.
    pub vertex_publisher: Option<VertexPublisher>,
    /// Vertex AI (required): the Worker secret holding the service account's JSON key.
    pub gcp_service_account_secret: Option<String>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VertexPublisher {
    Google,
    Anthropic,
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
    let config = Config::read(&doc).map_err(|e| format!("config is not valid: {e}"))?;
    validate(&config)?;
    let deployment_index = config.deployments.iter().enumerate().map(|(i, d)| (d.id.clone(), i)).collect();
    let alias_index = config.aliases.iter().enumerate().map(|(i, a)| (a.name.clone(), i)).collect();
    Ok(Gateway { config, deployment_index, alias_index })
}

fn unique<'a>(what: &str, ids: impl Iterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id.is_empty() {
            return Err(format!("a {what} has an empty id"));
        }
        if !seen.insert(id) {
            return Err(format!("duplicate {what} id `{id}`"));
        }
    }
    Ok(())
}

fn is_secret_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn check_jurisdictions(list: &[String], place: &str) -> Result<(), String> {
    if list.is_empty() {
        return Err(format!("{place}: the jurisdiction list is empty"));
    }
    for j in list {
        if j == "global" {
            return Err(format!(
                "{place}: `global` endpoints may process anywhere, so they cannot be allowed by a restricting list; use [\"any\"] for no restriction"
            ));
        }
        if j == ANY {
            if list.len() > 1 {
                return Err(format!("{place}: \"any\" must stand alone"));
            }
        } else if !JURISDICTIONS.contains(&j.as_str()) {
            return Err(format!("{place}: unknown jurisdiction `{j}` (known: {})", JURISDICTIONS.join(", ")));
        }
    }
    Ok(())
}

pub fn validate(c: &Config) -> Result<(), String> {
    unique("deployment", c.deployments.iter().map(|d| d.id.as_str()))?;
    unique("alias", c.aliases.iter().map(|a| a.name.as_str()))?;
    unique("key", c.keys.iter().map(|k| k.id.as_str()))?;
    unique("rule", c.residency.rules.iter().map(|r| r.id.as_str()))?;

    for d in &c.deployments {
        let at = format!("deployment `{}`", d.id);
        if !(d.base_url.starts_with("https://") || d.base_url.starts_with("http://")) {
            return Err(format!("{at}: base_url must start with https:// or http://"));
        }
        if d.base_url.ends_with('/') {
            return Err(format!("{at}: base_url must not end with `/`"));
        }
        if d.model.is_empty() {
            return Err(format!("{at}: model is empty"));
        }
        if !JURISDICTIONS.contains(&d.jurisdiction.as_str()) {
            return Err(format!(
                "{at}: unknown jurisdiction `{}` (known: {})",
                d.jurisdiction,
                JURISDICTIONS.join(", ")
            ));
        }
        let secrets = [
            ("api_key_secret", &d.api_key_secret),
            ("aws_access_key_id_secret", &d.aws_access_key_id_secret),
            ("aws_secret_access_key_secret", &d.aws_secret_access_key_secret),
            ("aws_session_token_secret", &d.aws_session_token_secret),
            ("gcp_service_account_secret", &d.gcp_service_account_secret),
        ];
        for (field, name) in secrets {
            if let Some(s) = name.as_deref().filter(|s| !is_secret_name(s)) {
                return Err(format!("{at}: {field} `{s}` is not a secret name (A-Z, 0-9, _)"));
            }
        }
        if let Some([lat, lon]) = d.location {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(format!("{at}: location [{lat}, {lon}] is not a latitude/longitude"));
            }
        }
        if d.first_byte_timeout_ms == 0 {
            return Err(format!("{at}: first_byte_timeout_ms must be positive"));
        }
        if matches!(d.provider, ProviderKind::Anthropic | ProviderKind::Mistral) && d.api_key_secret.is_none() {
            return Err(format!("{at}: {} needs api_key_secret", d.provider.as_str()));
        }
        if d.health.is_some_and(|h| h.failure_threshold == 0 || h.window_ms == 0) {
            return Err(format!("{at}: health.failure_threshold and health.window_ms must be positive"));
        }
        let aws_fields =
            [&d.aws_region, &d.aws_access_key_id_secret, &d.aws_secret_access_key_secret, &d.aws_session_token_secret];
        match d.provider {
            ProviderKind::Bedrock => crate::providers::bedrock::validate(d).map_err(|why| format!("{at}: {why}"))?,
            _ if aws_fields.iter().any(|f| f.is_some()) => {
                return Err(format!("{at}: aws_region and the aws_*_secret fields are for bedrock deployments only"));
            }
            _ => {}
        }
        crate::providers::validate_provider_fields(d).map_err(|why| format!("{at}: {why}"))?;
    }

    for a in &c.aliases {
        if a.deployments.is_empty() {
            return Err(format!("alias `{}` lists no deployments", a.name));
        }
        unique(&format!("deployment in alias `{}`", a.name), a.deployments.iter().map(String::as_str))?;
        for d in &a.deployments {
            if !c.deployments.iter().any(|x| &x.id == d) {
                return Err(format!("alias `{}` names unknown deployment `{d}`", a.name));
            }
        }
        validate_weights(a)?;
    }

    for k in &c.keys {
        validate_key(c, k)?;
    }
    let l = &c.limits;
    if l.max_attempts == 0 || l.total_deadline_ms == 0 || l.health.failure_threshold == 0 || l.health.window_ms == 0 {
        return Err(
            "limits: max_attempts, total_deadline_ms, health.failure_threshold and health.window_ms must be positive"
                .into(),
        );
    }

    validate_residency(&c.residency)
}

fn validate_weights(a: &Alias) -> Result<(), String> {
    let at = format!("alias `{}`", a.name);
    if a.strategy != Strategy::Weighted {
        if !a.weights.is_empty() {
            return Err(format!("{at}: weights are only for the weighted strategy"));
        }
        if a.sticky != Sticky::None {
            return Err(format!("{at}: sticky is only for the weighted strategy"));
        }
        return Ok(());
    }
    for d in a.weights.keys() {
        if !a.deployments.contains(d) {
            return Err(format!("{at}: weight for `{d}`, which the alias does not list"));
        }
    }
    if let Some(d) = a.deployments.iter().find(|d| !a.weights.contains_key(*d)) {
        return Err(format!("{at}: deployment `{d}` has no weight"));
    }
    let total: u64 = a.weights.values().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return Err(format!("{at}: the weights sum to 0; give at least one deployment a positive weight"));
    }
    Ok(())
}

/// A key against the config it will be used with (also for keys created at run time).
pub fn validate_key(c: &Config, k: &KeyConfig) -> Result<(), String> {
    let at = format!("key `{}`", k.id);
    if k.id.is_empty()
        || k.id.len() > 64
        || !k.id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!("{at}: an id is 1 to 64 letters, digits, `-`, `_` or `.`"));
    }
    match (&k.sha256, &k.secret) {
        (Some(h), None) => {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("{at}: sha256 must be 64 lowercase hex digits"));
            }
        }
        (None, Some(s)) if is_secret_name(s) => {}
        (None, Some(s)) => return Err(format!("{at}: secret `{s}` is not a secret name (A-Z, 0-9, _)")),
        _ => return Err(format!("{at}: give exactly one of sha256 or secret")),
    }
    for alias in k.aliases.iter().flatten() {
        if !c.aliases.iter().any(|a| &a.name == alias) {
            return Err(format!("{at}: unknown alias `{alias}`"));
        }
    }
    if let Some(r) = &k.residency {
        check_jurisdictions(r, &format!("{at} residency"))?;
    }
    if let Some(b) = &k.rate_limit {
        if !is_secret_name(b) {
            return Err(format!("{at}: rate_limit `{b}` is not a binding name (A-Z, 0-9, _)"));
        }
    }
    Ok(())
}

fn validate_residency(r: &Residency) -> Result<(), String> {
    if r.distance_band_km.is_nan() || r.distance_band_km < 0.0 {
        return Err("residency.distance_band_km must be zero or positive".into());
    }
    for (tag, list) in &r.compliance_tags {
        if tag.is_empty()
            || !tag.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(format!("compliance tag `{tag}`: use lowercase letters, digits, - and _"));
        }
        check_jurisdictions(list, &format!("compliance tag `{tag}`"))?;
        if list.iter().any(|j| j == ANY) {
            return Err(format!("compliance tag `{tag}`: a tag must restrict; \"any\" is not allowed"));
        }
    }
    let Some(last) = r.rules.last() else {
        return Err("residency.rules is empty; the last rule must match every request".into());
    };
    if !last.when.is_empty() {
        return Err(format!(
            "residency rule `{}`: the last rule must have no conditions, so every request matches a rule",
            last.id
        ));
    }
    for (i, rule) in r.rules.iter().enumerate() {
        let at = format!("residency rule `{}`", rule.id);
        check_jurisdictions(&rule.allow, &at)?;
        if let Some(earlier) = r.rules[..i].iter().find(|e| e.when.covers(&rule.when)) {
            return Err(format!(
                "{at} can never match: every request it matches is matched first by rule `{}`",
                earlier.id
            ));
        }
        let w = &rule.when;
        for c in &w.countries {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!("{at}: country `{c}` is not an ISO 3166-1 alpha-2 code in capitals"));
            }
        }
        if let Some(eu) = w.eu {
            if !w.countries.is_empty() && w.countries.iter().all(|c| crate::model::geo::is_eu_member(c) != eu) {
                return Err(format!(
                    "{at} can never match: none of its countries is {}an EU member, but it requires eu = {eu}",
                    if eu { "" } else { "not " }
                ));
            }
        }
        for c in &w.continents {
            if !CONTINENTS.contains(&c.as_str()) {
                return Err(format!("{at}: unknown continent `{c}` (known: {})", CONTINENTS.join(", ")));
            }
        }
        for tag in &w.compliance {
            let Some(tag_allows) = r.compliance_tags.get(tag) else {
                return Err(format!("{at}: unknown compliance tag `{tag}`"));
            };
            // A rule that only ever sees requests carrying these tags must not point them at
            // a jurisdiction one of the tags forbids.
            if w.compliance.len() == 1 {
                if let Some(bad) = rule.allow.iter().find(|j| *j == ANY || !tag_allows.contains(j)) {
                    return Err(format!(
                        "{at}: requests tagged `{tag}` may not reach `{bad}` (the tag allows {})",
                        tag_allows.join(", ")
                    ));
                }
            }
        }
    }
    Ok(())
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
            "config is not valid: deployments[0]: unknown field `surprise`, expected one of `id`, `provider`, ",
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
    fn bundled_configs_are_valid() {
        parse(include_str!("../../config/gateway.json")).unwrap();
        parse(include_str!("../../config/demo.json")).unwrap();
    }
}
