//! Streamed answers: hold the upstream stream until its first content (so a deployment
//! that fails before saying anything can still be fallen back from), then relay it as it
//! arrives, translated (and re-encoded for a client that speaks another format than
//! OpenAI's), and bill it after the last byte — or when the client goes away.
//!
//! The relay is a chain of promise callbacks into wasm — read a chunk, translate it,
//! write it to the runtime's native `IdentityTransformStream`, read the next — with no
//! Rust future, JavaScript stream controller or pipe in between: per chunk, those cost
//! the runtime more than anything the gateway does (BENCHMARKS.md, CPU per chunk).

use super::glue::Head;
use super::ledger::{Bill, Ending};
use super::respond;
use super::upstream::{self, Deadline, Pieces, ReadResult};
use crate::config::Deployment;
use crate::ingress::StreamEncoder;
use crate::ledger::Outcome;
use crate::model::error::GatewayError;
use crate::model::error_class::ErrorClass;
use crate::model::usage::Consumed;
use crate::policy::attempts::AttemptLog;
use crate::providers::{StreamEnd, StreamTranslator};
use std::cell::RefCell;
use std::rc::Rc;
use worker::js_sys::{global, Array, Function, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::Response;
use worker::web_sys::{ReadableStream, ReadableStreamDefaultReader, TransformStream, WritableStreamDefaultWriter};

/// An upstream stream that has shown its first content: from here on the client is
/// committed to this deployment.
pub struct Opened {
    rest: ReadableStream,
    translator: Box<dyn StreamTranslator>,
    first: Vec<u8>,
}

impl Opened {
    /// Where the provider says it processed the request, as far as the stream has said.
    pub fn reported_geo(&self) -> Option<&'static str> {
        self.translator.reported_geo()
    }

    /// Gives the stream up before anything of it reached the client: the upstream call is
    /// cancelled, and what it had consumed is returned for the bill.
    pub fn abandon(self) -> Consumed {
        // Awaited, so that a cancellation the runtime rejects is never an uncaught error.
        let cancelled = JsFuture::from(self.rest.cancel());
        worker::wasm_bindgen_futures::spawn_local(async move {
            let _ = cancelled.await;
        });
        self.translator.consumed()
    }
}

/// Reads the upstream stream until its first content event or the deadline. A failure
/// carries what the stream is billed for so far (Anthropic reports the input first).
pub async fn open(
    response: &upstream::Answer,
    mut translator: Box<dyn StreamTranslator>,
    deadline: &mut Deadline,
) -> Result<Opened, (ErrorClass, Consumed)> {
    let rest = response.body().ok_or_else(|| (ErrorClass::Server, translator.consumed()))?;
    let mut pieces = Pieces::new(&rest);
    let mut first = Vec::new();
    while !translator.started() {
        match pieces.next(deadline).await {
            Ok(Some(chunk)) => translator.push(&chunk, &mut first),
            Ok(None) => return Err((ErrorClass::Server, translator.consumed())),
            Err(class) => return Err((class, translator.consumed())),
        }
    }
    pieces.release();
    Ok(Opened { rest, translator, first })
}

/// What the relay's callbacks share: the streams, the translation state, and how the
/// stream ended.
struct Relay {
    upstream: ReadableStreamDefaultReader,
    client: WritableStreamDefaultWriter,
    /// Resolves the promise the billing waits for.
    ended: Option<Function>,
    translator: Box<dyn StreamTranslator>,
    /// Re-encodes the OpenAI stream, cut-stream error included, for a non-OpenAI client.
    encoder: Option<Box<dyn StreamEncoder>>,
    deployment: String,
    /// The upstream chunk, copied into wasm memory (one buffer, reused).
    input: Vec<u8>,
    translated: Vec<u8>,
    end: Option<StreamEnd>,
}

impl Relay {
    fn emit(&mut self, openai: &[u8], out: &mut Vec<u8>) {
        match &mut self.encoder {
            Some(encoder) => encoder.push(openai, out),
            None => out.extend_from_slice(openai),
        }
    }

