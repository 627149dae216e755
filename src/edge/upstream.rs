//! Outbound calls and body reading, with the time limits the runtime does not impose.
//!
//! Whole bodies are read with one `arrayBuffer()` each, not chunk by chunk: every chunk
//! pulled into wasm is a promise round trip (and, with a deadline, a timer), which cost
//! more CPU than everything the gateway decides about a request.

use super::glue::Head;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::providers::UpstreamRequest;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use worker::js_sys::{global, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{
    AbortController, AbortSignal, ReadableStream, ReadableStreamDefaultReader, RequestInit, WorkerGlobalScope,
};
use worker::{Delay, Request};

/// One attempt's time limit, shared by everything the attempt waits for (the response
/// head, then the body or the stream's first content).
pub enum Deadline {
    /// For a whole answer: the runtime's `AbortSignal.timeout`, which ends the call and its
    /// body at the deadline with no timer, callback or future of ours (those cost about 3%
    /// of a non-streamed request's CPU).
    Signal(AbortSignal),
    /// For a stream, whose limit ends at its first content, and a signal's cannot be called
    /// off: one timer, and a controller that ends the call when the timer fires first.
    Timer(Pin<Box<Delay>>, AbortController),
}

impl Deadline {
    pub fn for_answer(timeout_ms: u64) -> Self {
        Deadline::Signal(AbortSignal::timeout_with_u32(u32::try_from(timeout_ms).unwrap_or(u32::MAX)))
    }

    pub fn for_stream(timeout_ms: u64) -> Result<Self, ErrorClass> {
        let controller = AbortController::new().map_err(|_| ErrorClass::Unreachable)?;
        Ok(Deadline::Timer(Box::pin(Delay::from(Duration::from_millis(timeout_ms))), controller))
    }

    fn signal(&self) -> AbortSignal {
        match self {
            Deadline::Signal(signal) => signal.clone(),
            Deadline::Timer(_, controller) => controller.signal(),
        }
    }

    /// `work`, or `Err(Timeout)` once the deadline has passed. A timer wakes only the task
    /// that first waited on it.
    async fn within<T>(&mut self, work: impl Future<Output = Result<T, ErrorClass>>) -> Result<T, ErrorClass> {
        match self {
            // The signal fails the runtime's promise that `work` waits for, and says why.
            Deadline::Signal(signal) => match work.await {
                Err(_) if signal.aborted() => Err(ErrorClass::Timeout),
                outcome => outcome,
            },
            Deadline::Timer(timer, controller) => match select(Box::pin(work), timer.as_mut()).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(_) => {
                    controller.abort();
                    Err(ErrorClass::Timeout)
                }
            },
        }
    }
}

/// An upstream's answer: the runtime's response, used as is (the `worker` crate's wrapper
/// reads properties the gateway never looks at).
pub struct Answer(worker::web_sys::Response);

impl Answer {
    pub fn status(&self) -> u16 {
        self.0.status()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.0.headers().get(name).ok().flatten()
    }

    /// The body's JavaScript stream; `None` for an empty body.
    pub fn body(&self) -> Option<ReadableStream> {
        self.0.body()
    }
}

/// Sends the request; gives up at the deadline without a response head.
pub async fn send(up: &UpstreamRequest, deadline: &mut Deadline) -> Result<Answer, ErrorClass> {
    let mut headers = Head::new();
    for (name, value) in &up.headers {
        headers.set(name, value).map_err(|_| ErrorClass::BadRequest)?;
    }
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers.build());
    init.set_body(&Uint8Array::from(up.body.as_slice()));
    init.set_signal(Some(&deadline.signal()));
    let scope: WorkerGlobalScope = global().unchecked_into();
    let fetching = scope.fetch_with_str_and_init(&up.url, &init);
    let sending = async {
        let response = JsFuture::from(fetching).await.map_err(|_| ErrorClass::Unreachable)?;
        Ok(Answer(response.unchecked_into()))
    };
    deadline.within(sending).await
}

/// A body read whole, from the runtime's `arrayBuffer()`.
async fn whole(array_buffer: Result<Promise, JsValue>) -> Result<Vec<u8>, JsValue> {
    let buffer = JsFuture::from(array_buffer?).await?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A whole upstream body, within the deadline.
pub async fn read_all(answer: &Answer, deadline: &mut Deadline) -> Result<Vec<u8>, ErrorClass> {
    let reading = async { whole(answer.0.array_buffer()).await.map_err(|_| ErrorClass::Unreachable) };
    deadline.within(reading).await
}

/// What a stream read resolved to, read with keys made once (a JS string per read and
/// key adds up over a stream).
pub struct ReadResult {
    done: JsValue,
    value: JsValue,
}

impl ReadResult {
    pub fn new() -> Self {
        ReadResult { done: JsValue::from_str("done"), value: JsValue::from_str("value") }
    }

    /// The chunk a read returned; `None` at the end of the stream.
    pub fn chunk(&self, result: &JsValue) -> Option<JsValue> {
        let field = |key: &JsValue| Reflect::get(result, key).unwrap_or(JsValue::UNDEFINED);
        (!field(&self.done).is_truthy()).then(|| field(&self.value))
    }
}

/// Reads a stream piece by piece, for a caller that must look at each piece as it comes
/// (a stream held until its first content). Dropped unreleased, it cancels the stream, so
/// an upstream given up on is closed rather than left to the collector.
pub struct Pieces {
    reader: Option<ReadableStreamDefaultReader>,
    result: ReadResult,
}

impl Pieces {
    pub fn new(stream: &ReadableStream) -> Self {
        Pieces { reader: Some(stream.get_reader().unchecked_into()), result: ReadResult::new() }
    }

    /// The next piece, or `Ok(None)` at the end; a reset connection is `Err(Unreachable)`,
    /// none before the deadline is `Err(Timeout)`.
    pub async fn next(&mut self, deadline: &mut Deadline) -> Result<Option<Vec<u8>>, ErrorClass> {
        let Some(reader) = &self.reader else { return Ok(None) };
        let read: Promise = reader.read();
        let reading = async {
            let result = JsFuture::from(read).await.map_err(|_| ErrorClass::Unreachable)?;
            Ok(self.result.chunk(&result).map(|chunk| Uint8Array::new(&chunk).to_vec()))
        };
        deadline.within(reading).await
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
pub async fn read_client_body(
    req: &worker::web_sys::Request,
    headers: &worker::Headers,
    limit: usize,
) -> Result<Vec<u8>, GatewayError> {
    let unreadable =
        |e: worker::Error| GatewayError::bad_request("invalid_body", format!("Could not read the request body: {e}"));
    let declared = headers.get("content-length").ok().flatten().and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n <= limit) {
        let body = whole(req.array_buffer()).await.map_err(|e| unreadable(e.into()))?;
        return if body.len() > limit { Err(GatewayError::payload_too_large(limit)) } else { Ok(body) };
    }
    let mut too_large = declared.is_some();
    let mut body = Vec::new();
    let Ok(mut stream) = Request::from(Clone::clone(req)).stream() else {
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
