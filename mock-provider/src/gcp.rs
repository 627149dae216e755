//! Google's OAuth token endpoint for service accounts, after "Using OAuth 2.0 for Server to
//! Server Applications": `POST {token_uri}` with the form
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`, answered with
//! `{"access_token", "expires_in", "token_type": "Bearer"}`, or a 400 `invalid_grant`.
//!
//! The mock checks the JWT's shape (RS256 header; `iss`, `scope`, `aud` equal to the URL
//! called, `iat` near now, `exp` at most an hour after it; a 2048-bit signature's length)
//! but not the signature, which the end-to-end tests verify with the public key. Tokens
//! it issues are remembered: Vertex AI paths accept only those.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::faults::lock;
use crate::http::{percent_decode, Request, Responder};
use crate::{Call, State};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long issued tokens last, as Google's do (an hour, give or take a second).
const EXPIRES_IN: u64 = 3599;

fn invalid_grant(description: &str) -> Value {
    json!({"error": "invalid_grant", "error_description": description})
}

pub(crate) fn token(state: &State, call: &Call, request: &Request, out: &mut Responder) -> io::Result<()> {
    if let Some(status) = call.behaviour.status.filter(|&s| s != 200) {
        let error = if status >= 500 { json!({"error": "internal_failure"}) } else { invalid_grant("Mock error") };
        return out.json(status, &[], &error);
    }
    let form = String::from_utf8_lossy(&request.body).into_owned();
    let field = |name: &str| {
        form.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    };
    if field("grant_type").as_deref() != Some(JWT_BEARER) {
        let error = json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"});
        return out.json(400, &[], &error);
    }
    let audience = format!("http://{}{}", request.header("host").unwrap_or_default(), request.path());
    if let Err(why) = field("assertion").ok_or("no assertion".to_string()).and_then(|jwt| check(&jwt, &audience)) {
        return out.json(400, &[], &invalid_grant(&why));
    }
    let token = format!("ya29.mock-{}-{}", call.tag, call.seq);
    lock(&state.tokens).insert(token.clone());
    out.json(200, &[], &json!({"access_token": token, "expires_in": EXPIRES_IN, "token_type": "Bearer"}))
}

/// Whether the request carries a token this mock issued.
pub(crate) fn authorized(state: &State, request: &Request) -> bool {
    let token = request.header("authorization").and_then(|a| a.strip_prefix("Bearer "));
    token.is_some_and(|t| lock(&state.tokens).contains(t))
}

/// Google's answer to a call without a valid access token.
pub(crate) fn unauthenticated() -> Value {
    json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
        "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."}})
}

fn check(jwt: &str, audience: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("the assertion is not a signed JWT (three parts)".into());
    };
    let decode = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = base64url_decode(part).ok_or(format!("the JWT {what} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| format!("the JWT {what} is not JSON"))
    };
    let header = decode(header, "header")?;
    if header["alg"] != "RS256" || header["typ"] != "JWT" {
        return Err(format!("the JWT header must be RS256 / JWT, got {header}"));
    }
    let claims = decode(claims, "claims")?;
    if !claims["iss"].as_str().is_some_and(|iss| iss.contains('@')) {
        return Err("the JWT `iss` must be the service account's email".into());
    }
    if !claims["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == "https://www.googleapis.com/auth/cloud-platform"))
    {
        return Err("the JWT `scope` must include the cloud-platform scope".into());
    }
    if claims["aud"] != audience {
        return Err(format!("the JWT `aud` must be {audience}, got {}", claims["aud"]));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err("the JWT needs numeric `iat` and `exp`".into());
    };
    if iat.abs_diff(now) > 300 || exp <= iat || exp - iat > 3600 {
        return Err(format!("the JWT `iat` ({iat}) must be now ({now}) and `exp` ({exp}) within an hour of it"));
    }
    if base64url_decode(signature).map(|s| s.len()) != Some(256) {
        return Err("the JWT signature must be an RS256 signature of a 2048-bit key (256 bytes)".into());
    }
    Ok(())
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    crate::base64::decode(text, crate::base64::URL_SAFE)
}

#[cfg(test)]
mod tests {
    use super::base64url_decode;

    #[test]
    fn base64url_decoding() {
        assert_eq!(base64url_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64url_decode("Zm9vYg").unwrap(), b"foob");
        assert_eq!(base64url_decode("-_-_").unwrap(), [0xfb, 0xff, 0xbf]);
        assert_eq!(base64url_decode("a+b"), None);
    }
}
