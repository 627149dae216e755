//! End to end through workerd: residency rules managed through the admin API while the
//! gateway runs — dry runs, replacement, rollback, explain, the audit trail in D1 and the
//! versions in KV. Each change only adds rules for this test's own team, so requests of
//! other tests route as before.

mod support;

use serde_json::{json, Value};
use std::sync::Mutex;
use support::gateway::{gateway, ADMIN_COMPLIANCE, ADMIN_PLATFORM};
use support::nonce;

/// Config changes build on the latest version; running them one at a time keeps each
/// test's expectations about versions exact.
static ADMIN: Mutex<()> = Mutex::new(());

fn current_residency() -> (u64, Value) {
    let r = gateway().admin("GET", "/admin/residency", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (v["version"].as_u64().unwrap(), v["residency"].clone())
}

/// The current rules with `rule` first.
fn with_rule_first(rule: Value) -> Value {
    let (_, mut residency) = current_residency();
    residency["rules"].as_array_mut().unwrap().insert(0, rule);
    residency
}

/// A gateway key bound to `team`, created through the admin API: rules match a team only
/// through the key it is bound to.
fn team_key(team: &str) -> String {
    static KEYS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let mut keys = KEYS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, secret)) = keys.iter().find(|(t, _)| t == team) {
        return secret.clone();
    }
    let r = gateway().admin("POST", "/admin/keys", Some(&json!({"id": nonce("team-key"), "team": team})));
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["key"].as_str().unwrap().to_string();
    keys.push((team.to_string(), secret.clone()));
    secret
}

fn chat_as(key: &str, model: &str, text: &str, headers: &[(&str, &str)]) -> support::http::Response {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]}).to_string();
    let auth = format!("Bearer {key}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    support::http::send("POST", &gateway().url("/v1/chat/completions"), &all, Some(body.as_bytes())).unwrap()
}

fn ask(team: &str, text: &str) -> (u16, Option<String>, Option<String>) {
    let r = chat_as(&team_key(team), "chat", text, &[("x-gateway-geo-country", "US")]);
    (r.status, r.header("x-gateway-rule").map(str::to_string), r.header("x-gateway-deployment").map(str::to_string))
}

const DE: [(&str, &str); 2] = [("x-gateway-geo-country", "DE"), ("x-gateway-geo-continent", "EU")];

#[test]
fn a_team_the_request_asserts_never_selects_a_rule() {
    let _one_at_a_time = ADMIN.lock().unwrap_or_else(|e| e.into_inner());
    let team = nonce("team-legal");
    let rule_id = format!("anywhere-{team}");
    let rule = json!({"id": rule_id, "when": {"teams": [team]}, "allow": ["any"]});
    let r = gateway().admin("PUT", "/admin/residency", Some(&with_rule_first(rule)));
    assert_eq!(r.status, 200, "{}", r.text());
    // A key bound to no team claims the team: the EU caller's rule still applies, and the
    // US-only alias has nothing it allows.
    let headers = [DE[0], DE[1], ("x-gateway-team", team.as_str())];
    let r = chat_as(support::gateway::KEY, "single", &nonce("claims"), &headers);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        (r.json()["error"]["code"].as_str(), r.header("x-gateway-rule")),
        (Some("residency_unsatisfiable"), Some("eu-callers"))
    );
    // A key bound to the team gets the team's rule.
    let r = chat_as(&team_key(&team), "single", &nonce("bound"), &DE);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-rule"), Some(rule_id.as_str()));
}

#[test]
fn several_compliance_tags_get_what_all_of_them_allow() {
    let both = [DE[0], DE[1], ("x-gateway-compliance", "gdpr, US-only")];
    let r = chat_as(support::gateway::KEY, "chat", &nonce("two-tags"), &both);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-gateway-rule"), Some("gdpr-tag+eu-callers"));
    let again = [("x-gateway-geo-country", "US"), ("x-gateway-compliance", "gdpr,GDPR")];
    let r = chat_as(support::gateway::KEY, "chat", &nonce("one-tag-twice"), &again);
    assert_eq!((r.status, r.header("x-gateway-jurisdiction")), (200, Some("eu")));
    let unknown = [("x-gateway-compliance", "gdpr,hipaa")];
    let r = chat_as(support::gateway::KEY, "chat", &nonce("bogus-tag"), &unknown);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("unknown_compliance_tag")));
}

