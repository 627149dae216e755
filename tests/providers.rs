//! End to end through workerd: OpenAI-format requests answered by each provider kind via
//! the mock, speaking that provider's wire format.

mod support;

use llm_edge_gateway::providers::bedrock::sigv4::{self, AmzDate, Payload, SigningParams};
use mock_provider::{Behaviour, LoggedRequest, Script};
use serde_json::{json, Value};
use support::gateway::{
    gateway, mock, root, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AZURE_API_KEY, BEDROCK_API_KEY,
    GCP_TOKEN_ONCE_TAG, GEMINI_API_KEY, MISTRAL_API_KEY, PROVIDER_KEY,
};
use support::http::sse_data_lines;
use support::nonce;

fn sent(needle: &str) -> Value {
    let all = mock().requests_matching(needle);
    assert_eq!(all.len(), 1, "one upstream request for {needle}");
    all[0].json()
}

#[test]
fn anthropic_answers_an_openai_request() {
    let n = nonce("claude-plain");
    let body = json!({"model": "claude", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": n}
    ], "max_tokens": 50});
    let r = gateway().chat(&body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-provider"), Some("anthropic"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains(&n));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000, "created is the time the gateway received it");

    let upstream = mock().requests_matching(&n);
    assert_eq!(upstream[0].path, "/claude-1/v1/messages");
    assert_eq!(upstream[0].header("x-api-key"), Some(PROVIDER_KEY));
    assert!(upstream[0].header("anthropic-version").is_some());
    let up = upstream[0].json();
    assert_eq!(up["system"], "Be brief.", "the system message is hoisted");
    assert_eq!(up["model"], "model-claude-1");
    assert_eq!(up["max_tokens"], 50);
}

#[test]
fn anthropic_streams_as_openai_chunks() {
    let n = nonce("claude-stream");
    let body = json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": format!("{n} [mock:chunks=5,prompt_tokens=12,completion_tokens=5]")}]});
    let s = gateway().chat_stream(&body, &[]);
    assert_eq!(s.status, 200);
    let data = sse_data_lines(&String::from_utf8(s.collect().unwrap()).unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains(&n));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(12), Some(5)));
    assert_eq!(sent(&n)["stream"], true);
}

#[test]
fn a_tool_call_round_trip_through_anthropic() {
    let n = nonce("claude-tool");
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!({"model": "claude", "tools": tools, "tool_choice": "auto",
        "messages": [{"role": "user", "content": format!("{n} weather in Paris? [mock:tool_call=get_weather,tool_args={{\"city\": \"Paris\"}}]")}]});
    let r = gateway().chat(&ask, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let up = sent(&n);
    assert_eq!(up["tools"][0]["name"], "get_weather");
    assert_eq!(up["tool_choice"]["type"], "auto");

    // The tool's result goes back, as the client's next turn.
    let n2 = nonce("claude-tool-result");
    let follow_up = json!({"model": "claude", "tools": tools, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": format!("18C and sunny {n2}")}
    ]});
    let r = gateway().chat(&follow_up, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let up = sent(&n2);
    let messages = up["messages"].as_array().unwrap();
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[1]["content"][0]["id"], call["id"]);
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["tool_use_id"], call["id"]);
}

#[test]
fn an_image_message_reaches_anthropic_as_an_image_block() {
    let n = nonce("claude-image");
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": format!("what is this? {n}")},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    ]}]});
    let r = gateway().chat(&body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let content = sent(&n)["messages"][0]["content"].clone();
    assert_eq!(content[1]["source"], json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}));
    assert_eq!(content[2]["source"], json!({"type": "url", "url": "https://example.com/cat.jpg"}));
}

#[test]
fn a_field_anthropic_cannot_honour_is_a_400_naming_it() {
    let n = nonce("claude-n");
    let body = json!({"model": "claude", "n": 2, "messages": [{"role": "user", "content": n}]});
    let r = gateway().chat(&body, &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("`n`") && message.contains("anthropic"), "{message}");
    assert!(mock().requests_matching(&n).is_empty(), "nothing was sent upstream");
}

