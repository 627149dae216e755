//! The secrets a deployment's upstream calls authenticate with, read from Worker secrets
//! named in the config.

use super::state::secret;
use crate::config::Deployment;
use crate::providers::Auth;
use worker::Env;

/// `None` when a secret the deployment names is not set: such a deployment is skipped,
/// never called without its credentials.
pub fn resolve(env: &Env, d: &Deployment, now_unix: u64) -> Option<Auth> {
    let api_key = match &d.api_key_secret {
        Some(name) => Some(secret(env, name)?),
        None => None,
    };
    Some(Auth { api_key, now_unix })
}
