//! The secrets a deployment's upstream calls authenticate with, read from Worker secrets
//! named in the config.

use super::state::secret;
use crate::config::Deployment;
use crate::providers::{Auth, AwsCredentials};
use worker::Env;

/// `None` when a secret the deployment names is not set: such a deployment is skipped,
/// never called without its credentials.
pub fn resolve(env: &Env, d: &Deployment, now_unix: u64) -> Option<Auth> {
    // `Some(None)`: no secret named; `None`: named but not set.
    let named = |name: &Option<String>| match name {
        Some(name) => secret(env, name).map(Some),
        None => Some(None),
    };
    let api_key = named(&d.api_key_secret)?;
    // Config validation makes the id and the secret key come as a pair.
    let aws = match (named(&d.aws_access_key_id_secret)?, named(&d.aws_secret_access_key_secret)?) {
        (Some(access_key_id), Some(secret_access_key)) => Some(AwsCredentials {
            access_key_id,
            secret_access_key,
            session_token: named(&d.aws_session_token_secret)?,
        }),
        _ => None,
    };
    Some(Auth { api_key, aws, now_unix })
}
