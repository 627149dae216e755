//! End to end through workerd: the chat completions path, streaming, errors, keys,
//! caller location and the residency receipt.

mod support;

use mock_provider::{Behaviour, Script};
use serde_json::{json, Value};
use support::gateway::{gateway, mock, untrusted_gateway, KEY, MAX_BODY, NARROW_KEY, PROVIDER_KEY, SECRET_KEY};
use support::http::{self, sse_data_lines};
use support::nonce;

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn ask_stream(model: &str, text: &str) -> Value {
    let mut body = ask(model, text);
    body["stream"] = json!(true);
    body
}

fn script(tag: &str, needle: &str, spec: &str) {
    mock().script(Script {
        tag: tag.into(),
        needle: needle.into(),
        times: None,
        behaviour: Behaviour::parse(spec).unwrap(),
    });
}

fn tags_called(needle: &str) -> Vec<String> {
    mock().requests_matching(needle).into_iter().map(|r| r.tag).collect()
}

fn assert_error(r: &http::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status, status, "body: {}", r.text());
    assert!(r.header("content-type").unwrap_or("").starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "body: {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["type"].is_string());
    v
}

fn without_volatile(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("id");
    v.as_object_mut().unwrap().remove("created");
    v
}

#[test]
fn healthz_needs_no_key() {
    let r = http::send("GET", &gateway().url("/healthz"), &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert!(r.header("x-gateway-request-id").is_some_and(|id| id.len() == 32));
}

#[test]
fn non_streamed_answer_is_the_upstreams() {
    let n = nonce("plain");
    let r = gateway().chat(&ask("single", &n), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    for (h, v) in [
        ("x-gateway-deployment", "us-1"),
        ("x-gateway-provider", "openai"),
        ("x-gateway-region", "us-east-1"),
        ("x-gateway-jurisdiction", "us"),
        ("x-gateway-rule", "default"),
        ("x-gateway-attempts", "1"),
    ] {
        assert_eq!(r.header(h), Some(v), "{h}");
    }
    // The same request straight to the upstream, with the deployment's model name.
    let direct = http::send(
        "POST",
        &format!("{}/us-1/v1/chat/completions", mock().base_url()),
        &[("content-type", "application/json")],
        Some(ask("model-us-1", &n).to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(without_volatile(r.json()), without_volatile(direct.json()));
    let sent = mock().requests_matching(&n);
    assert_eq!(sent[0].json()["model"], "model-us-1", "the alias is replaced by the deployment's model");
}

#[test]
fn an_openai_upstream_gets_the_clients_bytes_with_only_the_model_changed() {
    let n = nonce("as-sent");
    let url = gateway().url("/v1/chat/completions");
    let auth = format!("Bearer {KEY}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let body = format!(
        r#"{{ "x_z" : [1, 2 ], "messages":[{{"role":"user","content":"{n} caf\u00e9 \"q\""}}],"model":"single","seed":18446744073709551616,"temperature":0.50 }}"#
    );
    let r = http::send("POST", &url, &headers, Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = format!(
        r#"{{"x_z":[1, 2 ],"messages":[{{"role":"user","content":"{n} caf\u00e9 \"q\""}}],"model":"model-us-1","seed":18446744073709551616,"temperature":0.50}}"#
    );
    assert_eq!(mock().requests_matching(&n)[0].body, expected);

    let n = nonce("as-sent-stream");
    let body = format!(
        r#"{{"stream":true,"stream_options":{{"x":1}},"model":"single","messages":[{{"role":"user","content":"{n}"}}],"n":1e0}}"#
    );
    let r = http::send("POST", &url, &headers, Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = format!(
        r#"{{"stream":true,"stream_options":{{"include_usage":true,"x":1}},"model":"model-us-1","messages":[{{"role":"user","content":"{n}"}}],"n":1e0}}"#
    );
    assert_eq!(mock().requests_matching(&n)[0].body, expected);
}

#[test]
fn streams_arrive_incrementally_and_end_with_done() {
    let n = nonce("stream");
    let mut s = gateway().chat_stream(&ask_stream("single", &format!("{n} [mock:chunks=8,chunk_delay_ms=150]")), &[]);
    assert_eq!(s.status, 200);
    assert!(s.header("content-type").unwrap().starts_with("text/event-stream"));
    assert_eq!(s.header("x-gateway-deployment"), Some("us-1"));
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    while let Some((at, chunk)) = s.next_chunk().unwrap() {
        arrivals.push(at);
        body.extend_from_slice(&chunk);
    }
    let first_content = arrivals.first().unwrap();
    let last = arrivals.last().unwrap();
    // Eight chunks 150 ms apart: a buffered body would arrive all at once.
    assert!(arrivals.len() >= 4, "arrived in {} pieces", arrivals.len());
    assert!(
        last.duration_since(*first_content).as_millis() >= 700,
        "first piece came {:?} before the last",
        last.duration_since(*first_content)
    );
    let data = sse_data_lines(&String::from_utf8(body).unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert!(
        chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "the usage chunk the gateway asked for is hidden"
    );
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains(&n), "{text}");
    assert_eq!(mock().requests_matching(&n)[0].json()["stream_options"]["include_usage"], true);
}

#[test]
fn a_client_that_asks_for_usage_gets_the_usage_chunk() {
    let n = nonce("usage");
    let mut body = ask_stream("single", &format!("{n} [mock:prompt_tokens=11,completion_tokens=7]"));
    body["stream_options"] = json!({"include_usage": true});
    let s = gateway().chat_stream(&body, &[]);
    let status = s.status;
    let text = String::from_utf8(s.collect().unwrap()).unwrap();
    assert_eq!(status, 200, "{text}");
    let data = sse_data_lines(&text);
    assert!(data.len() >= 2, "{text}");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    assert_eq!(usage["usage"]["completion_tokens"], 7);
}

#[test]
fn a_cut_stream_ends_with_an_error_event_not_a_fake_finish() {
    let n = nonce("cut");
    let s = gateway().chat_stream(&ask_stream("single", &format!("{n} [mock:chunks=6,cut_after=3]")), &[]);
    assert_eq!(s.status, 200);
    let data = sse_data_lines(&String::from_utf8(s.collect().unwrap()).unwrap());
    assert_ne!(data.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut");
    assert!(last["error"]["message"].as_str().unwrap().contains("us-1"));
    let contents = data.iter().filter(|d| d.contains("\"content\":\"") && !d.contains("\"content\":\"\"")).count();
    assert_eq!(contents, 3, "the three chunks before the cut are delivered");
    assert!(!data.iter().any(|d| d.contains("\"finish_reason\":\"stop\"")));
}

#[test]
fn errors_have_the_openai_shape_and_status() {
    let g = gateway();
    let url = g.url("/v1/chat/completions");
    let auth = format!("Bearer {KEY}");
    let with_key = [("authorization", auth.as_str()), ("content-type", "application/json")];

    let r = http::send("POST", &url, &with_key, Some(b"{not json")).unwrap();
    assert_error(&r, 400, "invalid_json");
    let r = http::send("POST", &url, &with_key, Some(br#"{"model":"single"}"#)).unwrap();
    assert!(assert_error(&r, 400, "missing_field")["error"]["message"].as_str().unwrap().contains("messages"));
    let r = http::send("POST", &url, &with_key, Some(br#"{"model":"single","messages":[{"role":"bot"}]}"#)).unwrap();
    assert_error(&r, 400, "invalid_request");
    let deep =
        format!(r#"{{"model":"single","messages":[{{"role":"user"}}],"x":{}{}}}"#, "[".repeat(500), "]".repeat(500));
    let r = http::send("POST", &url, &with_key, Some(deep.as_bytes())).unwrap();
    assert!(assert_error(&r, 400, "invalid_json")["error"]["message"].as_str().unwrap().contains("`x` is nested"));

    let body = ask("single", "hi").to_string();
    let r = http::send("POST", &url, &[("content-type", "application/json")], Some(body.as_bytes())).unwrap();
    assert_error(&r, 401, "invalid_api_key");
    let r = http::send("POST", &url, &[("authorization", "Bearer nope")], Some(body.as_bytes())).unwrap();
    assert_error(&r, 401, "invalid_api_key");

    let r = g.chat(&ask("no-such-alias", "hi"), &[]);
    assert!(assert_error(&r, 404, "model_not_found")["error"]["message"].as_str().unwrap().contains("no-such-alias"));

    let big = ask("single", &"x".repeat(MAX_BODY + 1));
    let r = g.chat(&big, &[]);
    assert!(assert_error(&r, 413, "request_too_large")["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&MAX_BODY.to_string()));

    let r = http::send("GET", &url, &with_key, None).unwrap();
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = http::send("POST", &g.url("/v1/models"), &with_key, Some(b"{}")).unwrap();
    assert_error(&r, 405, "method_not_allowed");
    let r = http::send("GET", &g.url("/v2/nothing"), &with_key, None).unwrap();
    assert_error(&r, 404, "not_found");
}

#[test]
fn a_chunked_body_over_the_limit_is_refused_too() {
    let g = gateway();
    let auth = format!("Bearer {KEY}");
    let payload = ask("single", &"y".repeat(MAX_BODY)).to_string();
    let mut chunked = Vec::new();
    for piece in payload.as_bytes().chunks(4096) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = http::send(
        "POST",
        &g.url("/v1/chat/completions"),
        &[("authorization", &auth), ("transfer-encoding", "chunked")],
        Some(&chunked),
    )
    .unwrap();
    assert_error(&r, 413, "request_too_large");
}

#[test]
fn upstream_500_is_a_clean_gateway_error_that_names_the_deployment_and_not_the_key() {
    let n = nonce("five-hundred");
    script("keyed", &n, "status=500");
    let r = gateway().chat(&ask("keyed", &n), &[]);
    let v = assert_error(&r, 502, "upstream_failed");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("keyed"), "{message}");
    assert!(!r.text().contains("PROVIDERSECRET"));
    let sent = mock().requests_matching(&n);
    assert_eq!(sent[0].header("authorization"), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
}

#[test]
fn upstream_401_does_not_leak_the_provider_key() {
    let n = nonce("bad-provider-key");
    script("keyed", &n, "status=401");
    let r = gateway().chat(&ask("keyed", &n), &[]);
    let v = assert_error(&r, 502, "upstream_auth_failed");
    assert!(v["error"]["message"].as_str().unwrap().contains("keyed"));
    assert!(!r.text().contains("PROVIDERSECRET"));
    assert_eq!(tags_called(&n), vec!["keyed"], "a credential failure is not retried elsewhere");
}

#[test]
fn an_unreachable_upstream_is_a_502() {
    let r = gateway().chat(&ask("dead", "hi"), &[]);
    let v = assert_error(&r, 502, "upstream_failed");
    assert!(v["error"]["message"].as_str().unwrap().contains("dead:- unreachable"), "{v}");
}

#[test]
fn a_deployment_without_its_provider_key_is_never_called_and_the_operator_is_told() {
    let n = nonce("unset");
    let r = gateway().chat(&ask("unset", &n), &[]);
    let v = assert_error(&r, 503, "upstream_unavailable");
    assert!(v["error"]["message"].as_str().unwrap().contains("unset-secret (its secret is not set)"), "{v}");
    assert_eq!(r.header("x-gateway-skipped"), Some("unset-secret (its secret is not set)"));
    assert!(tags_called(&n).is_empty());
    // Said at config load too, naming the secret.
    let log = gateway().log_text();
    assert!(
        log.contains("deployment `unset-secret`: api_key_secret names NEVER_SET_PROVIDER_KEY, which is not set"),
        "{}",
        gateway().log_tail()
    );
}

#[test]
fn keys_from_secrets_and_alias_allow_lists() {
    let g = gateway();
    let body = ask("single", &nonce("secret-key")).to_string();
    let url = g.url("/v1/chat/completions");
    let auth = format!("Bearer {SECRET_KEY}");
    let r = http::send("POST", &url, &[("authorization", &auth)], Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Anthropic SDKs send the key as x-api-key.
    let r = http::send("POST", &url, &[("x-api-key", KEY)], Some(body.as_bytes())).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    let narrow = format!("Bearer {NARROW_KEY}");
    let r = http::send("POST", &url, &[("authorization", &narrow)], Some(ask("chat", "hi").to_string().as_bytes()))
        .unwrap();
    assert_error(&r, 404, "model_not_found");
    let r = http::send("GET", &g.url("/v1/models"), &[("authorization", &narrow)], None).unwrap();
    let v = r.json();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["single"]);
}

#[test]
fn models_lists_the_configured_aliases() {
    let r =
        http::send("GET", &gateway().url("/v1/models"), &[("authorization", &format!("Bearer {KEY}"))], None).unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<String> =
        v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    let configured: Vec<String> = support::gateway::test_config()["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, configured);
    assert_eq!(v["data"][0]["object"], "model");
    let r = http::send("GET", &gateway().url("/v1/models"), &[], None).unwrap();
    assert_error(&r, 401, "invalid_api_key");
}

#[test]
fn trusted_geo_headers_place_the_caller() {
    let n = nonce("geo-de");
    let r = gateway().chat(&ask("chat", &n), &[("x-gateway-geo-country", "DE"), ("x-gateway-geo-continent", "EU")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-rule"), Some("eu-callers"));
    assert_eq!(r.header("x-gateway-jurisdiction"), Some("eu"));
    assert_eq!(tags_called(&n), vec!["eu-1"]);
}

#[test]
fn geo_headers_are_ignored_without_trust() {
    let n = nonce("geo-untrusted");
    let r = untrusted_gateway()
        .chat(&ask("chat", &n), &[("x-gateway-geo-country", "DE"), ("x-gateway-geo-continent", "EU")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(r.header("x-gateway-rule"), Some("eu-callers"), "the header must not place the caller");
    assert_ne!(tags_called(&n), vec!["eu-1"]);
    // request.cf still counts.
    let n = nonce("cf-untrusted");
    let cf = r#"{"country":"DE","continent":"EU","isEUCountry":"1","colo":"FRA","latitude":"50.1","longitude":"8.7"}"#;
    let r = untrusted_gateway().chat(&ask("chat", &n), &[("mf-cf-blob", cf)]);
    assert_eq!(r.header("x-gateway-rule"), Some("eu-callers"));
    assert_eq!(tags_called(&n), vec!["eu-1"]);
}

#[test]
fn request_cf_routes_to_the_nearest_allowed_region() {
    // Paris is nearer eu-2, but Frankfurt's eu-1 is within the distance band (1000 km), so
    // the alias's own order decides; Tokyo and Singapore are 5,300 km apart.
    let cases = [
        (
            r#"{"country":"FR","continent":"EU","isEUCountry":"1","colo":"CDG","latitude":"48.85","longitude":"2.35"}"#,
            "eu-callers",
            "eu-1",
        ),
        (
            r#"{"country":"JP","continent":"AS","isEUCountry":"0","colo":"NRT","latitude":"35.6","longitude":"139.7"}"#,
            "apac-callers",
            "jp-1",
        ),
        (
            // As numbers, which `request.cf` may also carry.
            r#"{"country":"SG","continent":"AS","isEUCountry":"0","colo":"SIN","latitude":1.3,"longitude":103.8}"#,
            "apac-callers",
            "sg-1",
        ),
        (
            r#"{"country":"US","continent":"NA","isEUCountry":"0","colo":"IAD","latitude":"38.9","longitude":"-77.0"}"#,
            "default",
            "us-1",
        ),
    ];
    for (cf, rule, deployment) in cases {
        let n = nonce("cf");
        let r = gateway().chat(&ask("chat", &n), &[("mf-cf-blob", cf)]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            (r.header("x-gateway-rule"), r.header("x-gateway-deployment")),
            (Some(rule), Some(deployment)),
            "{cf}"
        );
        assert_eq!(tags_called(&n), vec![deployment]);
    }
}

#[test]
fn a_compliance_tag_narrows_a_us_caller_to_the_eu() {
    let n = nonce("gdpr");
    let r = gateway().chat(&ask("chat", &n), &[("x-gateway-geo-country", "US"), ("x-gateway-compliance", "gdpr")]);
    assert_eq!(r.header("x-gateway-rule"), Some("gdpr-tag"), "{} {:?}", r.text(), r.headers);
    assert_eq!(r.header("x-gateway-jurisdiction"), Some("eu"));
    let r = gateway().chat(&ask("chat", &n), &[("x-gateway-compliance", "hipaa")]);
    assert_error(&r, 400, "unknown_compliance_tag");
}

#[test]
fn fallback_stays_inside_the_allowed_jurisdictions() {
    let n = nonce("eu-529");
    script("eu-1", &n, "status=529");
    let r = gateway().chat(&ask("chat", &n), &[("x-gateway-geo-country", "DE")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-deployment"), Some("eu-2"));
    assert_eq!(r.header("x-gateway-attempts"), Some("2"));
    assert_eq!(r.header("x-gateway-tried"), Some("eu-1:529 overloaded, eu-2:200 ok"));

    let n = nonce("all-eu-529");
    script("eu-1", &n, "status=529");
    script("eu-2", &n, "status=529");
    let r = gateway().chat(&ask("chat", &n), &[("x-gateway-geo-country", "DE")]);
    // Busy, retry: not "can never be served here".
    let v = assert_error(&r, 503, "upstream_overloaded");
    assert!(v["error"]["message"].as_str().unwrap().contains("residency rule `eu-callers`"), "{v}");
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("x-gateway-rule"), Some("eu-callers"));
    assert_eq!(tags_called(&n), vec!["eu-1", "eu-2"], "no deployment outside the EU was called");
}

#[test]
fn a_400_from_the_upstream_does_not_fall_back() {
    let n = nonce("bad-request");
    script("eu-1", &n, "status=400");
    let r = gateway().chat(&ask("chat", &n), &[("x-gateway-geo-country", "DE")]);
    assert_error(&r, 400, "upstream_bad_request");
    assert_eq!(tags_called(&n), vec!["eu-1"]);
}

#[test]
fn a_slow_first_byte_falls_back_and_so_does_a_stream_that_dies_before_content() {
    let n = nonce("slow");
    script("eu-1", &n, "first_byte_delay_ms=4000");
    let r = gateway().chat(&ask("chat", &n), &[("x-gateway-geo-country", "DE")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-tried"), Some("eu-1:- timeout, eu-2:200 ok"));

    // A stream from eu-1 scripted with `fault`: it ends with [DONE]; its x-gateway-tried
    // and x-gateway-deployment.
    let stream_with = |label: &str, fault: &str| {
        let n = nonce(label);
        script("eu-1", &n, fault);
        let s = gateway().chat_stream(&ask_stream("chat", &n), &[("x-gateway-geo-country", "DE")]);
        assert_eq!(s.status, 200);
        let seen =
            (s.header("x-gateway-tried").map(str::to_string), s.header("x-gateway-deployment").map(str::to_string));
        let data = sse_data_lines(&String::from_utf8(s.collect().unwrap()).unwrap());
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        seen
    };
    // A stream's deadline is a timer of the gateway's, not the runtime's signal.
    let (tried, _) = stream_with("slow-stream", "first_byte_delay_ms=4000");
    assert_eq!(tried.as_deref(), Some("eu-1:- timeout, eu-2:200 ok"));
    let (_, deployment) = stream_with("dies-early", "cut_after=0");
    assert_eq!(deployment.as_deref(), Some("eu-2"));
}

#[test]
fn migrations_are_applied_to_local_d1() {
    let tables: Vec<String> = gateway()
        .d1("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    for t in ["audit_log", "cost_daily", "cost_events"] {
        assert!(tables.contains(&t.to_string()), "{t} missing from {tables:?}");
    }
}
