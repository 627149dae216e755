//! End to end through workerd: what the admin API stores when it changes the config —
//! every field of the document counts as a change, a write that fails halfway leaves the
//! API usable and the audit log truthful, and a deployment can only name the secrets the
//! deploy allows. Checked in KV and D1, not only in the answers.

mod support;

use serde_json::{json, Value};
use std::sync::Mutex;
use support::gateway::gateway;
use support::nonce;

/// Each test changes the config and expects exact versions: one at a time.
static ADMIN: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ADMIN.lock().unwrap_or_else(|e| e.into_inner())
}

fn current_config() -> (u64, Value) {
    let r = gateway().admin("GET", "/admin/config", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (v["version"].as_u64().unwrap(), v["config"].clone())
}

fn put_config(config: &Value, headers: &[(&str, &str)]) -> support::http::Response {
    let g = gateway();
    let auth = format!("Bearer {}", support::gateway::ADMIN_COMPLIANCE);
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    support::http::send("PUT", &g.url("/admin/config"), &all, Some(config.to_string().as_bytes())).unwrap()
}

/// KV's active version and the document stored for it.
fn kv_active() -> (u64, Option<Value>) {
    let g = gateway();
    let active: u64 = g.kv_get("config:active").map_or(0, |t| t.trim().parse().unwrap());
    let doc = g.kv_get(&format!("config:v:{active:012}")).map(|t| serde_json::from_str(&t).unwrap());
    (active, doc)
}

#[test]
fn a_change_to_team_budgets_alone_is_stored_and_audited() {
    let _guard = one_at_a_time();
    let team = nonce("budget-team");
    let (before, mut config) = current_config();
    config["budgets"]["teams"][&team] = json!({"monthly_usd": "12.50", "mode": "soft"});

    let r = put_config(&config, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["unchanged"].is_null(), "a budget change is a change: {v}");
    let version = v["version"].as_u64().unwrap();
    assert!(version > before, "{v}");
    assert_eq!(v["changes"], json!([format!("team budgets added: {team}")]));

    let (active, doc) = kv_active();
    assert_eq!(active, version);
    assert_eq!(doc.unwrap()["budgets"]["teams"][&team], json!({"monthly_usd": "12.50", "mode": "soft"}));
    let rows = gateway().d1(&format!("SELECT action, summary FROM audit_log WHERE new_version = {version}"));
    assert_eq!(rows, vec![json!({"action": "config.replace", "summary": format!("team budgets added: {team}")})]);

    // The same document again is unchanged, and stores nothing.
    let r = put_config(&current_config().1, &[]);
    assert_eq!((r.json()["unchanged"].as_bool(), r.json()["version"].as_u64()), (Some(true), Some(version)));
    assert_eq!(kv_active().0, version);
}

/// `config` with a deployment at the mock's `tag` naming `secret`, and an alias for it.
fn with_deployment(mut config: Value, tag: &str, secret: &str) -> Value {
    let deployment = json!({
        "id": tag, "provider": "openai", "model": "m", "base_url": format!("{}/{tag}/v1", support::gateway::mock().base_url()),
        "api_key_secret": secret, "jurisdiction": "us", "region": "us-east-1",
        "price": {"input": "1", "output": "1"}
    });
    config["deployments"].as_array_mut().unwrap().push(deployment);
    config["aliases"].as_array_mut().unwrap().push(json!({"name": tag, "deployments": [tag]}));
    config
}

#[test]
fn a_deployment_may_only_name_the_secrets_the_deploy_allows() {
    let _guard = one_at_a_time();
    let (before, config) = current_config();
    let audited_before = gateway().d1("SELECT COUNT(*) AS n FROM audit_log")[0]["n"].as_u64();
    let cases = [
        ("ADMIN_TOKEN", "is the admin API's token"),
        // Key `secret-held`'s own secret.
        ("GATEWAY_KEY_SECRET_HELD", "is the secret of key `secret-held`"),
        ("SOME_OTHER_SECRET", "is not in PROVIDER_SECRETS"),
    ];
    for (secret, why) in cases {
        let tag = nonce("exfil");
        let r = put_config(&with_deployment(config.clone(), &tag, secret), &[]);
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_config")), "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(&format!("api_key_secret `{secret}` {why}")), "{message}");
        // A dry run refuses it too.
        let auth = format!("Bearer {}", support::gateway::ADMIN_COMPLIANCE);
        let body = with_deployment(config.clone(), &tag, secret).to_string();
        let url = gateway().url("/admin/config?dry_run=true");
        let r = support::http::send("PUT", &url, &[("authorization", &auth)], Some(body.as_bytes())).unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
    }
    // Nothing was stored or audited.
    assert_eq!(kv_active().0, before);
    assert_eq!(gateway().d1("SELECT COUNT(*) AS n FROM audit_log")[0]["n"].as_u64(), audited_before);

    // A listed secret is fine.
    let tag = nonce("listed");
    let r = put_config(&with_deployment(config.clone(), &tag, "TEST_PROVIDER_KEY"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(kv_active().0, r.json()["version"].as_u64().unwrap());
}

/// A config that names the admin token and reached KV some other way (written before the
/// allow-list existed, or by hand) still never sends it anywhere: the deployment is skipped.
#[test]
fn a_stored_config_naming_the_admin_token_never_resolves_it() {
    let _guard = one_at_a_time();
    let g = gateway();
    let (before, config) = current_config();
    let tag = nonce("exfil-stored");
    let version = before.max(kv_active().0) + 1;
    g.kv_put(&format!("config:v:{version:012}"), &with_deployment(config, &tag, "ADMIN_TOKEN").to_string());
    g.kv_put("config:active", &version.to_string());
    let started = std::time::Instant::now();
    while current_config().0 != version {
        assert!(started.elapsed().as_secs() < 30, "the gateway never saw version {version}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let body = json!({"model": tag, "messages": [{"role": "user", "content": "hi"}]});
    let r = g.chat(&body, &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    let leaked: Vec<_> = support::gateway::mock().requests().into_iter().filter(|q| q.tag == tag).collect();
    assert!(leaked.is_empty(), "the deployment was called: {:?}", leaked[0].headers);

    let r = g.admin("POST", "/admin/config/rollback", Some(&json!({"version": before})));
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A change whose KV writes fail after its audit row claimed the next version: before, the
/// claimed number stayed taken and every later change got 409 for ever. Now the failed
/// write is recorded as failed, its half-written version removed, and the next change
/// succeeds under a version number of its own.
#[test]
fn a_write_that_fails_halfway_leaves_the_api_usable_and_the_audit_truthful() {
    let _guard = one_at_a_time();
    let g = gateway();
    let team = nonce("halfway");
    let (before, mut config) = current_config();
    config["budgets"]["teams"][&team] = json!({"monthly_usd": "1.00"});
    let summary = format!("team budgets added: {team}");

    // Fails before anything is stored; then fails after the version's document is stored
    // but before it is activated.
    for fault in ["admin-kv-version", "admin-kv-active"] {
        let r = put_config(&config, &[("x-gateway-test-fault", fault)]);
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (503, Some("store_unavailable")), "{}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("not applied"), "{}", r.text());
        assert_eq!(kv_active().0, before, "a failed write activates nothing");
    }
    let r = put_config(&config, &[]);
    assert_eq!(r.status, 200, "the API is not locked by the failed writes: {}", r.text());
    let version = r.json()["version"].as_u64().unwrap();
    assert_eq!(r.json()["previous_version"].as_u64(), Some(before));

    let (active, doc) = kv_active();
    assert_eq!(active, version);
    assert_eq!(doc.unwrap()["budgets"]["teams"][&team]["monthly_usd"], "1.00");

    // The audit log says what happened to each attempt.
    let rows = g.d1(&format!(
        "SELECT old_version, new_version, status, detail FROM audit_log WHERE summary = '{summary}' ORDER BY id"
    ));
    let got: Vec<(Option<u64>, &str)> =
        rows.iter().map(|r| (r["old_version"].as_u64(), r["status"].as_str().unwrap())).collect();
    assert_eq!(got, [(Some(before), "failed"), (Some(before), "failed"), (Some(before), "applied")], "{rows:?}");
    assert!(rows[0]["detail"].as_str().unwrap().contains("admin-kv-version"), "{rows:?}");
    assert!(rows[1]["detail"].as_str().unwrap().contains("admin-kv-active"), "{rows:?}");
    assert_eq!(rows[2]["new_version"].as_u64(), Some(version));
    // Versions are never reused, and no half-written version is left to roll back to.
    let claimed: Vec<u64> = rows.iter().map(|r| r["new_version"].as_u64().unwrap()).collect();
    assert!(claimed[0] < claimed[1] && claimed[1] < claimed[2], "{claimed:?}");
    for failed in &claimed[..2] {
        assert_eq!(g.kv_get(&format!("config:v:{failed:012}")), None, "version {failed} was not applied");
        let r = g.admin("POST", "/admin/config/rollback", Some(&json!({"version": failed})));
        assert_eq!(r.status, 404, "{}", r.text());
    }
    let listed = g.admin("GET", "/admin/audit?limit=5", None).json();
    let mine = listed["entries"].as_array().unwrap().iter().find(|e| e["new_version"] == claimed[0]).cloned();
    assert_eq!(mine.unwrap()["status"], "failed");
}

/// Every leaf and object of `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            m.iter().for_each(|(k, x)| pointers(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out))
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| pointers(x, format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// Random documents, each the current config with one thing changed (a value replaced by
/// a hostile or mistyped one, a field removed, an unknown one added, an entry doubled):
/// each is refused whole with the active version untouched, or stored (in KV) and read
/// back exactly as sent. The seed is in every failure's message.
#[test]
fn a_document_is_refused_whole_or_stored_exactly_as_sent() {
    let _guard = one_at_a_time();
    let (start, original) = current_config();
    let hostile = [
        r#""'; DROP TABLE cost_events; --""#,
        r#""=HYPERLINK(\"http://127.0.0.1/x\",\"y\")""#,
        r#""<img src=x onerror=alert(1)>""#,
        r#""\u0000\u202e\ud83d\ude00""#,
        r#""""#,
        r#""Legal""#,
        "-1",
        "0",
        "1e308",
        "18446744073709551616",
        "0.1",
        "true",
        "null",
        "[]",
        "{}",
        r#"["eu", "eu"]"#,
        r#"{"surprise": 1}"#,
    ];
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    let mut rng = seed;
    let mut below = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let (mut stored, mut refused) = (0, 0);
    for round in 0..40 {
        let (before, current) = current_config();
        let mut doc = current.clone();
        let mut all = Vec::new();
        pointers(&doc, String::new(), &mut all);
        let at = all[1 + below(all.len() - 1)].clone();
        let (parent, last) = at.rsplit_once('/').unwrap();
        let what = match below(4) {
            0 | 1 => {
                *doc.pointer_mut(&at).unwrap() = serde_json::from_str(hostile[below(hostile.len())]).unwrap();
                format!("{at} replaced")
            }
            2 => match doc.pointer_mut(parent).unwrap() {
                Value::Object(m) => {
                    m.remove(last);
                    format!("{at} removed")
                }
                Value::Array(a) => {
                    let copy = a[last.parse::<usize>().unwrap()].clone();
                    a.push(copy);
                    format!("{at} doubled")
                }
                _ => unreachable!(),
            },
            _ => match doc.pointer_mut(parent).unwrap() {
                Value::Object(m) => {
                    m.insert(format!("unknown_{round}"), json!(1));
                    format!("{parent}/unknown_{round} added")
                }
                _ => continue,
            },
        };
        let context = format!("seed {seed}, round {round}: {what}");
        let r = put_config(&doc, &[]);
        match r.status {
            200 => {
                stored += 1;
                let (version, back) = current_config();
                assert_eq!(back, doc, "{context}: read back changed");
                let (active, kv) = kv_active();
                assert_eq!(active, version, "{context}");
                if version != before {
                    assert_eq!(kv.as_ref(), Some(&doc), "{context}: KV holds another document");
                }
            }
            400 => {
                refused += 1;
                assert_eq!(r.json()["error"]["code"], "invalid_config", "{context}: {}", r.text());
                assert_eq!(current_config(), (before, current), "{context}: a refused document changed the config");
            }
            s => panic!("{context}: status {s}: {}", r.text()),
        }
    }
    assert!(refused > 5 && stored > 2, "seed {seed}: {refused} refused, {stored} stored");
    let r = put_config(&original, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(current_config().1, original);
    assert!(current_config().0 >= start);
}
