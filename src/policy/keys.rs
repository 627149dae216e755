//! Gateway keys. Keys are only ever compared by SHA-256, so neither the config nor (later)
//! KV holds one in clear.

use crate::config::{Gateway, KeyConfig};
use crate::model::error::GatewayError;
use crate::util::hash::sha256_hex;
use std::collections::HashMap;

/// The key a client presented: `Authorization: Bearer <key>` (OpenAI SDKs) or `x-api-key`
/// (Anthropic SDKs).
pub fn presented<'a>(authorization: Option<&'a str>, x_api_key: Option<&'a str>) -> Option<&'a str> {
    let bearer = authorization.and_then(|h| {
        let (scheme, rest) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    bearer.or(x_api_key.map(str::trim)).filter(|k| !k.is_empty())
}

/// Config keys by hash. Keys held in Worker secrets are hashed when the ring is built; a
/// key whose secret is not set does not exist.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_hash: HashMap<String, usize>,
}

impl KeyRing {
    pub fn build(g: &Gateway, secret: impl Fn(&str) -> Option<String>) -> KeyRing {
        let mut by_hash = HashMap::new();
        for (i, k) in g.config.keys.iter().enumerate() {
            let hash = match (&k.sha256, &k.secret) {
                (Some(h), _) => Some(h.clone()),
                (None, Some(name)) => secret(name).filter(|v| !v.is_empty()).map(|v| sha256_hex(v.as_bytes())),
                (None, None) => None,
            };
            if let Some(h) = hash {
                by_hash.insert(h, i);
            }
        }
        KeyRing { by_hash }
    }

    pub fn authenticate<'g>(&self, g: &'g Gateway, key: Option<&str>) -> Result<&'g KeyConfig, GatewayError> {
        let key = key.ok_or_else(|| {
            GatewayError::unauthorized("Missing gateway key: send `Authorization: Bearer <key>` (or `x-api-key`).")
        })?;
        self.by_hash
            .get(&sha256_hex(key.as_bytes()))
            .map(|&i| &g.config.keys[i])
            .ok_or_else(|| GatewayError::unauthorized("Invalid gateway key."))
    }
}

pub fn may_use(key: &KeyConfig, alias: &str) -> bool {
    key.aliases.as_ref().is_none_or(|list| list.iter().any(|a| a == alias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::util::valueread::FromValue;

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn presented_key_from_either_header() {
        assert_eq!(presented(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(presented(Some("bearer  abc "), None), Some("abc"));
        assert_eq!(presented(None, Some("xyz")), Some("xyz"));
        assert_eq!(presented(Some("Basic abc"), None), None);
        assert_eq!(presented(Some("Bearer "), None), None);
        assert_eq!(presented(None, None), None);
    }

    #[test]
    fn authenticates_by_hash_and_from_secrets() {
        let mut v: serde_json::Value = serde_json::from_str(&config::tests::sample()).unwrap();
        v["keys"][0]["sha256"] = sha256_hex(b"gw-one").into();
        let g = config::parse(&v.to_string()).unwrap();
        let ring = KeyRing::build(&g, |name| (name == "GATEWAY_KEY_K2").then(|| "gw-two".to_string()));
        assert_eq!(ring.authenticate(&g, Some("gw-one")).unwrap().id, "k1");
        assert_eq!(ring.authenticate(&g, Some("gw-two")).unwrap().id, "k2");
        assert_eq!(ring.authenticate(&g, Some("gw-three")).unwrap_err().status, 401);
        assert!(ring.authenticate(&g, None).unwrap_err().message.contains("Missing"));
        let unset = KeyRing::build(&g, |_| None);
        assert!(unset.authenticate(&g, Some("gw-two")).is_err());
    }

    #[test]
    fn alias_allow_list() {
        let mut k = KeyConfig::read(&serde_json::json!({"id": "k", "sha256": "x"})).unwrap();
        assert!(may_use(&k, "anything"));
        k.aliases = Some(vec!["fast".into()]);
        assert!(may_use(&k, "fast") && !may_use(&k, "slow"));
    }
}