#[test]
fn a_tag_never_takes_a_request_beyond_its_callers_own_rule() {
    // The gdpr tag's rule allows the EU, the Japanese caller's rule only APAC: the tag
    // narrows that to nothing rather than moving the request to Europe.
    let jp = [("x-gateway-geo-country", "JP"), ("x-gateway-compliance", "gdpr")];
    let r = chat_as(support::gateway::KEY, "chat", &nonce("tag-escape"), &jp);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "residency_unsatisfiable");
    assert_eq!(r.header("x-gateway-rule"), Some("gdpr-tag+apac-callers"));
    // Where the caller's rule allows what the tag asks, the tag decides alone.
    let us = [("x-gateway-geo-country", "US"), ("x-gateway-compliance", "gdpr")];
    let r = chat_as(support::gateway::KEY, "chat", &nonce("tag-narrows"), &us);
    assert_eq!((r.status, r.header("x-gateway-rule")), (200, Some("gdpr-tag")));
}

#[test]
fn the_admin_api_needs_a_labelled_admin_token() {
    let g = gateway();
    let r = support::http::send("GET", &g.url("/admin/residency"), &[], None).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    let r = g.admin_as("not-a-token", "GET", "/admin/residency", None);
    assert_eq!(r.status, 401);
    // A gateway (client) key is not an admin token.
    let r = g.admin_as(support::gateway::KEY, "GET", "/admin/config", None);
    assert_eq!(r.status, 401);
    assert_eq!(g.admin("GET", "/admin/nothing", None).status, 404);
    assert_eq!(g.admin("DELETE", "/admin/residency", None).status, 405);
}

#[test]
fn a_rule_change_takes_effect_without_a_restart_and_is_audited() {
    let _one_at_a_time = ADMIN.lock().unwrap_or_else(|e| e.into_inner());
    let team = nonce("team-apac");
    let rule_id = format!("route-{team}");
    let (before, _) = current_residency();
    assert_eq!(ask(&team, &nonce("before")).1.as_deref(), Some("default"));

    let rule =
        json!({"id": rule_id, "description": "this team is APAC-only", "when": {"teams": [team]}, "allow": ["apac"]});
    let r = gateway().admin("PUT", "/admin/residency", Some(&with_rule_first(rule)));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let version = v["version"].as_u64().unwrap();
    assert_eq!((version, v["previous_version"].as_u64()), (before + 1, Some(before)));
    assert_eq!(v["changes"], json!([format!("rules added: {rule_id}")]));

    // Effective at once: the same gateway process, no restart.
    let (status, rule, deployment) = ask(&team, &nonce("after"));
    assert_eq!(status, 200);
    assert_eq!(rule.as_deref(), Some(rule_id.as_str()));
    assert!(matches!(deployment.as_deref(), Some("jp-1" | "sg-1")), "{deployment:?}");
    // Other teams are untouched.
    assert_eq!(ask(&nonce("other-team"), "x").1.as_deref(), Some("default"));

    let rows = gateway().d1(&format!(
        "SELECT actor, action, old_version, new_version, summary FROM audit_log WHERE new_version = {version}"
    ));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["actor"], "compliance");
    assert_eq!(rows[0]["action"], "residency.replace");
    assert_eq!((rows[0]["old_version"].as_u64(), rows[0]["new_version"].as_u64()), (Some(before), Some(version)));
    assert_eq!(rows[0]["summary"], format!("rules added: {rule_id}"));

    let r = gateway().admin("GET", "/admin/config/versions", None);
    let listed = r.json();
    assert_eq!(listed["active"].as_u64(), Some(version));
    let mine = listed["versions"].as_array().unwrap().iter().find(|m| m["version"].as_u64() == Some(version)).cloned();
    assert_eq!(mine.unwrap()["actor"], "compliance");

    // Roll the rules back: the team routes by the default rule again, and that is audited
    // under the platform token's label.
    let r = gateway().admin_as(ADMIN_PLATFORM, "POST", "/admin/residency/rollback", Some(&json!({"version": before})));
    assert_eq!(r.status, 200, "{}", r.text());
    let rolled = r.json()["version"].as_u64().unwrap();
    assert_eq!(rolled, version + 1);
    assert_eq!(ask(&team, &nonce("rolled-back")).1.as_deref(), Some("default"));
    let rows = gateway().d1(&format!("SELECT actor, action, summary FROM audit_log WHERE new_version = {rolled}"));
    assert_eq!(rows[0]["actor"], "platform");
    assert_eq!(rows[0]["action"], format!("residency.rollback_to_{before}"));
    assert_eq!(rows[0]["summary"], format!("rules removed: {rule_id}"));
}