#[test]
fn anthropic_529_falls_back_to_another_provider() {
    let n = nonce("claude-529");
    mock().script(Script {
        tag: "claude-1".into(),
        needle: n.clone(),
        times: None,
        behaviour: Behaviour::parse("status=529").unwrap(),
    });
    let r = gateway().chat(&json!({"model": "claude-then-openai", "messages": [{"role": "user", "content": n}]}), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-tried"), Some("claude-1:529 overloaded, us-1:200 ok"));
    assert_eq!(r.header("x-gateway-provider"), Some("openai"));
}

/// The wire path of deployment `bedrock-eu`'s model, `eu.anthropic.claude-sonnet-4-5-20250929-v1:0`.
const BEDROCK_EU_MODEL: &str = "eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0";

const GERMAN: [(&str, &str); 2] = [("x-gateway-geo-country", "DE"), ("x-gateway-geo-continent", "EU")];

fn one_upstream(needle: &str) -> LoggedRequest {
    let all = mock().requests_matching(needle);
    assert_eq!(all.len(), 1, "one upstream request for {needle}");
    all.into_iter().next().unwrap()
}

/// Unix seconds of an `x-amz-date` (`YYYYMMDDTHHMMSSZ`), counting days from the civil
/// date with years that start in March, so the leap day comes last.
fn unix_seconds(amz_date: &str) -> u64 {
    let n = |from: usize, to: usize| amz_date[from..to].parse::<u64>().unwrap();
    let (month, day) = (n(4, 6), n(6, 8));
    let year = n(0, 4) - u64::from(month <= 2);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = year * 365 + year / 4 - year / 100 + year / 400 + day_of_year - 719_468;
    days * 86_400 + n(9, 11) * 3600 + n(11, 13) * 60 + n(13, 15)
}

/// Recomputes the SigV4 signature of the request the mock received, from the bytes it
/// received, with the test secret: proof that the gateway signed exactly what went out.
fn assert_signed_for_bedrock_eu(upstream: &LoggedRequest) {
    let authorization = upstream.header("authorization").expect("an Authorization header");
    let amz_date = upstream.header("x-amz-date").expect("x-amz-date");
    let scope = format!("Credential={AWS_ACCESS_KEY_ID}/{}/eu-central-1/bedrock/aws4_request,", &amz_date[..8]);
    assert!(authorization.starts_with(&format!("AWS4-HMAC-SHA256 {scope}")), "{authorization}");
    assert_eq!(upstream.header("x-amz-security-token"), Some(AWS_SESSION_TOKEN));
    let signed_names = authorization.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
    // The signer adds host (from the URL) and its own x-amz-* headers itself.
    let signed: Vec<(&str, &str)> = signed_names
        .split(';')
        .filter(|name| !matches!(*name, "host" | "x-amz-date" | "x-amz-security-token"))
        .map(|name| (name, upstream.header(name).unwrap()))
        .collect();
    let url = format!("http://{}{}", upstream.header("host").unwrap(), upstream.path);
    let request = sigv4::Request {
        method: "POST",
        url: &url,
        headers: &signed,
        payload: Payload::Bytes(upstream.body.as_bytes()),
    };
    let params = SigningParams {
        access_key_id: AWS_ACCESS_KEY_ID,
        secret_access_key: AWS_SECRET_ACCESS_KEY,
        session_token: Some(AWS_SESSION_TOKEN),
        region: "eu-central-1",
        service: "bedrock",
        time: AmzDate::from_unix_seconds(unix_seconds(amz_date)),
        content_sha256_header: false,
    };
    let expected = sigv4::sign(&request, &params).unwrap();
    assert_eq!(Some(authorization), expected.last().map(|(_, v)| v.as_str()), "the signature verifies");
}

#[test]
fn bedrock_answers_an_openai_request_signed_with_sigv4() {
    let n = nonce("bedrock-plain");
    let body = json!({"model": "bedrock", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": format!("{n} [mock:prompt_tokens=40,cached_tokens=30,completion_tokens=7]")}
    ], "max_tokens": 50, "temperature": 0.2});
    let r = gateway().chat(&body, &GERMAN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-provider"), Some("bedrock"));
    assert_eq!(r.header("x-gateway-deployment"), Some("bedrock-eu"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "bedrock");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains(&n));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 40, "completion_tokens": 7, "total_tokens": 47,
            "prompt_tokens_details": {"cached_tokens": 30}})
    );

    let upstream = one_upstream(&n);
    assert_eq!(upstream.path, format!("/bedrock-eu/model/{BEDROCK_EU_MODEL}/converse"));
    assert_signed_for_bedrock_eu(&upstream);
    assert!(upstream.header("x-api-key").is_none());
    let up = upstream.json();
    assert_eq!(up["system"], json!([{"text": "Be brief."}]));
    assert_eq!(up["inferenceConfig"], json!({"maxTokens": 50, "temperature": 0.2}));
    assert!(up.get("model").is_none(), "the model travels in the path");
}

