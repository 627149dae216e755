//! Outbound calls and body reading, with the time limits the runtime does not impose.

use super::state::now_ms;
use crate::error::GatewayError;
use crate::providers::{ErrorClass, UpstreamRequest};
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use std::time::Duration;
use worker::{AbortController, ByteStream, Delay, Fetch, Headers, Method, Request, RequestInit, Response};

/// Sends the request; gives up after `timeout_ms` without a response head.
pub async fn send(up: &UpstreamRequest, timeout_ms: u64) -> Result<Response, ErrorClass> {
    let headers = Headers::new();
    for (name, value) in &up.headers {
        headers.set(name, value).map_err(|_| ErrorClass::BadRequest)?;
    }
    let body = worker::js_sys::Uint8Array::from(up.body.as_slice());
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let request = Request::new_with_init(&up.url, &init).map_err(|_| ErrorClass::Unreachable)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(request);
    let sending = Box::pin(fetch.send_with_signal(&signal));
    let outcome = match select(sending, Delay::from(Duration::from_millis(timeout_ms))).await {
        Either::Left((Ok(response), _)) => Ok(response),
        Either::Left((Err(_), _)) => Err(ErrorClass::Unreachable),
        Either::Right(_) => Err(ErrorClass::Timeout),
    };
    if outcome.is_err() {
        controller.abort();
    }
    outcome
}

/// The next piece of a body, or `Err(Timeout)` when none arrives within `timeout_ms`.
/// `Ok(None)` is the end; a reset connection is `Err(Unreachable)`.
pub async fn next_chunk(stream: &mut ByteStream, timeout_ms: u64) -> Result<Option<Vec<u8>>, ErrorClass> {
    match select(stream.next(), Delay::from(Duration::from_millis(timeout_ms))).await {
        Either::Left((Some(Ok(chunk)), _)) => Ok(Some(chunk)),
        Either::Left((Some(Err(_)), _)) => Err(ErrorClass::Unreachable),
        Either::Left((None, _)) => Ok(None),
        Either::Right(_) => Err(ErrorClass::Timeout),
    }
}

/// A whole upstream body, within the deadline.
pub async fn read_all(response: &mut Response, deadline_ms: u64) -> Result<Vec<u8>, ErrorClass> {
    let mut stream = response.stream().map_err(|_| ErrorClass::Unreachable)?;
    let mut body = Vec::new();
    loop {
        let left = deadline_ms.saturating_sub(now_ms()).max(1);
        match next_chunk(&mut stream, left).await? {
            Some(chunk) => body.extend_from_slice(&chunk),
            None => return Ok(body),
        }
    }
}

/// The client's body, or 413 when it passes `limit`. A body declared too large is refused
/// without being buffered; either way the rest is read and discarded first, because
/// answering before the runtime has finished handing the body over fails the request
/// stream (and, under `wrangler dev`, other requests in flight with it).
pub async fn read_client_body(req: &mut Request, limit: usize) -> Result<Vec<u8>, GatewayError> {
    let declared = req.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<usize>().ok());
    let mut too_large = declared.is_some_and(|n| n > limit);
    let mut body = if too_large { Vec::new() } else { Vec::with_capacity(declared.unwrap_or(0)) };
    let Ok(mut stream) = req.stream() else {
        return Ok(body);
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| GatewayError::bad_request("invalid_body", format!("Could not read the request body: {e}")))?;
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
