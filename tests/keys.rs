//! End to end through workerd: gateway keys created, used, listed and revoked through the
//! admin API; stored in KV only as hashes.

mod support;

use serde_json::{json, Value};
use support::gateway::{gateway, ADMIN_PLATFORM};
use support::http;
use support::nonce;

fn create(body: &Value) -> http::Response {
    gateway().admin("POST", "/admin/keys", Some(body))
}

fn chat_with(secret: &str, model: &str) -> http::Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    http::send(
        "POST",
        &gateway().url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {secret}"))],
        Some(body.as_bytes()),
    )
    .unwrap()
}

#[test]
fn a_key_is_created_used_and_revoked() {
    let g = gateway();
    let id = nonce("api-key");
    let r = create(
        &json!({"id": id, "team": "search", "env": "prod", "aliases": ["single"], "budget": {"monthly_usd": "50"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["key"].as_str().unwrap().to_string();
    assert!(secret.starts_with("gw-") && secret.len() == 67, "{secret}");

    // Stored hashed: no KV key or value holds the secret; its hash finds the record.
    let hash = llm_edge_gateway::util::hash::sha256_hex(secret.as_bytes());
    let record = g.kv_get(&format!("key:{hash}")).expect("the record is stored under the hash");
    assert!(!record.contains(&secret) && !record.contains(&secret[3..]));
    assert!(record.contains(&format!("\"sha256\":\"{hash}\"")));
    assert!(g.kv_keys("").iter().all(|k| !k.contains(&secret[3..])));

    let r = chat_with(&secret, "single");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chat_with(&secret, "chat").status, 404, "the key may only use `single`");
    let listed = g.admin("GET", "/admin/keys", None).json();
    let mine = listed["keys"].as_array().unwrap().iter().find(|k| k["id"] == id).cloned().unwrap();
    assert_eq!((mine["team"].as_str(), mine["source"].as_str()), (Some("search"), Some("admin_api")));
    assert!(mine["revoked_ms"].is_null());
    assert!(!listed.to_string().contains(&secret));

    let r = g.admin_as(ADMIN_PLATFORM, "DELETE", &format!("/admin/keys/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = chat_with(&secret, "single");
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (401, Some("invalid_api_key")),
        "revoked at once in this colo"
    );
    let listed = g.admin("GET", "/admin/keys", None).json();
    let mine = listed["keys"].as_array().unwrap().iter().find(|k| k["id"] == id).cloned().unwrap();
    assert!(mine["revoked_ms"].as_u64().is_some());

    let audit = g.d1(&format!("SELECT actor, action FROM audit_log WHERE summary LIKE '%{id}%' ORDER BY id"));
    assert_eq!(
        audit,
        vec![
            json!({"actor": "compliance", "action": "key.create"}),
            json!({"actor": "platform", "action": "key.revoke"})
        ]
    );
}

#[test]
fn bad_keys_are_refused() {
    let g = gateway();
    let cases = [
        (json!({"id": nonce("k"), "aliases": ["no-such-alias"]}), 400, "unknown alias `no-such-alias`"),
        (json!({"id": nonce("k"), "residency": ["mars"]}), 400, "unknown jurisdiction `mars`"),
        (json!({"id": "has space"}), 400, "an id is 1 to 64"),
        (json!({"id": nonce("k"), "sha256": "0".repeat(64)}), 400, "makes the secret"),
        (json!({"id": nonce("k"), "colour": "red"}), 400, "unknown field `colour`"),
        (json!({"id": "test"}), 409, "exists"),
    ];
    for (body, status, needle) in cases {
        let r = create(&body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(needle), "{body}: {}", r.text());
    }
    assert_eq!(g.admin("DELETE", "/admin/keys/test", None).status, 409, "config keys are changed in the config");
    assert_eq!(g.admin("DELETE", &format!("/admin/keys/{}", nonce("nobody")), None).status, 404);
}