#[test]
fn bedrock_streams_as_openai_chunks() {
    let n = nonce("bedrock-stream");
    let body = json!({"model": "bedrock", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": format!("{n} [mock:chunks=5,prompt_tokens=12,completion_tokens=5]")}]});
    let s = gateway().chat_stream(&body, &GERMAN);
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream; charset=utf-8"));
    let data = sse_data_lines(&String::from_utf8(s.collect().unwrap()).unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains(&n));
    assert_eq!(
        chunks.iter().filter(|c| c["choices"][0]["delta"]["content"].as_str().is_some_and(|t| !t.is_empty())).count(),
        5
    );
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(12), Some(5)));

    let upstream = one_upstream(&n);
    assert_eq!(upstream.path, format!("/bedrock-eu/model/{BEDROCK_EU_MODEL}/converse-stream"));
    assert_signed_for_bedrock_eu(&upstream);
}

#[test]
fn a_bedrock_exception_mid_stream_ends_with_an_error_chunk() {
    let n = nonce("bedrock-throttled");
    let body = json!({"model": "bedrock", "stream": true, "messages": [{"role": "user",
        "content": format!("{n} [mock:chunks=4,cut_after=2,error_code=throttlingException]")}]});
    let s = gateway().chat_stream(&body, &GERMAN);
    assert_eq!(s.status, 200);
    let data = sse_data_lines(&String::from_utf8(s.collect().unwrap()).unwrap());
    assert!(!data.contains(&"[DONE]".to_string()), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_rate_limited", "{last}");
    assert!(last["error"]["message"].as_str().unwrap().contains("throttlingException"));
}

#[test]
fn a_tool_call_round_trip_through_bedrock() {
    let n = nonce("bedrock-tool");
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!({"model": "bedrock", "tools": tools, "tool_choice": "required",
        "messages": [{"role": "user", "content": format!("{n} weather in Paris? [mock:tool_call=get_weather,tool_args={{\"city\": \"Paris\"}}]")}]});
    let r = gateway().chat(&ask, &GERMAN);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let up = sent(&n);
    assert_eq!(up["toolConfig"]["tools"][0]["toolSpec"]["name"], "get_weather");
    assert_eq!(up["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"], json!(["city"]));
    assert_eq!(up["toolConfig"]["toolChoice"], json!({"any": {}}));

    // The tool's result goes back, as the client's next turn.
    let n2 = nonce("bedrock-tool-result");
    let follow_up = json!({"model": "bedrock", "tools": tools, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": format!("18C and sunny {n2}")}
    ]});
    let r = gateway().chat(&follow_up, &GERMAN);
    assert_eq!(r.status, 200, "{}", r.text());
    let up = sent(&n2);
    let messages = up["messages"].as_array().unwrap();
    assert_eq!(messages[1]["content"][0]["toolUse"]["toolUseId"], call["id"]);
    assert_eq!(messages[1]["content"][0]["toolUse"]["input"], json!({"city": "Paris"}));
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(messages[2]["content"][0]["toolResult"]["toolUseId"], call["id"]);
}