    /// Translates one upstream chunk; `None` when it passes to the client unchanged.
    fn translate(&mut self, chunk: &Uint8Array) -> Option<Vec<u8>> {
        self.input.resize(chunk.length() as usize, 0);
        chunk.copy_to(&mut self.input);
        let mut translated = std::mem::take(&mut self.translated);
        translated.clear();
        self.translator.push(&self.input, &mut translated);
        let unchanged = self.encoder.is_none() && translated == self.input;
        let mut out = Vec::new();
        if !unchanged {
            self.emit(&translated, &mut out);
        }
        self.translated = translated;
        (!unchanged).then_some(out)
    }

    /// How the stream ended (decided once), and the bytes that say so to the client: an
    /// error event when it was cut before its final event.
    fn finish(&mut self, out: &mut Vec<u8>) -> StreamEnd {
        if let Some(end) = self.end {
            return end;
        }
        let end = self.translator.end();
        if end == StreamEnd::Cut {
            let e = GatewayError::new(
                502,
                "upstream_error",
                "stream_cut",
                format!(
                    "The stream from deployment `{}` ended before its final event; the answer is incomplete.",
                    self.deployment
                ),
            );
            let event = self.translator.cut_event(&e);
            self.emit(&event, out);
        }
        self.end = Some(end);
        end
    }

    fn write(&self, chunk: &JsValue, quiet: &Callback) {
        // Not awaited: the runtime queues what a slow client has not read yet, and a
        // model's stream is small and slow next to a client connection. A write fails
        // only once the client has gone, which `gone` handles.
        let _ = self.client.write_with_chunk(chunk).catch(quiet);
    }

    fn write_bytes(&self, bytes: &[u8], quiet: &Callback) {
        if !bytes.is_empty() {
            self.write(&Uint8Array::from(bytes).into(), quiet);
        }
    }

    /// Ends the client's stream (with an error event when it was cut) and lets the
    /// billing go ahead. Once only.
    fn end(&mut self, quiet: &Callback) {
        let Some(ended) = self.ended.take() else { return };
        let mut out = Vec::new();
        self.finish(&mut out);
        self.write_bytes(&out, quiet);
        let _ = self.client.close().catch(quiet);
        let _ = ended.call0(&JsValue::NULL);
    }
}

type Callback = Closure<dyn FnMut(JsValue)>;

/// The callbacks of one relay, alive until it has ended.
struct Callbacks {
    chunk: Callback,
    failed: Callback,
    /// Only held: the runtime calls it when the client goes away.
    _gone: Callback,
    quiet: Callback,
}

type Slot = Rc<RefCell<Option<Callbacks>>>;

fn with_callbacks(slot: &Slot, f: impl FnOnce(&Callbacks)) {
    if let Some(callbacks) = slot.borrow().as_ref() {
        f(callbacks);
    }
}

/// Asks for the next upstream chunk, handled by the relay's callbacks.
fn read_next(relay: &Relay, callbacks: &Callbacks) {
    let _ = relay.upstream.read().then2(&callbacks.chunk, &callbacks.failed);
}

/// The runtime's native pass-through stream where there is one (workerd), else a standard
/// identity `TransformStream`.
fn identity_stream() -> Result<TransformStream, JsValue> {
    match Reflect::get(&global(), &JsValue::from_str("IdentityTransformStream")) {
        Ok(ctor) if ctor.is_function() => {
            Ok(Reflect::construct(ctor.unchecked_ref::<Function>(), &Array::new())?.unchecked_into())
        }
        _ => TransformStream::new(),
    }
}

pub struct Committed {
    pub opened: Opened,
    pub bill: Bill,
    pub deployment: Deployment,
    pub attempts: AttemptLog,
    pub ttfb_ms: u64,
    pub encoder: Option<Box<dyn StreamEncoder>>,
}

