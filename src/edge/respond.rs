//! Building responses: JSON bodies, errors in the client's format, request ids.

use super::glue::Head;
use crate::ingress::Ingress;
use crate::model::error::GatewayError;
use worker::js_sys::{global, Function, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::web_sys::{ReadableStream, Response, ResponseInit};

/// The init of a response made directly by the runtime: the `worker` crate's builder
/// makes a headers object that it then drops, and copies a body into a JavaScript array
/// before the runtime copies it again.
fn init(status: u16, headers: &Head) -> ResponseInit {
    let init = ResponseInit::new();
    init.set_status(status);
    init.set_headers(&headers.build());
    init
}

pub fn with_bytes(status: u16, headers: &Head, mut body: Vec<u8>) -> Result<Response, GatewayError> {
    Response::new_with_opt_u8_array_and_init(Some(&mut body), &init(status, headers)).map_err(|e| internal(e.into()))
}

pub fn with_stream(headers: &Head, stream: &ReadableStream) -> Result<Response, GatewayError> {
    Response::new_with_opt_readable_stream_and_init(Some(stream), &init(200, headers)).map_err(|e| internal(e.into()))
}

pub fn json(status: u16, value: &impl serde::Serialize) -> Result<Response, GatewayError> {
    let body = serde_json::to_vec(value).map_err(|e| GatewayError::internal(e.to_string()))?;
    bytes(status, "application/json", body)
}

pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Result<Response, GatewayError> {
    let mut headers = Head::new();
    let _ = headers.set("content-type", content_type);
    with_bytes(status, &headers, body)
}

pub fn error(ingress: Ingress, e: &GatewayError) -> Response {
    error_with(ingress, e, Head::new())
}

/// An error response with headers of the caller's besides.
pub fn error_with(ingress: Ingress, e: &GatewayError, mut headers: Head) -> Response {
    let _ = headers.set("content-type", "application/json");
    if let Some(s) = e.retry_after {
        let _ = headers.set("retry-after", &s.to_string());
    }
    with_bytes(e.status, &headers, ingress.error_body(e).into_bytes())
        .expect("an error's status is always one the runtime accepts")
}

pub fn internal(e: worker::Error) -> GatewayError {
    GatewayError::internal(format!("Runtime error: {e}"))
}

thread_local! {
    /// `crypto` and its `randomUUID`, looked up once per isolate rather than per request.
    static RANDOM_UUID: Option<(JsValue, Function)> = Reflect::get(&global(), &"crypto".into())
        .and_then(|crypto| Ok((crypto.clone(), Reflect::get(&crypto, &"randomUUID".into())?.dyn_into::<Function>()?)))
        .ok();
}

/// 32 hex digits from the runtime's CSPRNG-backed `crypto.randomUUID()`.
pub fn request_id() -> String {
    let uuid = RANDOM_UUID
        .with(|f| f.as_ref().and_then(|(crypto, uuid)| uuid.call0(crypto).ok()?.as_string()))
        .unwrap_or_default();
    uuid.chars().filter(|c| *c != '-').collect()
}
