//! End to end through workerd: gateway keys under concurrency. Creating one id from many
//! requests at once makes one key; a key id is either the config's or the admin API's,
//! never both, whichever write comes first; a revocation is not undone by a lookup that
//! was under way when it happened. Checked in D1 and KV, not only in the answers.

mod support;

use serde_json::{json, Value};
use std::sync::Mutex;
use std::thread;
use support::gateway::{gateway, ADMIN_COMPLIANCE};
use support::{http, nonce};

/// The tests count KV records and change the config: one at a time.
static ONE: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn create_key(id: &str) -> http::Response {
    gateway().admin("POST", "/admin/keys", Some(&json!({"id": id, "aliases": ["single"]})))
}

fn chat_with(secret: &str, headers: &[(&str, &str)]) -> http::Response {
    let body = json!({"model": "single", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let auth = format!("Bearer {secret}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http::send("POST", &gateway().url("/v1/chat/completions"), &all, Some(body.as_bytes())).unwrap()
}

fn current_config() -> (u64, Value) {
    let v = gateway().admin("GET", "/admin/config", None).json();
    (v["version"].as_u64().unwrap(), v["config"].clone())
}

fn put_config(config: &Value) -> http::Response {
    gateway().admin("PUT", "/admin/config", Some(config))
}

/// The config with a key `id` (by hash) added.
fn with_key(mut config: Value, id: &str) -> Value {
    let hash = llm_edge_gateway::util::hash::sha256_hex(format!("gw-config-{id}").as_bytes());
    config["keys"].as_array_mut().unwrap().push(json!({"id": id, "sha256": hash}));
    config
}

fn active_has_key(id: &str) -> bool {
    current_config().1["keys"].as_array().unwrap().iter().any(|k| k["id"] == id)
}

fn kv_has_key(id: &str) -> bool {
    gateway().kv_get(&format!("keyid:{id}")).is_some()
}

#[test]
fn concurrent_creates_of_one_id_make_one_key() {
    let _guard = one_at_a_time();
    let g = gateway();
    let id = nonce("race");
    let records_before = g.kv_keys("key:").len();
    let answers: Vec<http::Response> = thread::scope(|s| {
        let racers: Vec<_> = (0..8).map(|_| s.spawn(|| create_key(&id))).collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    for r in answers.iter().filter(|r| r.status != 201) {
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (409, Some("key_exists")), "{}", r.text());
    }
    let rows = g.d1(&format!("SELECT id, revoked_ms FROM gateway_keys WHERE id = '{id}'"));
    assert_eq!(rows, vec![json!({"id": id, "revoked_ms": null})]);
    assert_eq!(g.kv_keys("key:").len(), records_before + 1, "one key record in KV");
    let secret = answers.iter().find(|r| r.status == 201).unwrap().json()["key"].as_str().unwrap().to_string();
    assert_eq!(chat_with(&secret, &[]).status, 200);
    let created = g.d1(&format!("SELECT status FROM audit_log WHERE action = 'key.create' AND summary LIKE '%{id}%'"));
    assert_eq!(created, vec![json!({"status": "applied"})]);
}

#[test]
fn a_key_id_is_the_configs_or_the_admin_apis_never_both() {
    let _guard = one_at_a_time();
    // An id the admin API has cannot be added to the config.
    let api_id = nonce("api-key");
    assert_eq!(create_key(&api_id).status, 201);
    let (before, config) = current_config();
    let r = put_config(&with_key(config.clone(), &api_id));
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (409, Some("key_exists")), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains(&api_id), "{}", r.text());
    assert_eq!(current_config().0, before, "nothing was stored");
    assert!(!active_has_key(&api_id));

    // An id the config has cannot be created through the admin API.
    let config_id = nonce("config-key");
    assert_eq!(put_config(&with_key(config, &config_id)).status, 200);
    let r = create_key(&config_id);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (409, Some("key_exists")), "{}", r.text());
    assert!(!kv_has_key(&config_id));

    // Both at once: whichever comes first wins, the other is refused.
    for round in 0..3 {
        let id = nonce(&format!("both-{round}"));
        let (_, config) = current_config();
        let doc = with_key(config, &id);
        let (put, post) = thread::scope(|s| {
            let put = s.spawn(|| put_config(&doc));
            let post = s.spawn(|| create_key(&id));
            (put.join().unwrap(), post.join().unwrap())
        });
        let won = [put.status == 200, post.status == 201];
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}: {} / {}", put.text(), post.text());
        assert_eq!((active_has_key(&id), kv_has_key(&id)), (won[0], won[1]), "round {round}");
        let in_d1 = gateway().d1(&format!("SELECT COUNT(*) AS n FROM gateway_keys WHERE id = '{id}'"));
        assert_eq!(in_d1[0]["n"].as_u64(), Some(u64::from(won[1])), "round {round}");
    }
}

/// A request whose key lookup read the record just before the key was revoked, and
/// finished just after: it must not put the key back into the isolate's memo.
#[test]
fn a_lookup_under_way_does_not_undo_a_revocation() {
    let _guard = one_at_a_time();
    let g = gateway();
    let id = nonce("revoke-race");
    let r = create_key(&id);
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["key"].as_str().unwrap().to_string();

    let (slow, revoked) = thread::scope(|s| {
        // Reads the key from KV at once, then holds the answer for 1.5 s.
        let slow = s.spawn(|| chat_with(&secret, &[("x-gateway-test-fault", "slow-key-lookup")]));
        thread::sleep(std::time::Duration::from_millis(500));
        let revoked = g.admin("DELETE", &format!("/admin/keys/{id}"), None);
        (slow.join().unwrap(), revoked)
    });
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(slow.status, 401, "its lookup finished after the revocation: {}", slow.text());
    let after = chat_with(&secret, &[]);
    assert_eq!(
        (after.status, after.json()["error"]["code"].as_str()),
        (401, Some("invalid_api_key")),
        "{}",
        after.text()
    );
    let rows = g.d1(&format!("SELECT revoked_ms IS NOT NULL AS revoked FROM gateway_keys WHERE id = '{id}'"));
    assert_eq!(rows, vec![json!({"revoked": 1})]);
    assert_eq!(g.kv_keys(&format!("key:{}", llm_edge_gateway::util::hash::sha256_hex(secret.as_bytes()))).len(), 0);

    // Revoking again answers the same and changes nothing.
    let again = g.admin("DELETE", &format!("/admin/keys/{id}"), None);
    assert_eq!(again.status, 200, "{}", again.text());
    let auth = format!("Bearer {ADMIN_COMPLIANCE}");
    let r =
        http::send("DELETE", &g.url(&format!("/admin/keys/{}", nonce("nobody"))), &[("authorization", &auth)], None);
    assert_eq!(r.unwrap().status, 404);
}

fn keystore_stats() -> Value {
    let r = gateway().admin("GET", "/admin/test/keystore", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Unauthenticated traffic with made-up keys: each new one used to cost a KV read and an
/// entry in the isolate's memo, for ever. Both are bounded now.
#[test]
fn a_storm_of_made_up_keys_costs_bounded_memory_and_kv_reads() {
    let _guard = one_at_a_time();
    // A real key, in use before and during the storm.
    let r = create_key(&nonce("storm-survivor"));
    assert_eq!(r.status, 201, "{}", r.text());
    let real = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(chat_with(&real, &[]).status, 200);

    let before = keystore_stats();
    let started = std::time::Instant::now();
    let (threads, per_thread) = (8, 250);
    let statuses: Vec<u16> = thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let real = &real;
                s.spawn(move || {
                    let mut seen = Vec::new();
                    for i in 0..per_thread {
                        // Mostly keys shaped like the gateway's, each new; some not; some repeated.
                        let token = match i % 10 {
                            0 => format!("sk-not-a-gateway-key-{}", nonce("junk")),
                            1 => format!("gw-{}", "1".repeat(64)),
                            _ => {
                                format!("gw-{}", llm_edge_gateway::util::hash::sha256_hex(nonce("made-up").as_bytes()))
                            }
                        };
                        seen.push(chat_with(&token, &[]).status);
                        if i % 50 == 0 {
                            assert_eq!(
                                chat_with(real, &[]).status,
                                200,
                                "a real key works through the storm (thread {t})"
                            );
                        }
                    }
                    seen
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let after = keystore_stats();
    assert!(statuses.iter().all(|s| *s == 401 || *s == 503), "{statuses:?}");

    // KV reads: at most the burst plus the refill over the storm's time (and a little for
    // the real key's periodic re-reads).
    let reads = after["kv_reads"].as_u64().unwrap() - before["kv_reads"].as_u64().unwrap();
    let burst = after["read_burst"].as_u64().unwrap_or(0) as f64;
    let per_s = after["reads_per_s"].as_u64().unwrap_or(0) as f64;
    let bound = burst + per_s * elapsed + elapsed / 2.0 + 10.0;
    let storm = threads * per_thread;
    assert!(
        (reads as f64) <= bound,
        "{storm} made-up keys in {elapsed:.1} s cost {reads} KV reads; the bound is {bound:.0} ({after})"
    );
    // Memory: the memo never holds more than its capacity.
    let capacity = after["capacity"].as_u64().expect("the memo has a capacity");
    assert!(after["entries"].as_u64().unwrap() <= capacity, "{after}");
    assert!(statuses.iter().filter(|s| **s == 503).count() > 0, "the storm was throttled");
    assert_eq!(chat_with(&real, &[]).status, 200);
}