#[test]
fn a_bedrock_api_key_is_sent_as_a_bearer_token() {
    let n = nonce("bedrock-api-key");
    let r = gateway().chat(&json!({"model": "bedrock-key", "messages": [{"role": "user", "content": n}]}), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-deployment"), Some("bedrock-us-key"));
    let upstream = one_upstream(&n);
    assert_eq!(upstream.path, "/bedrock-us-key/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse");
    assert_eq!(upstream.header("authorization"), Some(format!("Bearer {BEDROCK_API_KEY}").as_str()));
    assert!(upstream.header("x-amz-date").is_none());
}

#[test]
fn an_image_url_bedrock_cannot_fetch_is_a_400_naming_it() {
    let n = nonce("bedrock-image-url");
    let body = json!({"model": "bedrock", "messages": [{"role": "user", "content": [
        {"type": "text", "text": n},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    ]}]});
    let r = gateway().chat(&body, &GERMAN);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unsupported_parameter");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("`messages[0].content[1].image_url.url`") && message.contains("bedrock"), "{message}");
    assert!(mock().requests_matching(&n).is_empty(), "nothing was sent upstream");

    let n = nonce("bedrock-image-inline");
    let body = json!({"model": "bedrock", "messages": [{"role": "user", "content": [
        {"type": "text", "text": n},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ]}]});
    assert_eq!(gateway().chat(&body, &GERMAN).status, 200);
    assert_eq!(
        sent(&n)["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})
    );
}

#[test]
fn anthropic_529_falls_back_to_bedrock_within_the_us() {
    let n = nonce("claude-us-529");
    mock().script(Script {
        tag: "claude-us".into(),
        needle: n.clone(),
        times: None,
        behaviour: Behaviour::parse("status=529").unwrap(),
    });
    let body = json!({"model": "claude-us-or-bedrock", "messages": [{"role": "user", "content": n}]});
    let r = gateway().chat(&body, &[("x-gateway-geo-country", "US"), ("x-gateway-compliance", "us-only")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-rule"), Some("default"));
    assert_eq!(r.header("x-gateway-tried"), Some("claude-us:529 overloaded, bedrock-us-key:200 ok"));
    assert_eq!(r.header("x-gateway-provider"), Some("bedrock"));
    assert_eq!(r.header("x-gateway-jurisdiction"), Some("us"));
    assert!(r.json()["choices"][0]["message"]["content"].as_str().unwrap().contains(&n));
    // The alias also lists `claude-1`, which may process anywhere: the request tagged
    // us-only never went there.
    let tags: Vec<String> = mock().requests_matching(&n).into_iter().map(|r| r.tag).collect();
    assert_eq!(tags, ["claude-us", "bedrock-us-key"]);
}

#[test]
fn a_us_anthropic_deployment_asks_for_us_inference_and_is_billed_its_uplift() {
    let n = nonce("claude-us-geo");
    let body = json!({"model": "claude-us-then-openai", "max_tokens": 50,
        "messages": [{"role": "user", "content": format!("{n} [mock:prompt_tokens=1000,completion_tokens=100]")}]});
    let r = gateway().chat(&body, &[("x-gateway-geo-country", "US")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((r.header("x-gateway-deployment"), r.header("x-gateway-jurisdiction")), (Some("claude-us"), Some("us")));
    assert_eq!(sent(&n)["inference_geo"], "us");
    // $3.30 / $16.50 per MTok at 1.1: (1,000 × 3.30 + 100 × 16.50) × 1.1 micro-dollars.
    assert_eq!(r.header("x-gateway-cost-usd"), Some("0.005445"));
}

#[test]
fn an_answer_reporting_processing_elsewhere_is_a_breach_on_the_ledger_and_not_used() {
    for stream in [false, true] {
        let n = nonce("claude-us-breach");
        mock().script(Script {
            tag: "claude-us".into(),
            needle: n.clone(),
            times: None,
            behaviour: Behaviour::parse("inference_geo=global").unwrap(),
        });
        let team = nonce("team-breach");
        let body = json!({"model": "claude-us-then-openai", "stream": stream, "max_tokens": 50,
            "messages": [{"role": "user", "content": n}]});
        let headers = [("x-gateway-geo-country", "US"), ("x-gateway-team", team.as_str())];
        let (status, tried, id) = if stream {
            let s = gateway().chat_stream(&body, &headers);
            let tried = s.header("x-gateway-tried").map(str::to_string);
            let id = s.header("x-gateway-request-id").unwrap().to_string();
            let events = sse_data_lines(&String::from_utf8(s.collect().unwrap()).unwrap());
            let text: String = events
                .iter()
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string))
                .collect();
            assert!(
                text.contains("(us-1)") && !text.contains("(claude-us)"),
                "the breached answer never reaches the client: {text}"
            );
            (200, tried, id)
        } else {
            let r = gateway().chat(&body, &headers);
            assert!(r.json()["choices"][0]["message"]["content"].as_str().unwrap().contains("(us-1)"), "{}", r.text());
            (
                r.status,
                r.header("x-gateway-tried").map(str::to_string),
                r.header("x-gateway-request-id").unwrap().to_string(),
            )
        };
        assert_eq!(status, 200);
        assert_eq!(tried.as_deref(), Some("claude-us:200 residency_breach, us-1:200 ok"), "stream: {stream}");
        let started = std::time::Instant::now();
        let row = loop {
            let rows = gateway().d1(&format!(
                "SELECT residency_breaches, attempts_detail, cost_micros FROM cost_events WHERE request_id = '{id}'"
            ));
            if let Some(row) = rows.into_iter().next() {
                break row;
            }
            assert!(started.elapsed().as_secs() < 40, "the event reaches D1");
            std::thread::sleep(std::time::Duration::from_millis(300));
        };
        assert_eq!(row["residency_breaches"], 1, "{row}");
        assert!(row["attempts_detail"].as_str().unwrap().contains("\"failure\":\"residency_breach\""), "{row}");
        let breached: Value = serde_json::from_str(row["attempts_detail"].as_str().unwrap()).unwrap();
        assert!(breached[0]["cost_micros"].as_u64().unwrap() > 0, "Anthropic billed it: {breached}");
    }
}

// ---------------------------------------------------------------------------------------
// Azure OpenAI, Mistral, the Gemini API and Vertex AI.

const AMERICAN: [(&str, &str); 2] = [("x-gateway-geo-country", "US"), ("x-gateway-geo-continent", "NA")];

/// A streamed answer's data events: the chunks as JSON, and whether `[DONE]` ended them.
fn streamed(alias: &str, prompt: &str, headers: &[(&str, &str)]) -> (Vec<Value>, bool) {
    let body = json!({"model": alias, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": prompt}]});
    let s = gateway().chat_stream(&body, headers);
    assert_eq!(s.status, 200);
    let data = sse_data_lines(&String::from_utf8(s.collect().unwrap()).unwrap());
    let done = data.last().map(String::as_str) == Some("[DONE]");
    let chunks = data.iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    (chunks, done)
}

fn text_of(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

/// Checks a plain answer to `prompt` from `alias` and returns the one upstream request.
fn plain(alias: &str, prompt: &str, headers: &[(&str, &str)], provider: &str) -> LoggedRequest {
    let body = json!({"model": alias, "max_tokens": 60, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]});
    let r = gateway().chat(&body, headers);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-provider"), Some(provider));
    assert_eq!(r.header("x-gateway-deployment"), Some(alias));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().contains("You said:"), "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0 && v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(r.header("x-gateway-cost-usd").is_some());
    one_upstream(prompt)
}

/// Checks a streamed answer: OpenAI chunks, the text, a finish, the usage chunk, `[DONE]`.
fn stream_checked(alias: &str, nonce: &str, headers: &[(&str, &str)]) -> LoggedRequest {
    let prompt = format!("{nonce} [mock:chunks=4,prompt_tokens=12,completion_tokens=4]");
    let (chunks, done) = streamed(alias, &prompt, headers);
    assert!(done, "{chunks:?}");
    assert!(text_of(&chunks).contains(nonce), "{chunks:?}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"), "{chunks:?}");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()),
        (Some(12), Some(4)),
        "{chunks:?}"
    );
    one_upstream(nonce)
}

#[test]
fn azure_answers_on_its_deployment_with_the_api_key() {
    let n = nonce("azure-plain");
    let upstream = plain("azure-eu", &n, &GERMAN, "azure_openai");
    assert_eq!(upstream.path, "/azure-eu/openai/deployments/gpt-4o-mini-eu/chat/completions?api-version=2024-10-21");
    assert_eq!(upstream.header("api-key"), Some(AZURE_API_KEY));
    assert!(upstream.header("authorization").is_none());
    assert!(upstream.json().get("model").is_none(), "the path names the deployment");
    assert_eq!(upstream.json()["max_tokens"], 60);

    let n = nonce("azure-v1");
    let upstream = plain("azure-v1", &n, &AMERICAN, "azure_openai");
    assert_eq!(upstream.path, "/azure-v1/openai/v1/chat/completions");
    assert_eq!(upstream.json()["model"], "gpt-4o-mini-global");
}

#[test]
fn azure_streams_past_its_prompt_filter_chunk() {
    let n = nonce("azure-stream");
    let upstream = stream_checked("azure-eu", &n, &GERMAN);
    assert_eq!(upstream.json()["stream_options"], json!({"include_usage": true}));
}

#[test]
fn an_azure_content_filter_refusal_is_a_400_that_is_not_retried() {
    let n = nonce("azure-filter");
    let prompt = format!("{n} [mock:status=400,error_code=content_filter]");
    let r = gateway().chat(&json!({"model": "azure-eu", "messages": [{"role": "user", "content": prompt}]}), &GERMAN);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "content_filter");
    assert_eq!(r.header("x-gateway-tried"), Some("azure-eu:400 content_filter"));
}

#[test]
fn mistral_answers_and_streams_with_its_own_fields() {
    let n = nonce("mistral-plain");
    let body = json!({"model": "mistral-eu", "seed": 7, "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": n}]});
    let r = gateway().chat(&body, &GERMAN);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-gateway-provider"), Some("mistral"));
    let upstream = one_upstream(&n);
    assert_eq!(upstream.path, "/mistral-eu/mistral/v1/chat/completions");
    assert_eq!(upstream.header("authorization"), Some(format!("Bearer {MISTRAL_API_KEY}").as_str()));
    let sent = upstream.json();
    assert_eq!((sent["random_seed"].as_u64(), sent["tool_choice"].as_str()), (Some(7), Some("any")));
    assert_eq!(sent["messages"][0]["role"], "system");

    let n = nonce("mistral-stream");
    let upstream = stream_checked("mistral-eu", &n, &GERMAN);
    assert!(upstream.json().get("stream_options").is_none(), "Mistral refuses stream_options");

    let n = nonce("mistral-logprobs");
    let r = gateway()
        .chat(&json!({"model": "mistral-eu", "logprobs": true, "messages": [{"role": "user", "content": n}]}), &GERMAN);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`logprobs` is not supported by provider mistral"));
    assert!(mock().requests_matching(&n).is_empty());
}

