//! Outbound calls and body reading, with the time limits the runtime does not impose.
//!
//! Whole bodies are read with one `arrayBuffer()` each, not chunk by chunk: every chunk
//! pulled into wasm is a promise round trip (and, with a deadline, a timer), which cost
//! more CPU than everything the gateway decides about a request.

use super::state::now_ms;
use crate::error::GatewayError;
use crate::providers::{ErrorClass, UpstreamRequest};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use std::future::Future;
use std::time::Duration;
use worker::js_sys::{Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{ReadableStream, ReadableStreamDefaultReader};
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit, Response, ResponseBody};

/// `work`, or `Err(Timeout)` once `timeout_ms` pass.
async fn within<T>(work: impl Future<Output = Result<T, ErrorClass>>, timeout_ms: u64) -> Result<T, ErrorClass> {
    match select(Box::pin(work), Delay::from(Duration::from_millis(timeout_ms))).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right(_) => Err(ErrorClass::Timeout),
    }
}

/// Sends the request; gives up after `timeout_ms` without a response head.
pub async fn send(up: &UpstreamRequest, timeout_ms: u64) -> Result<Response, ErrorClass> {
    let headers = Headers::new();
    for (name, value) in &up.headers {
        headers.set(name, value).map_err(|_| ErrorClass::BadRequest)?;
    }
    let body = Uint8Array::from(up.body.as_slice());
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let request = Request::new_with_init(&up.url, &init).map_err(|_| ErrorClass::Unreachable)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sending = async { fetch.send_with_signal(&signal).await.map_err(|_| ErrorClass::Unreachable) };
    let outcome = within(sending, timeout_ms).await;
    if outcome.is_err() {
        controller.abort();
    }
    outcome
}

/// The body's JavaScript stream; `None` for an empty body.
pub fn body_stream(response: &Response) -> Option<ReadableStream> {
    match response.body() {
        ResponseBody::Stream(stream) => Some(stream.clone()),
        _ => None,
    }
}

/// A whole upstream body, within the deadline.
pub async fn read_all(response: &mut Response, deadline_ms: u64) -> Result<Vec<u8>, ErrorClass> {
    let stream = match response.body() {
        ResponseBody::Stream(stream) => stream.clone(),
        ResponseBody::Body(bytes) => return Ok(bytes.clone()),
        ResponseBody::Empty => return Ok(Vec::new()),
    };
    let whole = worker::web_sys::Response::new_with_opt_readable_stream(Some(&stream))
        .and_then(|r| r.array_buffer())
        .map_err(|_| ErrorClass::Unreachable)?;
    let reading = async {
        let buffer = JsFuture::from(whole).await.map_err(|_| ErrorClass::Unreachable)?;
        Ok(Uint8Array::new(&buffer).to_vec())
    };
    within(reading, deadline_ms.saturating_sub(now_ms()).max(1)).await
}

/// Reads a stream piece by piece, for a caller that must look at each piece as it comes
/// (a stream held until its first content). Dropped unreleased, it cancels the stream, so
/// an upstream given up on is closed rather than left to the collector.
pub struct Pieces {
    reader: Option<ReadableStreamDefaultReader>,
}

impl Pieces {
    pub fn new(stream: &ReadableStream) -> Self {
        Pieces { reader: Some(stream.get_reader().unchecked_into()) }
    }

    /// The next piece, or `Ok(None)` at the end; a reset connection is `Err(Unreachable)`,
    /// none within `timeout_ms` is `Err(Timeout)`.
    pub async fn next(&mut self, timeout_ms: u64) -> Result<Option<Vec<u8>>, ErrorClass> {
        let Some(reader) = &self.reader else { return Ok(None) };
        let read: Promise = reader.read();
        let reading = async {
            let result = JsFuture::from(read).await.map_err(|_| ErrorClass::Unreachable)?;
            let field = |name: &str| Reflect::get(&result, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED);
            if field("done").is_truthy() {
                return Ok(None);
            }
            Ok(Some(Uint8Array::new(&field("value")).to_vec()))
        };
        within(reading, timeout_ms).await
    }

    /// Gives the stream back, unlocked, for the rest to be piped elsewhere. Only between
    /// reads: `next` must have returned.
    pub fn release(mut self) {
        if let Some(reader) = self.reader.take() {
            reader.release_lock();
        }
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.cancel();
        }
    }
}

/// The client's body, or 413 when it passes `limit`. A body of a declared length within
/// the limit is read whole; any other is streamed, and one too large is refused without
/// being buffered — but only once the rest is read and discarded, because answering
/// before the runtime has finished handing the body over fails the request stream (and,
/// under `wrangler dev`, other requests in flight with it).
pub async fn read_client_body(req: &mut Request, limit: usize) -> Result<Vec<u8>, GatewayError> {
    let unreadable =
        |e: worker::Error| GatewayError::bad_request("invalid_body", format!("Could not read the request body: {e}"));
    let declared = req.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n <= limit) {
        let body = req.bytes().await.map_err(unreadable)?;
        return if body.len() > limit { Err(GatewayError::payload_too_large(limit)) } else { Ok(body) };
    }
    let mut too_large = declared.is_some();
    let mut body = Vec::new();
    let Ok(mut stream) = req.stream() else {
        return Ok(body);
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unreadable)?;
        if too_large || body.len() + chunk.len() > limit {
            too_large = true;
            body = Vec::new();
            continue;
        }
        body.extend_from_slice(&chunk);
    }
    if too_large {
        return Err(GatewayError::payload_too_large(limit));
    }
    Ok(body)
}
