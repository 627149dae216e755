//! Building responses: JSON bodies, errors in the client's format, request ids.

use crate::error::GatewayError;
use crate::ingress::Ingress;
use worker::js_sys::{global, Function, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Headers, Response};

pub fn json(status: u16, value: &impl serde::Serialize) -> Result<Response, GatewayError> {
    let body = serde_json::to_vec(value).map_err(|e| GatewayError::internal(e.to_string()))?;
    bytes(status, "application/json", body)
}

pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Result<Response, GatewayError> {
    let headers = Headers::new();
    let _ = headers.set("content-type", content_type);
    Ok(Response::from_bytes(body).map_err(internal)?.with_status(status).with_headers(headers))
}

pub fn error(ingress: Ingress, e: &GatewayError) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    if let Some(s) = e.retry_after {
        let _ = headers.set("retry-after", &s.to_string());
    }
    Response::from_bytes(ingress.error_body(e).into_bytes())
        .expect("a byte body is always accepted")
        .with_status(e.status)
        .with_headers(headers)
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