#[test]
fn gemini_answers_and_streams_with_the_api_key() {
    let n = nonce("gemini-plain");
    let upstream = plain("gemini", &n, &AMERICAN, "gemini");
    assert_eq!(upstream.path, "/gemini/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(upstream.header("x-goog-api-key"), Some(GEMINI_API_KEY));
    let sent = upstream.json();
    assert_eq!(sent["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    assert_eq!(sent["generationConfig"], json!({"maxOutputTokens": 60}));

    let n = nonce("gemini-stream");
    let upstream = stream_checked("gemini", &n, &AMERICAN);
    assert_eq!(upstream.path, "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
}

#[test]
fn a_gemini_tool_call_round_trip_keeps_its_thought_signature() {
    let n = nonce("gemini-tool");
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let ask = json!({"model": "gemini", "tools": tools, "messages": [{"role": "user",
        "content": format!("{n} weather in Paris? [mock:tool_call=get_weather,tool_args={{\"city\": \"Paris\"}}]")}]});
    let r = gateway().chat(&ask, &AMERICAN);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(sent(&n)["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["required"], json!(["city"]));

    let n2 = nonce("gemini-tool-result");
    let follow_up = json!({"model": "gemini", "tools": tools, "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": format!("18C and sunny {n2}")}]});
    let r = gateway().chat(&follow_up, &AMERICAN);
    assert_eq!(r.status, 200, "{}", r.text());
    let contents = sent(&n2)["contents"].clone();
    let function_call = &contents[1]["parts"][0];
    assert_eq!(function_call["functionCall"], json!({"name": "get_weather", "args": {"city": "Paris"}}));
    assert!(
        function_call["thoughtSignature"].as_str().is_some_and(|s| s.starts_with("bW9jay1zaWduYXR1cmUt")),
        "{function_call}"
    );
    assert_eq!(contents[2]["parts"][0]["functionResponse"]["name"], "get_weather");
}

#[test]
fn the_gemini_api_is_never_used_for_an_eu_bound_request() {
    let n = nonce("gemini-eu");
    let r = gateway().chat(&json!({"model": "gemini", "messages": [{"role": "user", "content": n}]}), &GERMAN);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "residency_unsatisfiable");
    assert!(mock().requests_matching(&n).is_empty());
}

#[test]
fn vertex_gemini_and_claude_answer_and_stream_with_an_access_token() {
    let n = nonce("vertex-plain");
    let upstream = plain("vertex-eu", &n, &GERMAN, "vertex");
    assert_eq!(
        upstream.path,
        "/vertex-eu/v1/projects/llm-edge-gateway-test/locations/eu/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert!(upstream.header("authorization").is_some_and(|a| a.starts_with("Bearer ya29.mock-gcp-token-")));
    let n = nonce("vertex-stream");
    let upstream = stream_checked("vertex-eu", &n, &GERMAN);
    assert!(upstream.path.ends_with(":streamGenerateContent?alt=sse"));

    let n = nonce("vertex-claude");
    let upstream = plain("vertex-claude", &n, &GERMAN, "vertex");
    assert!(upstream.path.ends_with("/publishers/anthropic/models/claude-sonnet-4-6:rawPredict"), "{}", upstream.path);
    let sent = upstream.json();
    assert_eq!(sent["anthropic_version"], "vertex-2023-10-16");
    assert!(sent.get("model").is_none());
    assert_eq!(sent["system"], "Be brief.");
    let n = nonce("vertex-claude-stream");
    let upstream = stream_checked("vertex-claude", &n, &GERMAN);
    assert!(upstream.path.ends_with(":streamRawPredict"), "{}", upstream.path);
}

fn base64url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in text.bytes() {
        acc = acc << 6 | ALPHABET.iter().position(|a| *a == b).expect("base64url") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Verifies an RS256 JWT with the test service account's public key, through openssl.
fn assert_signed_by_the_test_key(jwt: &str) {
    let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
    let dir = root().join("target/e2e").join(format!("jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("input"), signing_input).unwrap();
    std::fs::write(dir.join("signature"), base64url_decode(signature)).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(root().join("tests/data/gcp-service-account.pub.pem"))
        .arg("-signature")
        .arg(dir.join("signature"))
        .arg(dir.join("input"))
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "the JWT's signature verifies: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_vertex_access_token_is_exchanged_once_and_reused() {
    for i in 0..3 {
        let n = nonce(&format!("vertex-once-{i}"));
        let r = gateway().chat(
            &json!({"model": "vertex-once", "stream": i == 1, "messages": [{"role": "user", "content": n}]}),
            &AMERICAN,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let upstream = one_upstream(&n);
        assert_eq!(
            upstream
                .header("authorization")
                .unwrap()
                .strip_prefix("Bearer ya29.mock-")
                .map(|t| t.starts_with(GCP_TOKEN_ONCE_TAG)),
            Some(true)
        );
    }
    let exchanges: Vec<LoggedRequest> = mock().requests().into_iter().filter(|r| r.tag == GCP_TOKEN_ONCE_TAG).collect();
    assert_eq!(exchanges.len(), 1, "one token exchange for three requests");
    let form = &exchanges[0].body;
    assert!(form.starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="), "{form}");
    assert_eq!(exchanges[0].header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_signed_by_the_test_key(form.split("assertion=").nth(1).unwrap());
}
