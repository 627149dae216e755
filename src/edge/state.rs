//! What every request reads: the active config version, validated, with its key ring.
//!
//! The base config (version 0) is the deployed one: `GATEWAY_CONFIG` or the bundled
//! `config/gateway.json`. Once the admin API has written a version to KV, KV's active
//! version wins. Each isolate re-reads the tiny active-version pointer at most every
//! [`RECHECK_MS`], and parses a document only when the version changed.

use super::store;
use crate::config::secrets::{self, ProviderSecrets};
use crate::config::{self, Config, Gateway, KeyConfig};
use crate::model::error::GatewayError;
use crate::policy::keys::KeyRing;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use worker::{Context, Env};

const BUNDLED_CONFIG: &str = include_str!("../../config/gateway.json");

/// How stale an isolate's view of the active version may get: on top of KV's own
/// propagation (writes are visible at once in the writing colo, within about 60 s
/// elsewhere), so a change is effective everywhere within about a minute.
pub const RECHECK_MS: u64 = 2_000;

pub struct State {
    pub version: u64,
    /// The config document as stored, for the admin API to read and edit.
    pub source: String,
    pub gateway: Gateway,
    keys: KeyRing,
    /// `TRUST_GEO_HEADERS = "true"`: local dev and tests only.
    pub trust_geo_headers: bool,
    /// `ALLOW_TEST_FAULTS = "true"`: the test environment only.
    pub allow_test_faults: bool,
    /// The secrets deployments may read (`PROVIDER_SECRETS`), or why the var is invalid.
    provider_secrets: Result<ProviderSecrets, String>,
}

struct Cached {
    state: Rc<State>,
    checked_ms: u64,
}

thread_local! {
    static CURRENT: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

pub fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

thread_local! {
    /// Secrets by name, read once per isolate: a changed secret is a new version of the
    /// worker, so new isolates; and every request reads those of several deployments.
    static SECRETS: RefCell<HashMap<String, Option<String>>> = RefCell::new(HashMap::new());
}

pub fn secret(env: &Env, name: &str) -> Option<String> {
    if let Some(known) = SECRETS.with(|s| s.borrow().get(name).cloned()) {
        return known;
    }
    let value = env.secret(name).ok().map(|v| v.to_string()).filter(|v| !v.is_empty());
    SECRETS.with(|s| s.borrow_mut().insert(name.to_string(), value.clone()));
    value
}

/// The fault a request asks to have injected (`x-gateway-test-fault`), honoured only where
/// `ALLOW_TEST_FAULTS = "true"` (the test environment), never elsewhere: each use names
/// the faults it knows (the ledger's `queue`, the admin API's `admin-kv-*`, ...).
pub fn test_fault(allowed: bool, headers: &worker::Headers) -> Option<String> {
    allowed.then(|| headers.get("x-gateway-test-fault").ok().flatten()).flatten()
}

/// `Date.now()`: the `worker` crate's `Date::now` makes a `Date` object to read it.
pub fn now_ms() -> u64 {
    worker::js_sys::Date::now() as u64
}

/// Whether a memo last checked at `*checked` is due for a re-read (every `every_ms`). A
/// due memo is claimed by moving its check time, so that one request re-reads, not every
/// request until the re-read lands.
pub fn claim(checked: &mut u64, every_ms: u64) -> bool {
    let now = now_ms();
    let due = now.saturating_sub(*checked) >= every_ms;
    if due {
        *checked = now;
    }
    due
}

type Later = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    /// Re-reads that were due, waiting for the response under way: started at once, they
    /// would take the runtime's thread (and, locally, the KV and cache services that share
    /// it) from the request on its way to the upstream and to the first token.
    static AFTER_RESPONSE: RefCell<Vec<Later>> = const { RefCell::new(Vec::new()) };
}

/// What an isolate knows, served at once; a re-read that was due runs after the response
/// (the next request sees it). Only with nothing known yet does the request wait for it.
pub async fn known_then_reread<T: 'static, F: Future<Output = T> + 'static>(
    known: Option<(T, bool)>,
    reread: impl FnOnce() -> F,
) -> T {
    match known {
        Some((value, due)) => {
            if due {
                let reading = reread();
                AFTER_RESPONSE.with(|a| {
                    a.borrow_mut().push(Box::pin(async move {
                        reading.await;
                    }))
                });
            }
            value
        }
        None => reread().await,
    }
}

/// Starts the re-reads put off until a response was made; `fetch` calls it with each.
/// Each is a task of its own, so they run side by side.
pub fn after_response(ctx: &Context) {
    for reread in AFTER_RESPONSE.with(|a| std::mem::take(&mut *a.borrow_mut())) {
        ctx.wait_until(reread);
    }
}

pub fn base_source(env: &Env) -> String {
    var(env, "GATEWAY_CONFIG").filter(|s| !s.trim().is_empty()).unwrap_or_else(|| BUNDLED_CONFIG.to_string())
}

