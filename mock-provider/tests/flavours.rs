//! The mock's Azure OpenAI and Mistral flavours of the OpenAI format, over real sockets.

use mock_provider::MockServer;
use serde_json::{json, Value};

#[path = "../../tests/support/http.rs"]
mod client;

fn start() -> MockServer {
    MockServer::start("127.0.0.1:0").unwrap()
}

fn body(prompt: &str) -> Value {
    json!({"messages": [{"role": "user", "content": prompt}]})
}

fn post(server: &MockServer, path: &str, headers: &[(&str, &str)], body: &Value) -> client::Response {
    let url = format!("{}{path}", server.base_url());
    client::send("POST", &url, headers, Some(body.to_string().as_bytes())).unwrap()
}

fn events(text: &str) -> Vec<Value> {
    client::sse_data_lines(text)
        .iter()
        .map(|d| if d == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(d).unwrap() })
        .collect()
}

const AZURE_DEPLOYMENT: &str = "/swe/openai/deployments/gpt-4o-mini-eu/chat/completions?api-version=2024-10-21";

#[test]
fn azure_deployments_take_the_model_from_the_path_and_need_key_and_version() {
    let server = start();
    let key = [("api-key", "azure-key-1")];
    let answer = post(&server, AZURE_DEPLOYMENT, &key, &body("hi nonce-az1"));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["model"], "gpt-4o-mini-eu");
    assert_eq!(answer.json()["object"], "chat.completion");

    let denied = post(&server, AZURE_DEPLOYMENT, &[], &body("hi"));
    assert_eq!(denied.status, 401);
    assert!(denied.json()["error"]["message"].as_str().unwrap().contains("invalid subscription key"));
    let unversioned = post(&server, "/swe/openai/deployments/gpt-4o-mini-eu/chat/completions", &key, &body("hi"));
    assert_eq!(unversioned.status, 404);

    let v1 = post(&server, "/swe/openai/v1/chat/completions", &key, &body("hi"));
    assert_eq!(v1.status, 400, "the v1 API takes the model in the body");
    let mut named = body("hi");
    named["model"] = json!("gpt-4o-mini-eu");
    assert_eq!(post(&server, "/swe/openai/v1/chat/completions", &key, &named).json()["model"], "gpt-4o-mini-eu");
}

#[test]
fn azure_streams_open_with_the_prompt_filter_results() {
    let server = start();
    let mut streamed = body("one two [mock:chunks=2]");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let response = post(&server, AZURE_DEPLOYMENT, &[("api-key", "k")], &streamed);
    let events = events(&response.text());
    assert_eq!(events[0]["choices"], json!([]));
    assert!(events[0]["prompt_filter_results"][0]["content_filter_results"].is_object());
    assert!(events[0].get("usage").is_none());
    assert_eq!(events[events.len() - 2]["usage"]["completion_tokens"].as_u64().map(|n| n > 0), Some(true));
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[test]
fn azure_content_filter_refusals() {
    let server = start();
    let refused =
        post(&server, AZURE_DEPLOYMENT, &[("api-key", "k")], &body("[mock:status=400,error_code=content_filter]"));
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["code"], "content_filter");
    assert_eq!(refused.json()["error"]["innererror"]["code"], "ResponsibleAIPolicyViolation");
}

#[test]
fn mistral_refuses_fields_outside_its_schema_and_sends_usage_with_the_finish() {
    let server = start();
    let bearer = [("authorization", "Bearer mistral-key")];
    let path = "/mistral-eu/mistral/v1/chat/completions";
    let mut request = body("Bonjour [mock:chunks=3,prompt_tokens=9,completion_tokens=3]");
    request["model"] = json!("mistral-small-latest");
    request["random_seed"] = json!(7);
    request["safe_prompt"] = json!(true);
    let answer = post(&server, path, &bearer, &request);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["usage"]["prompt_tokens"], 9);

    request["stream"] = json!(true);
    let events = events(&post(&server, path, &bearer, &request).text());
    let finish = &events[events.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["usage"]["completion_tokens"], 3, "the usage rides on the finishing chunk");
    assert!(events[..events.len() - 2].iter().all(|e| e["usage"].is_null()));

    request["stream_options"] = json!({"include_usage": true});
    request["seed"] = json!(1);
    let refused = post(&server, path, &bearer, &request);
    assert_eq!(refused.status, 422);
    let detail = &refused.json()["message"]["detail"];
    assert_eq!(detail[0]["type"], "extra_forbidden");
    let mut fields: Vec<&str> = detail.as_array().unwrap().iter().filter_map(|d| d["loc"][1].as_str()).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["seed", "stream_options"]);

    assert_eq!(post(&server, path, &[], &request).status, 401);
}
