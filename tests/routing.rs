//! End to end through workerd: routing strategies, capability routing, the circuit
//! breaker, Retry-After and context-length fallback.

mod support;

use mock_provider::{Behaviour, Script};
use serde_json::{json, Value};
use std::time::Duration;
use support::gateway::{gateway, mock};
use support::nonce;

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn script(tag: &str, needle: &str, spec: &str, times: Option<u32>) {
    mock().script(Script { tag: tag.into(), needle: needle.into(), times, behaviour: Behaviour::parse(spec).unwrap() });
}

#[test]
fn a_weighted_90_10_alias_over_200_requests_lands_within_tolerance() {
    let mut b = 0;
    for i in 0..200 {
        let r = gateway().chat(&ask("ab", &format!("split {i}")), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        if r.header("x-gateway-deployment") == Some("w-b") {
            b += 1;
        }
    }
    // Binomial(200, 0.1): mean 20, standard deviation 4.2; four deviations either side.
    assert!((4..=37).contains(&b), "w-b answered {b} of 200");
}

#[test]
fn a_sticky_weighted_alias_keeps_each_user_on_one_deployment() {
    for user in ["alice", "bob", "carol"] {
        let picks: Vec<String> = (0..5)
            .map(|_| {
                let mut body = ask("ab-sticky", "hi");
                body["user"] = json!(user);
                gateway().chat(&body, &[]).header("x-gateway-deployment").unwrap().to_string()
            })
            .collect();
        assert!(picks.iter().all(|p| p == &picks[0]), "{user}: {picks:?}");
    }
}

#[test]
fn a_failing_deployment_is_skipped_then_probed_after_its_cool_down() {
    let n = nonce("breaker");
    script("flaky", &n, "status=503", None);
    // Two failures (its threshold) trip the breaker; each request still succeeds on `steady`.
    for _ in 0..2 {
        let r = gateway().chat(&ask("breaker", &n), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-gateway-tried"), Some("flaky:503 overloaded, steady:200 ok"));
    }
    let r = gateway().chat(&ask("breaker", &n), &[]);
    assert_eq!(r.header("x-gateway-tried"), Some("steady:200 ok"), "skipped while cooling down");
    assert!(r.header("x-gateway-skipped").unwrap().contains("flaky"));
    assert_eq!(mock().requests_matching(&n).iter().filter(|r| r.tag == "flaky").count(), 2);

    // After the cool-down one request probes it; it has recovered, so it serves again.
    mock().clear_scripts();
    std::thread::sleep(Duration::from_millis(2700));
    let r = gateway().chat(&ask("breaker", &n), &[]);
    assert_eq!(r.header("x-gateway-tried"), Some("flaky:200 ok"));
    let r = gateway().chat(&ask("breaker", &n), &[]);
    assert_eq!(r.header("x-gateway-deployment"), Some("flaky"));
}

#[test]
fn retry_after_is_honoured_on_the_same_deployment() {
    let n = nonce("retry-after");
    script("solo", &n, "status=429,retry_after=1", Some(1));
    let started = std::time::Instant::now();
    let r = gateway().chat(&ask("solo", &n), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(950), "waited for Retry-After");
    assert_eq!(r.header("x-gateway-attempts"), Some("2"));
    assert_eq!(r.header("x-gateway-tried"), Some("solo:429 rate_limited, solo:200 ok"));
}

#[test]
fn a_context_length_error_falls_back_only_to_a_larger_window() {
    let n = nonce("context");
    script("ctx-small", &n, "status=400,error_code=context_length_exceeded", None);
    let r = gateway().chat(&ask("ctx", &n), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-tried"), Some("ctx-small:400 context_length, ctx-big:200 ok"));
    let tags: Vec<String> = mock().requests_matching(&n).into_iter().map(|r| r.tag).collect();
    assert_eq!(tags, vec!["ctx-small", "ctx-big"], "the smaller window was not tried");

    // A prompt too long for every window but the big one never reaches the small ones.
    let n = nonce("long-prompt");
    let long = format!("{n} {}", "word ".repeat(7000));
    let r = gateway().chat(&ask("ctx", &long), &[]);
    assert_eq!(r.header("x-gateway-deployment"), Some("ctx-big"));
    let tags: Vec<String> = mock().requests_matching(&n).into_iter().map(|r| r.tag).collect();
    assert_eq!(tags, vec!["ctx-big"]);
}

#[test]
fn images_go_only_to_vision_deployments() {
    let n = nonce("vision");
    let body = json!({"model": "vision", "messages": [{"role": "user", "content": [
        {"type": "text", "text": n},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]}]});
    let r = gateway().chat(&body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-deployment"), Some("seeing"));
    let r = gateway().chat(&ask("vision", "no images"), &[]);
    assert_eq!(r.header("x-gateway-deployment"), Some("text-only"), "without images the alias order stands");
}

#[test]
fn a_litellm_config_imports_as_a_draft_with_notes() {
    let litellm = json!({
        "model_list": [
            {"model_name": "fast-classify", "litellm_params": {"model": "anthropic/claude-haiku-4-5-20251001",
             "api_key": "os.environ/ANTHROPIC_API_KEY", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000005}},
            {"model_name": "generate", "litellm_params": {"model": "bedrock/anthropic.claude-sonnet-4-v1", "aws_region_name": "eu-central-1"}}
        ],
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2}
    });
    let r = gateway().admin("POST", "/admin/config/import/litellm", Some(&litellm));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["config"]["deployments"][0]["price"], json!({"input": "1", "output": "5"}));
    assert_eq!(v["config"]["deployments"][1]["jurisdiction"], "eu");
    assert_eq!(v["config"]["limits"]["max_attempts"], 3);
    assert!(v["config"]["residency"]["rules"].is_array(), "the current residency rules are kept");
    assert_eq!(v["valid"], false);
    assert!(v["validation_error"].as_str().unwrap().len() > 10);
    assert!(v["notes"].to_string().contains("add a price"));
    // Nothing was applied.
    assert!(gateway().admin("GET", "/admin/config", None).json()["config"]["aliases"].to_string().contains("\"chat\""));
}

#[test]
fn models_show_each_aliases_capabilities() {
    let r = support::http::send(
        "GET",
        &gateway().url("/v1/models"),
        &[("authorization", &format!("Bearer {}", support::gateway::KEY))],
        None,
    )
    .unwrap();
    let v = r.json();
    let of =
        |name: &str| v["data"].as_array().unwrap().iter().find(|m| m["id"] == name).unwrap()["capabilities"].clone();
    assert_eq!(of("ctx")["context_window"], 200000);
    assert_eq!(of("vision")["vision"], true, "one of its deployments has vision");
    assert_eq!((of("single")["tools"].as_bool(), of("single")["json_mode"].as_bool()), (Some(true), Some(true)));
}

#[test]
fn a_long_answer_that_times_out_does_not_open_the_circuit_for_everyone() {
    // A non-streamed request that asks for a long answer waits for all of it: its timeout
    // is the client's choice, not the deployment failing like a 503.
    let n = nonce("long-answer");
    script("slowpoke", &n, "first_byte_delay_ms=3000", None);
    let mut body = ask("long", &n);
    body["max_tokens"] = json!(32000);
    let r = gateway().chat(&body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-tried"), Some("slowpoke:- timeout, steady:200 ok"));
    let r = gateway().chat(&ask("long", &nonce("next-tenant")), &[]);
    assert_eq!(r.header("x-gateway-deployment"), Some("slowpoke"), "skipped: {:?}", r.header("x-gateway-skipped"));
}
