//! The secrets a deployment's upstream calls authenticate with, read from Worker secrets
//! named in the config, and the OAuth access tokens some of them are exchanged for.

use super::state::{now_ms, State};
use super::upstream;
use crate::config::provider::{bedrock::Bedrock, vertex::Vertex};
use crate::config::{Deployment, ProviderSettings};
use crate::model::error_class::ErrorClass;
use crate::providers::vertex::oauth::{self as gcp, AccessToken, ServiceAccount};
use crate::providers::{Auth, AwsCredentials, UpstreamRequest};
use std::cell::RefCell;
use std::collections::HashMap;
use worker::js_sys::{self, Array, Function, Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::Env;

thread_local! {
    /// Access tokens by service account and token endpoint, for the isolate's lifetime:
    /// one exchange an hour per account, not one per request.
    static TOKENS: RefCell<HashMap<String, AccessToken>> = RefCell::new(HashMap::new());
}

/// `None` when a secret the deployment names is not set, or is not one deployments may
/// read (`PROVIDER_SECRETS`): such a deployment is skipped, never called without its
/// credentials.
pub fn resolve(state: &State, env: &Env, d: &Deployment, now_unix: u64) -> Option<Auth> {
    let secret = |name: &str| state.provider_secret(env, name);
    // `Some(None)`: no secret named; `None`: named but not set.
    let named = |name: &Option<String>| match name {
        Some(name) => secret(name).map(Some),
        None => Some(None),
    };
    let api_key = named(&d.api_key_secret)?;
    let aws = match &d.provider {
        ProviderSettings::Bedrock(Bedrock { sigv4: Some(keys), .. }) => Some(AwsCredentials {
            access_key_id: secret(&keys.access_key_id)?,
            secret_access_key: secret(&keys.secret_access_key)?,
            session_token: named(&keys.session_token)?,
        }),
        // The service account's token is fetched by `authorize`, once the deployment is tried.
        ProviderSettings::Vertex(v) => {
            secret(&v.service_account_secret)?;
            None
        }
        _ => None,
    };
    Some(Auth { api_key, aws, bearer_token: None, now_unix })
}

/// Completes `auth` just before a deployment is tried: for a service account, with an
/// access token from this isolate's cache, or exchanged for one. A failed exchange is
/// that deployment's failure, as a refused key would be.
pub async fn authorize(state: &State, env: &Env, d: &Deployment, mut auth: Auth) -> Result<Auth, ErrorClass> {
    let ProviderSettings::Vertex(Vertex { service_account_secret: name, .. }) = &d.provider else { return Ok(auth) };
    let complain = |why: String| worker::console_error!("deployment `{}`: no access token: {why}", d.id);
    let account = state
        .provider_secret(env, name)
        .ok_or_else(|| format!("the secret {name} is not set, or not one deployments may read"))
        .and_then(|key| ServiceAccount::parse(&key))
        .map_err(|why| {
            complain(why);
            ErrorClass::Auth
        })?;
    let now = now_ms() / 1000;
    let key = account.cache_key();
    let cached = TOKENS.with(|t| t.borrow().get(&key).filter(|t| t.fresh(now)).cloned());
    let token = match cached {
        Some(token) => token,
        None => {
            let token = exchange(&account, now, u64::from(d.first_byte_timeout_ms)).await.map_err(|(class, why)| {
                complain(why);
                class
            })?;
            TOKENS.with(|t| t.borrow_mut().insert(key, token.clone()));
            token
        }
    };
    auth.bearer_token = Some(token.token);
    Ok(auth)
}

/// A signed JWT for the account, exchanged at its token endpoint.
async fn exchange(account: &ServiceAccount, now: u64, timeout_ms: u64) -> Result<AccessToken, (ErrorClass, String)> {
    let input = account.signing_input(now);
    let der = account.private_key_der().map_err(|why| (ErrorClass::Auth, why))?;
    let signature = sign_rs256(&der, input.as_bytes()).await.map_err(|why| (ErrorClass::Auth, why))?;
    let request = UpstreamRequest {
        url: account.token_uri.clone(),
        headers: vec![("content-type", "application/x-www-form-urlencoded".to_string())],
        body: gcp::token_request_body(&gcp::assertion(&input, &signature)).into_bytes(),
    };
    let unreachable = |class| (class, format!("the token endpoint {} did not answer", account.token_uri));
    let mut deadline = upstream::Deadline::for_answer(timeout_ms);
    let response = upstream::send(&request, &mut deadline).await.map_err(unreachable)?;
    let status = response.status();
    let body = upstream::read_all(&response, &mut deadline).await.map_err(unreachable)?;
    if status != 200 {
        // Google's token errors (`invalid_grant`, …) name no secret.
        let why = format!("the token endpoint answered {status}: {}", String::from_utf8_lossy(&body));
        let class = match status {
            429 => ErrorClass::RateLimited,
            500.. => ErrorClass::Server,
            _ => ErrorClass::Auth,
        };
        return Err((class, why));
    }
    gcp::parse_token_response(&body, now).map_err(|why| (ErrorClass::Auth, why))
}

/// RSASSA-PKCS1-v1_5 with SHA-256 through the runtime's WebCrypto. Called through
/// `js_sys` reflection: the `worker` crate enables no `web_sys` crypto bindings, and these
/// two calls do not justify adding them.
async fn sign_rs256(pkcs8_der: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    let fail = |what: &str, e: JsValue| format!("WebCrypto {what} failed: {e:?}");
    let subtle = Reflect::get(&js_sys::global(), &"crypto".into())
        .and_then(|crypto| Reflect::get(&crypto, &"subtle".into()))
        .map_err(|e| fail("lookup", e))?;
    let method = |name: &str| -> Result<Function, String> {
        Reflect::get(&subtle, &name.into())
            .map_err(|e| fail(name, e))?
            .dyn_into::<Function>()
            .map_err(|e| fail(name, e))
    };
    let algorithm = Object::new();
    Reflect::set(&algorithm, &"name".into(), &"RSASSA-PKCS1-v1_5".into()).map_err(|e| fail("importKey", e))?;
    Reflect::set(&algorithm, &"hash".into(), &"SHA-256".into()).map_err(|e| fail("importKey", e))?;
    let import_args = Array::of5(
        &"pkcs8".into(),
        &Uint8Array::from(pkcs8_der),
        &algorithm,
        &false.into(),
        &Array::of1(&"sign".into()),
    );
    let promise = method("importKey")?.apply(&subtle, &import_args).map_err(|e| fail("importKey", e))?;
    let key = JsFuture::from(Promise::from(promise)).await.map_err(|e| fail("importKey", e))?;
    let promise = method("sign")?
        .call3(&subtle, &"RSASSA-PKCS1-v1_5".into(), &key, &Uint8Array::from(data))
        .map_err(|e| fail("sign", e))?;
    let signature = JsFuture::from(Promise::from(promise)).await.map_err(|e| fail("sign", e))?;
    Ok(Uint8Array::new(&signature).to_vec())
}
