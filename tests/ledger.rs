//! End to end through workerd: every request priced and tagged, delivered through the
//! Queue to D1 exactly once, rolled up, and broken down by the admin API.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::gateway::{gateway, TEAM_KEY};
use support::http;
use support::nonce;

/// Micro-dollars of `input`/`output` tokens at the test prices (USD per MTok): us-1
/// 3/15, eu-1 3.30/16.50.
fn cost(deployment: &str, input: u64, output: u64) -> u64 {
    match deployment {
        "eu-1" => (input * 3_300_000 + output * 16_500_000 + 500_000) / 1_000_000,
        _ => (input * 3_000_000 + output * 15_000_000 + 500_000) / 1_000_000,
    }
}

fn ask(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// Polls D1 until `sql`'s first row's `n` reaches `want` (the queue consumer batches).
fn wait_count(sql: &str, want: u64) -> u64 {
    let started = Instant::now();
    loop {
        let n = gateway().d1(sql).first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
        if n >= want || started.elapsed() > Duration::from_secs(40) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn events_of_team(team: &str) -> Vec<Value> {
    gateway().d1(&format!("SELECT * FROM cost_events WHERE team = '{team}' ORDER BY request_id"))
}

fn send(body: &Value, headers: &[(&str, &str)]) -> (u16, Option<String>, Option<String>) {
    let g = gateway();
    if body["stream"] == true {
        let s = g.chat_stream(body, headers);
        let id = s.header("x-gateway-request-id").map(str::to_string);
        let status = s.status;
        let _ = s.collect();
        (status, id, None)
    } else {
        let r = g.chat(body, headers);
        (
            r.status,
            r.header("x-gateway-request-id").map(str::to_string),
            r.header("x-gateway-cost-usd").map(str::to_string),
        )
    }
}

#[test]
fn concurrent_requests_make_exactly_one_event_each_priced_from_the_usage() {
    let team = nonce("ledger-team");
    let n = 12u64;
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let team = team.clone();
            std::thread::spawn(move || {
                let text = format!("request {i} [mock:prompt_tokens={},completion_tokens={}]", 100 + i, 10 + i);
                let (status, id, header_cost) = send(
                    &ask("single", &text, i % 2 == 0),
                    &[("x-gateway-team", &team), ("x-gateway-feature", "load")],
                );
                assert_eq!(status, 200);
                if let Some(c) = header_cost {
                    let micros = cost("us-1", 100 + i, 10 + i);
                    assert_eq!(c, format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000), "x-gateway-cost-usd");
                }
                id.unwrap()
            })
        })
        .collect();
    let ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let count_sql = format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'");
    assert_eq!(wait_count(&count_sql, n), n);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(wait_count(&count_sql, n), n, "no event is written twice");

    let events = events_of_team(&team);
    let mut got_ids: Vec<&str> = events.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    got_ids.sort();
    let mut want_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    want_ids.sort();
    assert_eq!(got_ids, want_ids);
    let expected: u64 = (0..n).map(|i| cost("us-1", 100 + i, 10 + i)).sum();
    assert_eq!(events.iter().map(|e| e["cost_micros"].as_u64().unwrap()).sum::<u64>(), expected);
    for e in &events {
        assert_eq!((e["outcome"].as_str(), e["status"].as_u64()), (Some("ok"), Some(200)));
        assert_eq!(
            (e["feature"].as_str(), e["env"].as_str(), e["key_id"].as_str()),
            (Some("load"), Some("untagged"), Some("test"))
        );
        assert_eq!(
            (e["deployment"].as_str(), e["provider"].as_str(), e["jurisdiction"].as_str()),
            (Some("us-1"), Some("openai"), Some("us"))
        );
        assert_eq!(e["endpoint_host"].as_str().map(|h| h.starts_with("127.0.0.1:")), Some(true));
        assert_eq!(
            (e["alias"].as_str(), e["model"].as_str(), e["residency_rule"].as_str()),
            (Some("single"), Some("model-us-1"), Some("default"))
        );
        assert!(e["latency_ms"].as_u64().is_some() && e["ttfb_ms"].as_u64().is_some());
        assert_eq!(e["attempts"].as_u64(), Some(1));
    }
    let rollup = gateway().d1(&format!(
        "SELECT SUM(requests) AS requests, SUM(cost_micros) AS cost FROM cost_daily WHERE team = '{team}'"
    ));
    assert_eq!((rollup[0]["requests"].as_u64(), rollup[0]["cost"].as_u64()), (Some(n), Some(expected)));
}