fn relay_error(e: JsValue) -> GatewayError {
    GatewayError::internal(format!("Could not relay the stream: {e:?}"))
}

/// The client's response, made while the upstream is still silent: after a pause, the
/// runtime's work to make a response would otherwise land on the path to the first token
/// (BENCHMARKS.md, time to first token). Dropped unused when the attempt falls back.
pub struct Outlet {
    client: WritableStreamDefaultWriter,
    response: Response,
}

impl Outlet {
    pub fn new(mut headers: Head) -> Result<Outlet, GatewayError> {
        let pipe = identity_stream().map_err(relay_error)?;
        let client = pipe.writable().get_writer().map_err(relay_error)?;
        let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
        let _ = headers.set("cache-control", "no-cache");
        Ok(Outlet { client, response: respond::with_stream(&headers, &pipe.readable())? })
    }
}

pub fn respond(c: Committed, outlet: Outlet) -> Response {
    let Committed { opened, bill, deployment, attempts, ttfb_ms, encoder } = c;
    let Outlet { client, response } = outlet;
    let upstream: ReadableStreamDefaultReader = opened.rest.get_reader().unchecked_into();
    let mut resolve = None;
    let ended = Promise::new(&mut |res, _| resolve = Some(res));
    let relay = Rc::new(RefCell::new(Relay {
        upstream,
        client,
        ended: resolve,
        translator: opened.translator,
        encoder,
        deployment: deployment.id.clone(),
        input: Vec::new(),
        translated: Vec::new(),
        end: None,
    }));
    let slot: Slot = Rc::default();

    let chunk = {
        let (relay, slot) = (relay.clone(), slot.clone());
        let read = ReadResult::new();
        Callback::new(move |result: JsValue| {
            with_callbacks(&slot, |callbacks| {
                let quiet = &callbacks.quiet;
                let mut relay = relay.borrow_mut();
                if relay.ended.is_none() {
                    return;
                }
                let Some(value) = read.chunk(&result) else {
                    relay.end(quiet);
                    return;
                };
                if let Some(bytes) = value.dyn_ref::<Uint8Array>() {
                    match relay.translate(bytes) {
                        None => relay.write(&value, quiet),
                        Some(out) => relay.write_bytes(&out, quiet),
                    }
                }
                read_next(&relay, callbacks);
            });
        })
    };
    // The upstream failed (a reset connection): the client gets what the translator makes
    // of a cut stream.
    let failed = {
        let (relay, slot) = (relay.clone(), slot.clone());
        Callback::new(move |_: JsValue| {
            with_callbacks(&slot, |callbacks| relay.borrow_mut().end(&callbacks.quiet));
        })
    };
    // The client went away: stop reading the upstream, which ends the relay.
    let gone = {
        let relay = relay.clone();
        Callback::new(move |_: JsValue| {
            let _ = relay.borrow().upstream.cancel();
        })
    };
    let quiet = Callback::new(|_: JsValue| {});
    {
        let mut r = relay.borrow_mut();
        let _ = r.client.closed().catch(&gone);
        let mut first = Vec::new();
        r.emit(&opened.first, &mut first);
        r.write_bytes(&first, &quiet);
    }
    *slot.borrow_mut() = Some(Callbacks { chunk, failed, _gone: gone, quiet });
    with_callbacks(&slot, |callbacks| read_next(&relay.borrow(), callbacks));

    let ctx = bill.ctx.clone();
    ctx.wait_until(async move {
        let _ = JsFuture::from(ended).await;
        let (end, consumed) = {
            let mut r = relay.borrow_mut();
            (r.finish(&mut Vec::new()), r.translator.consumed())
        };
        bill.close(Ending {
            served_by: Some(&deployment),
            answer: Some(consumed),
            status: 200,
            outcome: if end == StreamEnd::Complete { Outcome::Ok } else { Outcome::Cut },
            ttfb_ms: Some(ttfb_ms),
            attempts: &attempts,
        });
        // No callback runs after the end.
        slot.borrow_mut().take();
    });

    response
}
