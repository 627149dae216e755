//! Gateway keys. Keys are only ever compared by SHA-256, so neither the config nor (later)
//! KV holds one in clear.

use crate::config::{Gateway, KeyConfig};
use crate::model::error::GatewayError;
use crate::util::bounded::BoundedMap;
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

/// Whether a presented key could be one the admin API made (`gw-` and 64 lowercase hex
/// digits, see the edge's `keystore::new_secret`): anything else is never looked up in KV.
pub fn may_be_api_key(presented: &str) -> bool {
    presented
        .strip_prefix("gw-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// How long a key found in KV is used before it is read again (so a revocation elsewhere
/// takes effect here within this).
pub const FOUND_MS: u64 = 2_000;
/// How long a key KV does not have is answered from memory. A secret that is not a key
/// can only become one if the gateway later generates exactly it, so this can be long;
/// it is as long as KV's own negative caching allows anyway.
pub const MISSING_MS: u64 = 10_000;
/// How long a revocation made here overrides KV, which may serve a deleted record from a
/// cache for up to about a minute.
pub const REVOKED_MS: u64 = 60_000;
/// Lookups of keys not known here may read KV in bursts of this many, refilled at
/// `READS_PER_S`: a storm of made-up keys costs at most that many reads, whatever its size.
/// A read that finds a key gives its token back, so real keys (even many new ones at
/// once) do not use the budget up; once a key is known it is re-read without one.
pub const READ_BURST: u32 = 128;
pub const READS_PER_S: u32 = 25;
const FOUND_CAPACITY: usize = 4096;
const MISSING_CAPACITY: usize = 1024;
const REVOKED_CAPACITY: usize = 1024;

/// The edge's per-isolate memo of KV key lookups, bounded in memory (each part a
/// [`BoundedMap`]) and in the KV reads unknown keys may cost. Keys are SHA-256 hashes.
pub struct KeyMemo {
    /// Kept past `FOUND_MS` (until evicted) so that a known key is re-read without the
    /// read budget; made-up keys can never get in here.
    found: BoundedMap<KeyConfig>,
    missing: BoundedMap<()>,
    revoked: BoundedMap<()>,
    tokens: u32,
    refilled_ms: u64,
    pub kv_reads: u64,
    pub throttled: u64,
}

/// What to do for a presented key. (Returned once per lookup and matched at once, never
/// stored: boxing the key would only add an allocation.)
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Lookup {
    /// Answered from memory: the key, or none.
    Known(Option<KeyConfig>),
    /// Read KV, then [`KeyMemo::settle`] with this ticket.
    Read(Ticket),
    /// Too many unknown keys were read lately: refuse without reading.
    Throttled,
}

/// A read under way: whether it took a token of the budget.
#[derive(Debug, PartialEq)]
pub struct Ticket {
    charged: bool,
}

impl Default for KeyMemo {
    fn default() -> Self {
        KeyMemo {
            found: BoundedMap::new(FOUND_CAPACITY),
            missing: BoundedMap::new(MISSING_CAPACITY),
            revoked: BoundedMap::new(REVOKED_CAPACITY),
            tokens: READ_BURST,
            refilled_ms: 0,
            kv_reads: 0,
            throttled: 0,
        }
    }
}

impl KeyMemo {
    pub fn lookup(&mut self, hash: &str, now: u64) -> Lookup {
        if self.revoked.fresh(hash, now, REVOKED_MS).is_some() {
            return Lookup::Known(None);
        }
        if let Some(k) = self.found.fresh(hash, now, FOUND_MS) {
            return Lookup::Known(Some(k.clone()));
        }
        if self.missing.fresh(hash, now, MISSING_MS).is_some() {
            return Lookup::Known(None);
        }
        let charged = self.found.get(hash).is_none();
        if charged && !self.take_token(now) {
            self.throttled += 1;
            return Lookup::Throttled;
        }
        self.kv_reads += 1;
        Lookup::Read(Ticket { charged })
    }

    /// What a read found, remembered; a revocation made while it was under way wins.
    pub fn settle(&mut self, hash: &str, ticket: Ticket, found: Option<KeyConfig>, now: u64) -> Option<KeyConfig> {
        if self.revoked.fresh(hash, now, REVOKED_MS).is_some() {
            return None;
        }
        match found {
            Some(k) => {
                if ticket.charged {
                    self.tokens = (self.tokens + 1).min(READ_BURST);
                }
                self.missing.remove(hash);
                self.found.insert(hash, k.clone(), now);
                Some(k)
            }
            None => {
                self.found.remove(hash);
                self.missing.insert(hash, (), now);
                None
            }
        }
    }

    /// The key was revoked here: refused from now on, even by reads under way.
    pub fn revoke(&mut self, hash: &str, now: u64) {
        self.found.remove(hash);
        self.revoked.insert(hash, (), now);
    }

    fn take_token(&mut self, now: u64) -> bool {
        let step = 1000 / u64::from(READS_PER_S);
        let earned = now.saturating_sub(self.refilled_ms) / step;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(READ_BURST)) as u32;
            self.refilled_ms = if self.tokens == READ_BURST { now } else { self.refilled_ms + earned * step };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Entries held, and the most it may hold.
    pub fn size(&self) -> (usize, usize) {
        let parts = [self.found.len(), self.missing.len(), self.revoked.len()];
        let caps = [self.found.capacity(), self.missing.capacity(), self.revoked.capacity()];
        (parts.iter().sum(), caps.iter().sum())
    }
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
    fn only_gateway_shaped_keys_are_looked_up() {
        assert!(may_be_api_key(&format!("gw-{}", "0a".repeat(32))));
        for not in [
            "gw-",
            "sk-abc",
            &format!("gw-{}", "A".repeat(64)),
            &format!("gw-{}", "0".repeat(63)),
            &format!("xgw-{}", "0".repeat(64)),
        ] {
            assert!(!may_be_api_key(not), "{not}");
        }
    }

    fn key(id: &str) -> KeyConfig {
        KeyConfig::read(&serde_json::json!({"id": id, "sha256": "a".repeat(64)})).unwrap()
    }

    fn read(memo: &mut KeyMemo, hash: &str, now: u64, found: Option<KeyConfig>) -> Option<Option<KeyConfig>> {
        match memo.lookup(hash, now) {
            Lookup::Known(k) => Some(k),
            Lookup::Read(ticket) => Some(memo.settle(hash, ticket, found, now)),
            Lookup::Throttled => None,
        }
    }

    /// A storm of made-up keys: the KV reads it costs are the burst plus the refill, the
    /// memory the memo's capacity, and real keys keep working through it.
    #[test]
    fn a_storm_of_unknown_keys_is_bounded() {
        let mut memo = KeyMemo::default();
        assert_eq!(read(&mut memo, "real", 0, Some(key("real"))), Some(Some(key("real"))));
        let reads_before = memo.kv_reads;
        for i in 0..10_000 {
            read(&mut memo, &format!("made-up-{i}"), 1_000, None);
        }
        assert_eq!(memo.kv_reads - reads_before, u64::from(READ_BURST));
        assert_eq!(memo.throttled, 10_000 - u64::from(READ_BURST));
        let (held, capacity) = memo.size();
        assert!(held <= capacity && held <= 1 + READ_BURST as usize, "{held} / {capacity}");
        // A second later, a second's refill.
        for i in 0..1_000 {
            read(&mut memo, &format!("later-{i}"), 2_000, None);
        }
        assert_eq!(memo.kv_reads - reads_before, u64::from(READ_BURST + READS_PER_S));
        // The real key, known here, is re-read without the budget.
        assert_eq!(read(&mut memo, "real", 2_000, Some(key("real"))), Some(Some(key("real"))));
        // A key not known here waits for the budget; once found it gives its token back.
        assert_eq!(read(&mut memo, "new", 2_000, Some(key("new"))), None, "throttled");
        assert_eq!(read(&mut memo, "new", 2_040, Some(key("new"))), Some(Some(key("new"))));
        assert_eq!(read(&mut memo, "new-2", 2_040, Some(key("new-2"))), Some(Some(key("new-2"))));
    }

    #[test]
    fn memory_stays_within_capacity_however_long_the_storm() {
        let mut memo = KeyMemo::default();
        for i in 0..200_000u64 {
            // A steady trickle the budget lets through: every miss is remembered.
            read(&mut memo, &format!("k{i}"), i * 40, None);
        }
        let (held, capacity) = memo.size();
        assert!(held <= capacity, "{held} / {capacity}");
        assert!(memo.kv_reads > 100_000, "{}", memo.kv_reads);
    }

    #[test]
    fn answers_are_remembered_for_a_while() {
        let mut memo = KeyMemo::default();
        assert_eq!(read(&mut memo, "k", 0, Some(key("k"))), Some(Some(key("k"))));
        assert_eq!(memo.lookup("k", FOUND_MS - 1), Lookup::Known(Some(key("k"))));
        assert!(matches!(memo.lookup("k", FOUND_MS), Lookup::Read(_)));
        assert_eq!(read(&mut memo, "x", 0, None), Some(None));
        assert_eq!(memo.lookup("x", MISSING_MS - 1), Lookup::Known(None));
        assert!(matches!(memo.lookup("x", MISSING_MS), Lookup::Read(_)));
    }

    /// A read under way when the key is revoked here does not bring it back, nor does a
    /// stale KV answer for the next minute.
    #[test]
    fn a_revocation_wins_over_a_read_under_way() {
        let mut memo = KeyMemo::default();
        let Lookup::Read(ticket) = memo.lookup("k", 0) else { panic!("a first lookup reads") };
        memo.revoke("k", 10);
        assert_eq!(memo.settle("k", ticket, Some(key("k")), 20), None);
        assert_eq!(memo.lookup("k", 30), Lookup::Known(None));
        assert_eq!(memo.lookup("k", 10 + REVOKED_MS - 1), Lookup::Known(None));
        assert!(matches!(memo.lookup("k", 10 + REVOKED_MS), Lookup::Read(_)));
    }

    #[test]
    fn alias_allow_list() {
        let mut k = KeyConfig::read(&serde_json::json!({"id": "k", "sha256": "x"})).unwrap();
        assert!(may_use(&k, "anything"));
        k.aliases = Some(vec!["fast".into()]);
        assert!(may_use(&k, "fast") && !may_use(&k, "slow"));
    }
}
