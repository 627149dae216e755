//! End to end through workerd: OpenAI-format requests answered by each provider kind via
//! the mock, speaking that provider's wire format.

mod support;

use mock_provider::{Behaviour, Script};
use serde_json::{json, Value};
use support::gateway::{gateway, mock, PROVIDER_KEY};
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