#[test]
fn a_cut_stream_is_billed_for_what_was_consumed() {
    let team = nonce("ledger-cut");
    let (status, id, _) =
        send(&ask("single", "tell me a long story [mock:chunks=8,cut_after=4]", true), &[("x-gateway-team", &team)]);
    assert_eq!(status, 200);
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 1), 1);
    let e = &events_of_team(&team)[0];
    assert_eq!(e["request_id"].as_str(), id.as_deref());
    assert_eq!(e["outcome"], "cut");
    assert!(e["output_tokens"].as_u64().unwrap() > 0, "{e}");
    assert!(e["input_tokens"].as_u64().unwrap() > 0, "{e}");
    assert!(e["cost_micros"].as_u64().unwrap() > 0, "never a silent $0: {e}");
}

#[test]
fn a_client_that_goes_away_mid_stream_is_still_billed() {
    let team = nonce("ledger-gone");
    let body = ask("single", "tell me a long story [mock:chunks=40,chunk_delay_ms=100]", true);
    let mut s = gateway().chat_stream(&body, &[("x-gateway-team", &team)]);
    assert_eq!(s.status, 200);
    let id = s.header("x-gateway-request-id").map(str::to_string);
    assert!(s.next_chunk().unwrap().is_some(), "the first content arrives before the client leaves");
    drop(s);
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 1), 1);
    let e = &events_of_team(&team)[0];
    assert_eq!(e["request_id"].as_str(), id.as_deref());
    assert_eq!(e["outcome"], "cut", "{e}");
    assert!(e["input_tokens"].as_u64().unwrap() > 0, "{e}");
    assert!(e["cost_micros"].as_u64().unwrap() > 0, "what was consumed is billed: {e}");
}

#[test]
fn failed_requests_are_recorded_too() {
    let team = nonce("ledger-failed");
    let r = gateway().chat(&ask("dead", "hello", false), &[("x-gateway-team", &team)]);
    assert_eq!(r.status, 502);
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 1), 1);
    let e = &events_of_team(&team)[0];
    // workerd reports a refused connection as it reports one lost after the request was
    // sent ("Network connection lost."): the prompt may have been billed, and is estimated.
    let prompt = cost("dead", prompt_estimate("hello"), 0);
    assert_eq!(
        (e["outcome"].as_str(), e["status"].as_u64(), e["cost_micros"].as_u64(), e["cost_estimated_micros"].as_u64()),
        (Some("error"), Some(502), Some(prompt), Some(prompt))
    );
    let attempts: Value = serde_json::from_str(e["attempts_detail"].as_str().unwrap()).unwrap();
    assert_eq!(attempts[0]["failure"], "unreachable");
}

#[test]
fn tags_come_from_headers_and_the_keys_defaults() {
    let g = gateway();
    let url = g.url("/v1/chat/completions");
    let auth = format!("Bearer {TEAM_KEY}");
    let feature = nonce("feat");
    let body = ask("single", "hi", false).to_string();
    let r =
        http::send("POST", &url, &[("authorization", &auth), ("x-gateway-feature", &feature)], Some(body.as_bytes()))
            .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-gateway-request-id").unwrap().to_string();
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE request_id = '{id}'"), 1), 1);
    let e = &g.d1(&format!("SELECT team, feature, env, key_id FROM cost_events WHERE request_id = '{id}'"))[0];
    assert_eq!(
        (e["team"].as_str(), e["feature"].as_str(), e["env"].as_str()),
        (Some("search"), Some(feature.as_str()), Some("prod"))
    );

    let r = http::send("POST", &url, &[("authorization", &auth), ("x-gateway-team", "ads")], Some(body.as_bytes()))
        .unwrap();
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (403, Some("team_mismatch")));
    let r = g.chat(&ask("single", "hi", false), &[("x-gateway-env", "not valid!")]);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_tag")));

    // No tags at all: recorded as untagged, not dropped.
    let r = g.chat(&ask("single", "hi", false), &[]);
    let id = r.header("x-gateway-request-id").unwrap().to_string();
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE request_id = '{id}' AND team = 'untagged' AND feature = 'untagged'"), 1), 1);
}

