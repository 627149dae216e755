//! Streamed answers: hold the upstream stream until its first content (so a deployment
//! that fails before saying anything can still be fallen back from), then relay it as it
//! arrives, translated (and re-encoded for a client that speaks another format than
//! OpenAI's), and bill it after the last byte — or when the client goes away.
//!
//! The relay is the runtime's own pipe into a `TransformStream` whose callbacks are
//! synchronous wasm calls: one call per chunk, no promise or Rust future in between.

use super::ledger::{Bill, Ending};
use super::state::now_ms;
use super::upstream::{self, Pieces};
use crate::attempts::AttemptLog;
use crate::config::Deployment;
use crate::error::GatewayError;
use crate::ingress::StreamEncoder;
use crate::ledger::Outcome;
use crate::providers::{openai, ErrorClass, StreamEnd, StreamTranslator, Usage};
use std::cell::RefCell;
use std::rc::Rc;
use worker::js_sys::{Function, Object, Reflect, Uint8Array};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{
    ReadableStream, StreamPipeOptions, TransformStream, TransformStreamDefaultController, Transformer,
};
use worker::{Headers, Response, ResponseBuilder};

/// An upstream stream that has shown its first content: from here on the client is
/// committed to this deployment.
pub struct Opened {
    rest: ReadableStream,
    translator: Box<dyn StreamTranslator>,
    first: Vec<u8>,
}

/// Reads the upstream stream until its first content event or the deadline. A failure
/// carries what the provider reported consumed so far (Anthropic reports the input first).
pub async fn open(
    response: &Response,
    mut translator: Box<dyn StreamTranslator>,
    deadline: u64,
) -> Result<Opened, (ErrorClass, Option<Usage>)> {
    let rest = upstream::body_stream(response).ok_or((ErrorClass::Server, None))?;
    let mut pieces = Pieces::new(&rest);
    let mut first = Vec::new();
    while !translator.started() {
        let left = deadline.saturating_sub(now_ms()).max(1);
        match pieces.next(left).await {
            Ok(Some(chunk)) => translator.push(&chunk, &mut first),
            Ok(None) => return Err((ErrorClass::Server, translator.usage())),
            Err(class) => return Err((class, translator.usage())),
        }
    }
    pieces.release();
    Ok(Opened { rest, translator, first })
}

/// What the relay's callbacks share: the translation state, and how the stream ended.
struct Relay {
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
    fn chunk(&mut self, chunk: &Uint8Array) -> Option<Vec<u8>> {
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
            self.emit(&openai::stream_error_event(&e), out);
        }
        self.end = Some(end);
        end
    }
}

fn enqueue(controller: &TransformStreamDefaultController, bytes: &[u8]) -> bool {
    bytes.is_empty() || controller.enqueue_with_chunk(&Uint8Array::from(bytes)).is_ok()
}

/// Closes the client's side; through a catching call, because the client may have gone.
fn terminate(controller: &TransformStreamDefaultController) {
    if let Ok(f) = Reflect::get(controller, &JsValue::from_str("terminate")) {
        let _ = f.unchecked_into::<Function>().call0(controller);
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

pub fn respond(c: Committed, headers: Headers) -> Result<Response, GatewayError> {
    let Committed { opened, bill, deployment, attempts, ttfb_ms, encoder } = c;
    let relay = Rc::new(RefCell::new(Relay {
        translator: opened.translator,
        encoder,
        deployment: deployment.id.clone(),
        input: Vec::new(),
        translated: Vec::new(),
        end: None,
    }));
    let mut first = Vec::new();
    {
        let mut r = relay.borrow_mut();
        r.emit(&opened.first, &mut first);
    }
    let controller: Rc<RefCell<Option<TransformStreamDefaultController>>> = Rc::default();

    let start = {
        let controller = controller.clone();
        Closure::<dyn FnMut(TransformStreamDefaultController)>::new(move |c: TransformStreamDefaultController| {
            enqueue(&c, &first);
            *controller.borrow_mut() = Some(c);
        })
    };
    let transform = {
        let relay = relay.clone();
        Closure::<dyn FnMut(JsValue, TransformStreamDefaultController)>::new(
            move |chunk: JsValue, c: TransformStreamDefaultController| {
                let Some(bytes) = chunk.dyn_ref::<Uint8Array>() else { return };
                match relay.borrow_mut().chunk(bytes) {
                    None => {
                        let _ = c.enqueue_with_chunk(&chunk);
                    }
                    Some(out) => {
                        enqueue(&c, &out);
                    }
                }
            },
        )
    };
    let flush = {
        let relay = relay.clone();
        Closure::<dyn FnMut(TransformStreamDefaultController)>::new(move |c: TransformStreamDefaultController| {
            let mut out = Vec::new();
            relay.borrow_mut().finish(&mut out);
            enqueue(&c, &out);
        })
    };
    let transformer = Transformer::new();
    transformer.set_start(start.as_ref().unchecked_ref());
    transformer.set_transform(transform.as_ref().unchecked_ref());
    transformer.set_flush(flush.as_ref().unchecked_ref());
    let pipe = TransformStream::new_with_transformer(transformer.unchecked_ref::<Object>())
        .map_err(|e| GatewayError::internal(format!("Could not relay the stream: {e:?}")))?;
    let options = StreamPipeOptions::new();
    // An upstream failure must not abort the client's side: it gets an error event first.
    options.set_prevent_abort(true);
    let piped = opened.rest.pipe_to_with_options(&pipe.writable(), &options);

    let ctx = bill.ctx.clone();
    ctx.wait_until(async move {
        let failed = JsFuture::from(piped).await.is_err();
        let end = {
            let mut out = Vec::new();
            let end = relay.borrow_mut().finish(&mut out);
            if failed {
                if let Some(c) = controller.borrow().as_ref() {
                    if enqueue(c, &out) {
                        terminate(c);
                    }
                }
            }
            end
        };
        let usage = relay.borrow().translator.usage();
        bill.close(Ending {
            served_by: Some(&deployment),
            usage,
            status: 200,
            outcome: if end == StreamEnd::Complete { Outcome::Ok } else { Outcome::Cut },
            ttfb_ms: Some(ttfb_ms),
            attempts: &attempts,
        });
        // The callbacks live until the pipe has settled: the runtime calls none after.
        drop((start, transform, flush));
    });

    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    Ok(ResponseBuilder::new().with_headers(headers).stream(pipe.readable()))
}