/// Builds the state for a config document; the error says what is wrong with it.
pub fn build(env: &Env, version: u64, source: String) -> Result<State, GatewayError> {
    let gateway = config::parse(&source)
        .map_err(|e| GatewayError::internal(format!("The gateway config (version {version}) is invalid: {e}")))?;
    let provider_secrets = ProviderSecrets::parse(var(env, secrets::VAR).as_deref());
    // Never the admin token or a provider's key, whatever a stored config names.
    let may_hold_key = |name: &str| provider_secrets.as_ref().is_ok_and(|p| p.may_hold_key(name));
    let keys = KeyRing::build(&gateway, |name| if may_hold_key(name) { secret(env, name) } else { None });
    let state = State {
        version,
        source,
        gateway,
        keys,
        trust_geo_headers: var(env, "TRUST_GEO_HEADERS").as_deref() == Some("true"),
        allow_test_faults: var(env, "ALLOW_TEST_FAULTS").as_deref() == Some("true"),
        provider_secrets,
    };
    warn_unreadable_secrets(env, &state);
    Ok(state)
}

/// A deployment whose secret is not set (or not one deployments may read) is skipped at
/// every request; say so once per config load, naming the secret, so the operator does
/// not mistake it for residency.
fn warn_unreadable_secrets(env: &Env, state: &State) {
    for d in &state.gateway.config.deployments {
        for (field, name) in d.secrets().filter(|(_, name)| state.provider_secret(env, name).is_none()) {
            let why = if secret(env, name).is_none() { "is not set" } else { "is not listed in PROVIDER_SECRETS" };
            worker::console_warn!("deployment `{}`: {field} names {name}, which {why}; it is skipped", d.id);
        }
    }
}

/// Makes `state` this isolate's current state at once (the admin API calls this after a
/// change, so the isolate that wrote it never serves the old version again).
pub fn install(state: State) -> Rc<State> {
    let state = Rc::new(state);
    CURRENT.with(|c| *c.borrow_mut() = Some(Cached { state: state.clone(), checked_ms: now_ms() }));
    state
}

async fn load_version(env: &Env, kv: &worker::KvStore, version: u64) -> Result<State, GatewayError> {
    if version == 0 {
        return build(env, 0, base_source(env));
    }
    let source = store::load_version(kv, version)
        .await?
        .ok_or_else(|| GatewayError::internal(format!("Config version {version} is active but missing from KV.")))?;
    build(env, version, source)
}

/// The state for a request: this isolate's, at once; when it is due for a recheck, the
/// recheck runs after the response, and the next request sees its outcome.
pub async fn current(env: &Env) -> Result<Rc<State>, GatewayError> {
    let known = CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let cached = c.as_mut()?;
        Some((Ok(cached.state.clone()), claim(&mut cached.checked_ms, RECHECK_MS)))
    });
    let stale = known.as_ref().and_then(|(state, _)| state.as_ref().ok().cloned());
    let env = env.clone();
    known_then_reread(known, move || async move {
        let checked = recheck(&env, stale).await;
        if let Err(e) = &checked {
            worker::console_error!("config recheck failed: {}", e.message);
        }
        checked
    })
    .await
}

/// The state, rechecked against KV first when due (the admin API and the cron, which
/// must not act on a stale version).
pub async fn load(env: &Env) -> Result<Rc<State>, GatewayError> {
    let now = now_ms();
    let cached = CURRENT.with(|c| c.borrow().as_ref().map(|c| (c.state.clone(), c.checked_ms)));
    match cached {
        Some((state, checked)) if now.saturating_sub(checked) < RECHECK_MS => Ok(state),
        cached => recheck(env, cached.map(|(state, _)| state)).await,
    }
}

async fn recheck(env: &Env, cached: Option<Rc<State>>) -> Result<Rc<State>, GatewayError> {
    let now = now_ms();
    let kv = store::kv(env)?;
    let version = match store::active_version(&kv).await {
        Ok(v) => v,
        // KV unreachable: keep serving what this isolate already has.
        Err(e) => match cached {
            Some(state) => return Ok(state),
            None => {
                worker::console_error!("{}; serving the base config", e.message);
                0
            }
        },
    };
    match cached {
        Some(state) if state.version == version => {
            CURRENT.with(|c| {
                if let Some(c) = c.borrow_mut().as_mut() {
                    c.checked_ms = now;
                }
            });
            Ok(state)
        }
        _ => Ok(install(load_version(env, &kv, version).await?)),
    }
}

impl State {
    /// Whether every secret `c` names is one it may name (the admin API refuses a config
    /// that fails this; the cron logs an active one that does).
    pub fn check_secrets(&self, c: &Config) -> Result<(), String> {
        self.provider_secrets.as_ref().map_err(Clone::clone)?.check(c)
    }

    /// A secret a deployment of this config names, read only if deployments may read it;
    /// `None` (the deployment is skipped) otherwise, as when it is not set.
    pub fn provider_secret(&self, env: &Env, name: &str) -> Option<String> {
        let allowed = self.provider_secrets.as_ref().is_ok_and(|p| p.may_read(&self.gateway.config, name));
        if allowed {
            secret(env, name)
        } else {
            None
        }
    }

    /// A key from the config; the error is what the client gets when KV has none either.
    pub fn authenticate_config(&self, presented: Option<&str>) -> Result<&KeyConfig, GatewayError> {
        self.keys.authenticate(&self.gateway, presented)
    }
}
