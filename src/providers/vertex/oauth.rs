//! The pure part of authenticating as a Google Cloud service account: the signed JWT
//! (RFC 7519, RS256) a service account exchanges for an OAuth access token, per Google's
//! "Using OAuth 2.0 for Server to Server Applications" (claims `iss`, `scope`, `aud` = the
//! token endpoint, `iat`, `exp` at most an hour later; `POST` the form
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=…`, answered with
//! `access_token`, `expires_in`, `token_type`), and the service account's JSON key file
//! ("Create and delete service account keys": `client_email`, `private_key` as a PEM
//! PKCS #8 block, `private_key_id`, `token_uri`). The RSA signature itself is the shell's
//! (WebCrypto), as are the clock and the network.

use crate::util::base64;
use crate::util::valueread::{self, At, Fields, FromValue};
use serde_json::{json, Value};

/// Vertex AI's calls need the Cloud Platform scope.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long an assertion (and so the token asked for) is valid; Google's maximum.
const LIFETIME_SECS: u64 = 3600;

/// A token is replaced this long before it expires, so none expires in flight.
pub const REFRESH_MARGIN_SECS: u64 = 300;

#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

impl FromValue for ServiceAccount {
    fn from_value(v: &Value, at: At<'_>) -> Result<Self, String> {
        let f = Fields::any(v, at)?;
        Ok(ServiceAccount {
            client_email: f.req("client_email")?,
            private_key: f.req("private_key")?,
            private_key_id: f.opt("private_key_id")?,
            token_uri: f.req("token_uri")?,
        })
    }
}

impl ServiceAccount {
    /// The key file as Google issues it. The error never quotes the key: it says where a
    /// syntax error is, and names a field that is missing or not a string, quoting no
    /// string (a type error quotes the value only when a string was not expected).
    pub fn parse(json: &str) -> Result<ServiceAccount, String> {
        let not_a_key = |why: String| format!("the service account key is not a Google key file ({why})");
        let doc = valueread::parse(json.as_bytes())
            .map_err(|e| not_a_key(format!("line {}, column {}", e.line(), e.column())))?;
        if !doc.is_object() {
            return Err(not_a_key("not a JSON object".into()));
        }
        let account = ServiceAccount::read(&doc).map_err(not_a_key)?;
        if !(account.token_uri.starts_with("https://") || account.token_uri.starts_with("http://")) {
            return Err("the service account key's token_uri is not an http(s) URL".into());
        }
        Ok(account)
    }

    /// The text an RS256 signature covers: `base64url(header).base64url(claims)`.
    pub fn signing_input(&self, now_unix: u64) -> String {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.private_key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now_unix,
            "exp": now_unix + LIFETIME_SECS,
        });
        format!(
            "{}.{}",
            base64::url_unpadded(header.to_string().as_bytes()),
            base64::url_unpadded(claims.to_string().as_bytes())
        )
    }

    /// The private key as the DER bytes WebCrypto imports as `pkcs8`.
    pub fn private_key_der(&self) -> Result<Vec<u8>, String> {
        pem_to_der(&self.private_key, "PRIVATE KEY")
    }

    /// Tokens are per account and token endpoint.
    pub fn cache_key(&self) -> String {
        format!("{} {}", self.client_email, self.token_uri)
    }
}

/// The signed JWT.
pub fn assertion(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", base64::url_unpadded(signature))
}

/// The token request's `application/x-www-form-urlencoded` body.
pub fn token_request_body(assertion: &str) -> String {
    // The assertion is base64url and dots, which a form needs no escaping for.
    format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_at_unix: u64,
}

impl AccessToken {
    /// True while the token may still be sent: until the refresh margin before it expires.
    pub fn fresh(&self, now_unix: u64) -> bool {
        now_unix + REFRESH_MARGIN_SECS < self.expires_at_unix
    }
}

/// The token endpoint's answer.
pub fn parse_token_response(body: &[u8], now_unix: u64) -> Result<AccessToken, String> {
    let read = |answer: &Value| -> Result<AccessToken, String> {
        let f = Fields::any(answer, At::Root)?;
        Ok(AccessToken { token: f.req("access_token")?, expires_at_unix: now_unix + f.req::<u64>("expires_in")? })
    };
    valueread::parse(body)
        .map_err(|e| e.to_string())
        .and_then(|answer| read(&answer))
        .map_err(|why| format!("the token endpoint's answer is not a token ({why})"))
}

/// The bytes of a PEM block labelled `label`.
fn pem_to_der(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(body, _)| body)
        .ok_or_else(|| format!("the private key is not a PEM `{label}` block (PKCS #8)"))?;
    base64::decode(body).ok_or_else(|| "the private key's PEM block is not valid base64".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed test key (tests/data/gcp-service-account.json).
    fn account() -> ServiceAccount {
        ServiceAccount::parse(include_str!("../../../tests/data/gcp-service-account.json")).unwrap()
    }

    #[test]
    fn the_key_file_parses_and_its_key_is_pkcs8_der() {
        let account = account();
        assert_eq!(account.client_email, "gateway-test@llm-edge-gateway-test.iam.gserviceaccount.com");
        let der = account.private_key_der().unwrap();
        // A DER SEQUENCE with a long-form length, then version 0, then the rsaEncryption OID.
        assert_eq!(der[0], 0x30);
        let rsa_oid = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        assert!(der.windows(rsa_oid.len()).any(|w| w == rsa_oid), "PKCS #8 wraps an RSA key");
        assert!(der.len() > 1100, "a 2048-bit key");
        assert!(ServiceAccount::parse("{}").unwrap_err().contains("not a Google key file"));
        for leak in [r#""-----BEGIN PRIVATE KEY-----""#, r#"{"client_email": "a", "private_key": ["-----BEGIN"]}"#] {
            assert!(!ServiceAccount::parse(leak).unwrap_err().contains("BEGIN"), "{leak}");
        }
        let mut bad =
            serde_json::to_value(json!({"client_email": "a", "private_key": "b", "token_uri": "ftp://x"})).unwrap();
        assert!(ServiceAccount::parse(&bad.to_string()).unwrap_err().contains("token_uri"));
        bad["token_uri"] = "https://oauth2.googleapis.com/token".into();
        assert!(ServiceAccount::parse(&bad.to_string()).unwrap().private_key_der().unwrap_err().contains("PEM"));
    }

    #[test]
    fn the_signing_input_is_header_and_claims() {
        let account = account();
        let input = account.signing_input(1_750_000_000);
        let (header, claims) = input.split_once('.').unwrap();
        let decode = |part: &str| -> serde_json::Value {
            let standard: String = part
                .chars()
                .map(|c| match c {
                    '-' => '+',
                    '_' => '/',
                    c => c,
                })
                .collect();
            let padded = format!("{standard}{}", "=".repeat((4 - standard.len() % 4) % 4));
            serde_json::from_slice(&base64::decode(&padded).unwrap()).unwrap()
        };
        assert_eq!(decode(header), json!({"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}));
        assert_eq!(
            decode(claims),
            json!({"iss": account.client_email, "scope": SCOPE, "aud": account.token_uri,
                "iat": 1_750_000_000, "exp": 1_750_003_600})
        );
        assert_eq!(assertion(&input, &[1, 2, 3]), format!("{input}.AQID"));
        assert_eq!(
            token_request_body("h.c.s"),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=h.c.s"
        );
    }

    #[test]
    fn tokens_are_refreshed_five_minutes_before_they_expire() {
        let token = parse_token_response(br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#, 1000)
            .unwrap();
        assert_eq!(token, AccessToken { token: "ya29.x".into(), expires_at_unix: 4599 });
        assert!(token.fresh(1000));
        assert!(token.fresh(4299 - 1));
        assert!(!token.fresh(4299));
        assert!(parse_token_response(br#"{"error":"invalid_grant"}"#, 0).is_err());
    }
}