#[test]
fn a_dry_run_validates_and_changes_nothing() {
    let _one_at_a_time = ADMIN.lock().unwrap_or_else(|e| e.into_inner());
    let team = nonce("team-dry");
    let (before, _) = current_residency();
    let rule = json!({"id": format!("dry-{team}"), "when": {"teams": [team]}, "allow": ["eu"]});
    let r = gateway().admin("PUT", "/admin/residency?dry_run=true", Some(&with_rule_first(rule.clone())));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["valid"], true);
    assert_eq!(r.json()["changes"], json!([format!("rules added: dry-{team}")]));
    let r = gateway().admin("POST", "/admin/residency/validate", Some(&with_rule_first(rule)));
    assert_eq!(r.json()["dry_run"], true);
    assert_eq!(current_residency().0, before, "a dry run creates no version");
    assert_eq!(ask(&team, "x").1.as_deref(), Some("default"));
    let audited = gateway().d1(&format!("SELECT id FROM audit_log WHERE summary LIKE '%dry-{team}%'"));
    assert!(audited.is_empty());
}

#[test]
fn invalid_rules_are_refused_with_a_pointer_to_the_rule() {
    let _one_at_a_time = ADMIN.lock().unwrap_or_else(|e| e.into_inner());
    let (before, _) = current_residency();
    let cases = [
        (
            json!({"id": "mars", "when": {"countries": ["DE"]}, "allow": ["mars"]}),
            "residency rule `mars`: unknown jurisdiction `mars`",
        ),
        (
            json!({"id": "tagged", "when": {"compliance": ["hipaa"]}, "allow": ["us"]}),
            "residency rule `tagged`: unknown compliance tag `hipaa`",
        ),
        (
            json!({"id": "leak", "when": {"compliance": ["gdpr"]}, "allow": ["us"]}),
            "residency rule `leak`: requests tagged `gdpr` may not reach `us`",
        ),
        (
            json!({"id": "global", "when": {"countries": ["DE"]}, "allow": ["global"]}),
            "residency rule `global`: `global` endpoints",
        ),
    ];
    for (rule, message) in cases {
        for path in ["/admin/residency", "/admin/residency?dry_run=true"] {
            let r = gateway().admin("PUT", path, Some(&with_rule_first(rule.clone())));
            assert_eq!(r.status, 400, "{}", r.text());
            let v = r.json();
            assert_eq!(v["error"]["code"], "invalid_config");
            assert!(v["error"]["message"].as_str().unwrap().contains(message), "{v}");
        }
    }
    // A rule that can never match, because an earlier one takes all its requests.
    let (_, mut residency) = current_residency();
    let rules = residency["rules"].as_array_mut().unwrap();
    let after = rules.iter().position(|r| r["id"] == "eu-callers").unwrap() + 1;
    rules.insert(after, json!({"id": "shadowed", "when": {"countries": ["DE"], "eu": true}, "allow": ["eu"]}));
    let r = gateway().admin("PUT", "/admin/residency", Some(&residency));
    assert!(r.text().contains("`shadowed` can never match"), "{}", r.text());
    let r = gateway().admin("PUT", "/admin/residency", Some(&json!({"rules": [], "bogus": 1})));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("unknown field `bogus`"));
    // Sent as text: a key named twice is refused, not read as its last; text that is not
    // JSON is an invalid body.
    let g = gateway();
    let auth = format!("Bearer {ADMIN_COMPLIANCE}");
    let put = |body: &str| {
        support::http::send("PUT", &g.url("/admin/residency"), &[("authorization", &auth)], Some(body.as_bytes()))
            .unwrap()
    };
    let r = put(r#"{"rules": [{"id": "twice", "allow": ["eu"], "allow": ["any"]}]}"#);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_config")), "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("duplicate field `allow`"), "{}", r.text());
    let r = put(r#"{"rules": ["#);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_json")), "{}", r.text());
    assert_eq!(current_residency().0, before);
}

#[test]
fn explain_shows_the_rule_and_the_candidates() {
    let r = gateway().admin(
        "POST",
        "/admin/residency/explain",
        Some(&json!({"model": "chat", "country": "JP", "continent": "AS", "latitude": 35.6, "longitude": 139.7})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["rule"], "apac-callers");
    assert_eq!(v["allowed"], "apac");
    let order: Vec<(&str, Option<u64>)> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["deployment"].as_str().unwrap(), c["order"].as_u64()))
        .collect();
    assert_eq!(order[..2], [("jp-1", Some(1)), ("sg-1", Some(2))]);
    let us = v["candidates"].as_array().unwrap().iter().find(|c| c["deployment"] == "us-1").unwrap();
    assert!(us["order"].is_null());
    assert!(us["reason"].as_str().unwrap().contains("not allowed by rule `apac-callers`"));

    let r = gateway().admin(
        "POST",
        "/admin/residency/explain",
        Some(&json!({"model": "chat", "country": "US", "compliance": "gdpr"})),
    );
    assert_eq!((r.json()["rule"].as_str(), r.json()["allowed"].as_str()), (Some("gdpr-tag"), Some("eu")));
    let r = gateway().admin("POST", "/admin/residency/explain", Some(&json!({"model": "chat", "country": "T1"})));
    assert_eq!(r.json()["location_known"], false);
    // The rule allowing the fewest jurisdictions: `apac` alone, against the three of `europe`.
    assert_eq!(r.json()["rule"], "apac-callers", "an anonymised caller gets the most restrictive rule");
    // An allowed deployment whose secret is not set is named as skipped, with the secret.
    let r = gateway().admin("POST", "/admin/residency/explain", Some(&json!({"model": "unset", "country": "US"})));
    let unset = &r.json()["candidates"][0];
    assert_eq!((unset["deployment"].as_str(), unset["order"].as_u64()), (Some("unset-secret"), None), "{unset}");
    assert!(unset["reason"].as_str().unwrap().contains("NEVER_SET_PROVIDER_KEY is not set"), "{unset}");
}

#[test]
fn the_whole_config_can_be_read() {
    let r = gateway().admin("GET", "/admin/config", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v["config"]["deployments"].as_array().unwrap().iter().any(|d| d["id"] == "eu-1"));
    let r = gateway().admin("GET", "/admin/audit?limit=5", None);
    assert_eq!(r.status, 200);
    assert!(r.json()["entries"].is_array());
}

#[test]
fn a_country_header_alone_behaves_like_request_cf() {
    // request.cf always carries the continent and coordinates; the dev stand-in derives them.
    for (country, nearest) in [("JP", "jp-1"), ("SG", "sg-1")] {
        let r = chat_as(support::gateway::KEY, "chat", &nonce("country-only"), &[("x-gateway-geo-country", country)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            (r.header("x-gateway-rule"), r.header("x-gateway-deployment")),
            (Some("apac-callers"), Some(nearest))
        );
    }
}