#[test]
fn the_breakdown_matches_a_hand_computed_table() {
    let a = nonce("bd-a");
    let b = nonce("bd-b");
    // (team, feature, env, country, prompt tokens, completion tokens)
    let seed = [
        (&a, "summarize", "qa", "DE", 1000, 100),
        (&a, "summarize", "qa", "DE", 2000, 200),
        (&a, "summarize", "prod", "US", 500, 50),
        (&a, "classify", "qa", "US", 300, 10),
        (&b, "summarize", "prod", "DE", 4000, 400),
        (&b, "classify", "prod", "US", 100, 1),
    ];
    let mut expected: BTreeMap<(String, String, String, String), (u64, u64)> = BTreeMap::new();
    for (team, feature, env, country, input, output) in seed {
        let text = format!("[mock:prompt_tokens={input},completion_tokens={output}]");
        let r = gateway().chat(
            &ask("chat", &text, false),
            &[
                ("x-gateway-team", team),
                ("x-gateway-feature", feature),
                ("x-gateway-env", env),
                ("x-gateway-geo-country", country),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let (deployment, jurisdiction) = if country == "DE" { ("eu-1", "eu") } else { ("us-1", "us") };
        assert_eq!(r.header("x-gateway-deployment"), Some(deployment));
        let row = expected.entry((team.clone(), feature.into(), env.into(), jurisdiction.into())).or_default();
        row.0 += 1;
        row.1 += cost(deployment, input, output);
    }
    let filter = format!("team={a},{b}");
    assert_eq!(wait_count(&format!("SELECT SUM(requests) AS n FROM cost_daily WHERE team IN ('{a}', '{b}')"), 6), 6);

    let r = gateway().admin("GET", &format!("/admin/costs?group_by=team,feature,env,jurisdiction&{filter}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let total: u64 = expected.values().map(|(_, c)| c).sum();
    assert_eq!(v["total"]["cost_micros"].as_u64(), Some(total));
    assert_eq!(v["total"]["requests"].as_u64(), Some(6));
    let mut got: BTreeMap<(String, String, String, String), (u64, u64)> = BTreeMap::new();
    for row in v["rows"].as_array().unwrap() {
        let key = ["team", "feature", "env", "jurisdiction"].map(|k| row[k].as_str().unwrap().to_string());
        got.insert(
            (key[0].clone(), key[1].clone(), key[2].clone(), key[3].clone()),
            (row["requests"].as_u64().unwrap(), row["cost_micros"].as_u64().unwrap()),
        );
        let share = row["share_pct"].as_str().unwrap().parse::<f64>().unwrap();
        let want = row["cost_micros"].as_u64().unwrap() as f64 * 100.0 / total as f64;
        assert!((share - want).abs() < 0.006, "share {share} vs {want}");
    }
    assert_eq!(got, expected);
    let costs: Vec<u64> = v["rows"].as_array().unwrap().iter().map(|r| r["cost_micros"].as_u64().unwrap()).collect();
    assert!(costs.windows(2).all(|w| w[0] >= w[1]), "most expensive first");

    // One call answers "what does this team spend per feature, and how much of it in QA".
    let r = gateway().admin("GET", &format!("/admin/costs?group_by=env&team={a}&feature=summarize"), None);
    let envs: BTreeMap<String, u64> = r.json()["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["env"].as_str().unwrap().to_string(), r["cost_micros"].as_u64().unwrap()))
        .collect();
    assert_eq!(envs["qa"], cost("eu-1", 1000, 100) + cost("eu-1", 2000, 200));
    assert_eq!(envs["prod"], cost("us-1", 500, 50));

    let r = gateway().admin("GET", &format!("/admin/costs?group_by=team,jurisdiction&{filter}&format=csv"), None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let text = r.text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("team,jurisdiction,requests,input_tokens,output_tokens,cached_tokens,cost_micros,cost_estimated_micros,unpriced_requests,cost_usd,share_pct,estimated_pct"));
    assert_eq!(lines.count(), 4);

    let r = gateway().admin("GET", "/admin/costs?group_by=colour", None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_breakdown")));
}

fn as_key(key: &str, text: &str, headers: &[(&str, &str)]) -> http::Response {
    let auth = format!("Bearer {key}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let body = ask("single", text, false).to_string();
    http::send("POST", &gateway().url("/v1/chat/completions"), &all, Some(body.as_bytes())).unwrap()
}

#[test]
fn the_rate_limit_answers_429_with_retry_after() {
    let statuses: Vec<(u16, Option<String>)> = (0..6)
        .map(|_| {
            let r = as_key(support::gateway::LIMITED_KEY, "hi", &[]);
            (r.status, r.header("retry-after").map(str::to_string))
        })
        .collect();
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "{statuses:?}");
    assert!(limited.iter().all(|(_, retry)| retry.is_some()));
    assert!(statuses[0].0 == 200, "the first requests pass: {statuses:?}");
}

#[test]
fn a_hard_budget_blocks_the_next_request() {
    // Each request costs 60 micro-dollars; the key's budget is 100.
    let text = "[mock:prompt_tokens=10,completion_tokens=2]";
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = as_key(support::gateway::BUDGET_KEY, text, &[]);
        statuses.push(r.status);
        if r.status == 402 {
            assert_eq!(r.json()["error"]["code"], "budget_exceeded");
            assert!(r.json()["error"]["message"].as_str().unwrap().contains("key `budgeted`"));
        }
    }
    assert_eq!(statuses, vec![200, 200, 402, 402]);
    let r = http::send(
        "GET",
        &gateway().url("/v1/spend"),
        &[("authorization", &format!("Bearer {}", support::gateway::BUDGET_KEY))],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["key"]["id"], "budgeted");
    assert_eq!(v["key"]["spend_usd"], "0.000120");
    assert_eq!(v["key"]["budget"]["monthly_usd"], "0.000100");
}

#[test]
fn a_soft_budget_warns_in_a_header() {
    let text = "[mock:prompt_tokens=10,completion_tokens=2]";
    let first = gateway().chat(&ask("single", text, false), &[("x-gateway-team", "softcap")]);
    assert_eq!(first.status, 200);
    let second = gateway().chat(&ask("single", text, false), &[("x-gateway-team", "softcap")]);
    assert_eq!(second.status, 200, "a soft budget never refuses");
    assert!(second.header("x-gateway-budget-warning").unwrap().contains("team `softcap`"));
}

#[test]
fn the_dashboard_page_reads_the_breakdown_api() {
    let r = http::send("GET", &gateway().url("/dashboard"), &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(page.contains("/admin/costs?") && page.contains("Admin token"));
    assert!(r.header("content-security-policy").is_some());
}

#[test]
fn the_cron_keeps_a_regional_breakdown_snapshot_in_kv() {
    let team = nonce("regions");
    let r = gateway().chat(
        &ask("chat", "[mock:prompt_tokens=10,completion_tokens=2]", false),
        &[("x-gateway-team", &team), ("x-gateway-geo-country", "DE"), ("x-gateway-geo-continent", "EU")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(wait_count(&format!("SELECT SUM(requests) AS n FROM cost_daily WHERE team = '{team}'"), 1), 1);
    gateway().run_cron();
    let v = gateway().admin("GET", "/admin/costs/regions", None).json();
    assert!(v["at_ms"].as_u64().is_some(), "{v}");
    let de = v["rows"].as_array().unwrap().iter().find(|r| r["country"] == "DE" && r["continent"] == "EU").cloned();
    assert!(de.is_some_and(|r| r["requests"].as_u64().unwrap() >= 1 && r["jurisdiction"] == "eu"), "{v}");
    // The same snapshot the edge reads, in KV.
    let month = &v["month"].as_str().unwrap().to_string();
    assert!(gateway().kv_get(&format!("spend:{month}:regions")).is_some());
    assert!(gateway().kv_get(&format!("spend:{month}")).unwrap().contains(&team));
}

#[test]
fn a_failed_attempts_consumed_tokens_are_recorded() {
    let team = nonce("ledger-failed-attempt");
    // Anthropic reports the prompt's tokens in message_start, then the stream fails
    // before any content: the gateway falls back, and the event keeps what was consumed.
    support::gateway::mock().script(mock_provider::Script {
        tag: "claude-1".into(),
        needle: team.clone(),
        times: None,
        behaviour: mock_provider::Behaviour::parse("cut_after=0,error_code=overloaded_error,prompt_tokens=77").unwrap(),
    });
    let body =
        json!({"model": "claude-then-openai", "stream": true, "messages": [{"role": "user", "content": team.clone()}]});
    let s = gateway().chat_stream(&body, &[("x-gateway-team", &team)]);
    assert_eq!(s.header("x-gateway-deployment"), Some("us-1"));
    let _ = s.collect();
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 1), 1);
    let e = &events_of_team(&team)[0];
    let attempts: Value = serde_json::from_str(e["attempts_detail"].as_str().unwrap()).unwrap();
    assert_eq!(attempts[0]["deployment"], "claude-1");
    assert_eq!(attempts[0]["input_tokens"], 77, "{attempts}");
    assert_eq!(attempts[1]["failure"], Value::Null);
}

#[test]
fn a_candidate_that_cannot_take_the_request_is_skipped_and_the_request_still_recorded() {
    let team = nonce("team-unsupported");
    // Mistral refuses `logprobs`; the OpenAI deployment after it takes it.
    let body = json!({"model": "mistral-then-openai", "logprobs": true,
        "messages": [{"role": "user", "content": nonce("logprobs")}]});
    let r = gateway().chat(&body, &[("x-gateway-team", &team)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-deployment"), Some("eu-1"));
    assert_eq!(r.header("x-gateway-tried"), Some("mistral-eu:- unsupported, eu-1:200 ok"));
    // Nothing else can take it: the 400 names the field, and the request is on the ledger.
    let body =
        json!({"model": "mistral-eu", "logprobs": true, "messages": [{"role": "user", "content": nonce("only")}]});
    let r = gateway().chat(&body, &[("x-gateway-team", &team)]);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("unsupported_parameter")), "{}", r.text());
    let n = wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE team = '{team}'"), 2);
    assert_eq!(n, 2, "one event per request, whatever its outcome");
    let events = events_of_team(&team);
    let refused = events.iter().find(|e| e["status"] == 400).expect("the refused request's event");
    assert_eq!((refused["outcome"].as_str(), refused["cost_micros"].as_u64()), (Some("error"), Some(0)));
    assert!(refused["attempts_detail"].as_str().unwrap().contains("unsupported"), "{refused}");
}

/// The gateway's own estimate of a one-message prompt: a token per four characters,
/// rounded up, and four of framing.
fn prompt_estimate(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4) + 4
}

/// The cost event of request `id`, once it has reached D1.
fn event(id: &str) -> Value {
    assert_eq!(wait_count(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE request_id = '{id}'"), 1), 1);
    gateway().d1(&format!("SELECT * FROM cost_events WHERE request_id = '{id}'")).remove(0)
}

fn attempts_of(e: &Value) -> Vec<Value> {
    serde_json::from_str::<Value>(e["attempts_detail"].as_str().unwrap()).unwrap().as_array().unwrap().clone()
}

#[test]
fn calls_that_may_have_been_billed_are_priced_as_estimates_never_as_free() {
    let team = nonce("ledger-estimated");
    // No answer in time; the connection lost before an answer; a 2xx the gateway cannot
    // read. Each reached the provider, which may bill it: the prompt is estimated (and the
    // unreadable body's bytes as output), never $0.
    let garbled_output = (mock_provider::GARBLED_BODY.len() as u64).div_ceil(4);
    let mut total = 0;
    for (directive, code, output) in [
        ("first_byte_delay_ms=2600", "upstream_timeout", 0),
        ("hang_up=1", "upstream_failed", 0),
        ("garbled=1", "upstream_failed", garbled_output),
    ] {
        let text = format!("{} [mock:{directive}]", nonce("estimated"));
        let r = gateway().chat(&ask("single", &text, false), &[("x-gateway-team", &team)]);
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (502, Some(code)), "{}", r.text());
        let e = event(r.header("x-gateway-request-id").unwrap());
        let expected = cost("us-1", prompt_estimate(&text), output);
        assert_eq!(e["outcome"], "error", "{e}");
        assert_eq!(e["cost_micros"].as_u64(), Some(expected), "{directive}: {e}");
        assert_eq!(e["cost_estimated_micros"].as_u64(), Some(expected), "{directive}: all of it estimated: {e}");
        assert_eq!(
            (e["input_tokens"].as_u64(), e["output_tokens"].as_u64()),
            (Some(prompt_estimate(&text)), Some(output))
        );
        let attempts = attempts_of(&e);
        assert_eq!(attempts[0]["cost_micros"].as_u64(), Some(expected), "{attempts:?}");
        assert_eq!(attempts[0]["cost_estimated_micros"].as_u64(), Some(expected), "{attempts:?}");
        total += expected;
    }
    // An error status is not billed by providers: $0, and not an estimate.
    let r = gateway()
        .chat(&ask("single", &format!("{} [mock:status=500]", nonce("refused")), false), &[("x-gateway-team", &team)]);
    assert_eq!(r.status, 502);
    let e = event(r.header("x-gateway-request-id").unwrap());
    assert_eq!((e["cost_micros"].as_u64(), e["cost_estimated_micros"].as_u64()), (Some(0), Some(0)), "{e}");
    assert_eq!(attempts_of(&e)[0]["cost_micros"].as_u64(), Some(0));

    // The rollup and the breakdown carry the estimated share.
    assert_eq!(wait_count(&format!("SELECT SUM(requests) AS n FROM cost_daily WHERE team = '{team}'"), 4), 4);
    let r = gateway().admin("GET", &format!("/admin/costs?group_by=team&team={team}"), None);
    let v = r.json();
    let row = &v["rows"][0];
    assert_eq!((row["cost_micros"].as_u64(), row["cost_estimated_micros"].as_u64()), (Some(total), Some(total)), "{v}");
    assert_eq!(row["estimated_pct"], "100.00", "{v}");
    assert_eq!(v["total"]["cost_estimated_micros"].as_u64(), Some(total), "{v}");
}

#[test]
fn a_failed_attempts_reported_tokens_are_priced_into_the_event() {
    let team = nonce("ledger-failed-priced");
    // Anthropic reports 77 prompt tokens and 1 output token in message_start, then fails
    // before any content; us-1 answers. Both calls cost money.
    support::gateway::mock().script(mock_provider::Script {
        tag: "claude-1".into(),
        needle: team.clone(),
        times: None,
        behaviour: mock_provider::Behaviour::parse("cut_after=0,error_code=overloaded_error,prompt_tokens=77").unwrap(),
    });
    let text = format!("{team} [mock:prompt_tokens=10,completion_tokens=5]");
    let body = json!({"model": "claude-then-openai", "messages": [{"role": "user", "content": text}], "stream": true});
    let s = gateway().chat_stream(&body, &[("x-gateway-team", &team)]);
    assert_eq!(s.header("x-gateway-deployment"), Some("us-1"));
    let id = s.header("x-gateway-request-id").unwrap().to_string();
    let _ = s.collect();
    let e = event(&id);
    let failed = cost("claude-1", 77, 1);
    let answered = cost("us-1", 10, 5);
    assert_eq!(e["cost_micros"].as_u64(), Some(failed + answered), "{e}");
    assert_eq!(e["cost_estimated_micros"].as_u64(), Some(0), "all of it reported: {e}");
    assert_eq!((e["input_tokens"].as_u64(), e["output_tokens"].as_u64()), (Some(87), Some(6)), "{e}");
    let attempts = attempts_of(&e);
    assert_eq!(
        (attempts[0]["cost_micros"].as_u64(), attempts[1]["cost_micros"].as_u64()),
        (Some(failed), Some(answered)),
        "{attempts:?}"
    );
}

#[test]
fn failed_requests_count_against_a_hard_budget() {
    // Team `failcap` may spend $0.0001; a timed-out request's prompt alone is estimated
    // above that. Before, failed requests cost $0 and a hard budget never stopped them.
    let text = format!("{} {} [mock:first_byte_delay_ms=2600]", nonce("failcap"), "a long prompt ".repeat(30));
    let statuses: Vec<u16> =
        (0..3).map(|_| gateway().chat(&ask("single", &text, false), &[("x-gateway-team", "failcap")]).status).collect();
    assert_eq!(statuses, [502, 402, 402]);
    let spent = cost("us-1", prompt_estimate(&text), 0);
    assert!(spent > 100);
    // The cron's snapshot of the month, from D1's rollup, counts it too.
    assert_eq!(wait_count("SELECT SUM(requests) AS n FROM cost_daily WHERE team = 'failcap'", 1), 1);
    gateway().run_cron();
    let month =
        gateway().d1("SELECT day FROM cost_daily WHERE team = 'failcap'")[0]["day"].as_str().unwrap()[..7].to_string();
    let snapshot: Value = serde_json::from_str(&gateway().kv_get(&format!("spend:{month}")).unwrap()).unwrap();
    assert_eq!(snapshot["teams"]["failcap"].as_u64(), Some(spent), "{snapshot}");
}

/// 112 characters, in 8 pieces: a stream cut after 4 has relayed 56 of them, 14 tokens.
const LONG_REPLY: &str =
    "The quick brown fox jumps over the lazy dog while the patient gateway counts every token that reaches its client";

#[test]
fn a_cut_stream_is_billed_for_what_reached_the_client_whatever_the_provider_said() {
    assert_eq!(LONG_REPLY.len(), 112);
    // Anthropic's message_start says 1 output token; Gemini's chunks before the last say
    // none. 14 tokens of text had reached the client when the stream was cut.
    for (alias, deployment, reported_output) in [("claude", "claude-1", 1), ("gemini", "gemini", 0)] {
        let team = nonce(&format!("ledger-cut-{alias}"));
        let text = format!("{team} [mock:chunks=8,cut_after=4,prompt_tokens=200,reply={LONG_REPLY}]");
        let body = json!({"model": alias, "stream": true, "messages": [{"role": "user", "content": text}]});
        let s = gateway().chat_stream(&body, &[("x-gateway-team", &team)]);
        if s.status != 200 {
            let status = s.status;
            panic!("{alias}: {status} {}", String::from_utf8_lossy(&s.collect().unwrap_or_default()));
        }
        assert_eq!(s.header("x-gateway-deployment"), Some(deployment));
        let id = s.header("x-gateway-request-id").unwrap().to_string();
        let _ = s.collect();
        let e = event(&id);
        assert_eq!(e["outcome"], "cut", "{alias}: {e}");
        assert_eq!((e["input_tokens"].as_u64(), e["output_tokens"].as_u64()), (Some(200), Some(14)), "{alias}: {e}");
        assert_eq!(e["cost_micros"].as_u64(), Some(cost(deployment, 200, 14)), "{alias}: {e}");
        let estimated = cost(deployment, 200, 14) - cost(deployment, 200, reported_output);
        assert_eq!(e["cost_estimated_micros"].as_u64(), Some(estimated), "{alias}: the part above the report: {e}");
    }
}
