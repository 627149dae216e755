//! What every request reads: the validated config and the key ring, built once per isolate
//! (vars and secrets cannot change under a running isolate).

use crate::config::{self, Gateway, KeyConfig};
use crate::error::GatewayError;
use crate::keys::{self, KeyRing};
use std::cell::RefCell;
use std::rc::Rc;
use worker::{Env, Request};

const BUNDLED_CONFIG: &str = include_str!("../../config/gateway.json");

pub struct State {
    pub gateway: Gateway,
    keys: KeyRing,
    /// `TRUST_GEO_HEADERS = "true"`: local dev and tests only.
    pub trust_geo_headers: bool,
}

thread_local! {
    static STATE: RefCell<Option<Rc<State>>> = const { RefCell::new(None) };
}

pub fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

pub fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|v| v.to_string()).filter(|v| !v.is_empty())
}

pub fn load(env: &Env) -> Result<Rc<State>, GatewayError> {
    if let Some(s) = STATE.with(|s| s.borrow().clone()) {
        return Ok(s);
    }
    let source = var(env, "GATEWAY_CONFIG").filter(|s| !s.trim().is_empty());
    let gateway = config::parse(source.as_deref().unwrap_or(BUNDLED_CONFIG))
        .map_err(|e| GatewayError::internal(format!("The gateway config is invalid: {e}")))?;
    let keys = KeyRing::build(&gateway, |name| secret(env, name));
    let state =
        Rc::new(State { gateway, keys, trust_geo_headers: var(env, "TRUST_GEO_HEADERS").as_deref() == Some("true") });
    STATE.with(|s| *s.borrow_mut() = Some(state.clone()));
    Ok(state)
}

impl State {
    pub fn authenticate(&self, req: &Request) -> Result<&KeyConfig, GatewayError> {
        let h = req.headers();
        let authorization = h.get("authorization").ok().flatten();
        let x_api_key = h.get("x-api-key").ok().flatten();
        self.keys.authenticate(&self.gateway, keys::presented(authorization.as_deref(), x_api_key.as_deref()))
    }
}
