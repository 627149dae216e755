//! The trivial pass-through worker `make bench` measures next to the gateway: it buffers
//! the client's body, POSTs it to `UPSTREAM_URL` (or, for paths under `/stream/` and
//! `/relay/`, to `UPSTREAM_STREAM_URL`) and returns the upstream response.
//!
//! Under `/stream/` the body is streamed through by the runtime, never copied into wasm:
//! the floor for a workers-rs worker on the same runtime. Under `/relay/` each chunk is
//! read into wasm by a promise callback and written, unchanged, to an
//! `IdentityTransformStream` — the gateway's relay with nothing of the gateway in it: the
//! floor for any worker that must see every chunk of a stream, as the gateway must (to
//! bill it, and to end a cut stream with an error event). Under `/held/` the same relay
//! starts only once a chunk with content has arrived, as the gateway's does (so that it
//! can still fall back): the floor for a worker that holds its answer until then.

use std::cell::RefCell;
use std::rc::Rc;
use worker::js_sys::{global, Array, Function, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::closure::Closure;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::web_sys::{ReadableStream, ReadableStreamDefaultReader, TransformStream};
use worker::{event, Context, Env, Fetch, Headers, Method, Request, RequestInit, Response, ResponseBody, Result};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let path = req.path();
    if path == "/healthz" {
        return Response::ok("ok");
    }
    let held = path.starts_with("/held/");
    let relay = held || path.starts_with("/relay/");
    let var = if relay || path.starts_with("/stream/") { "UPSTREAM_STREAM_URL" } else { "UPSTREAM_URL" };
    let upstream = env.var(var)?.to_string();
    let body = req.bytes().await?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(Uint8Array::from(body.as_slice()).into()));
    let response = Fetch::Request(Request::new_with_init(&upstream, &init)?).send().await?;
    match response.body() {
        ResponseBody::Stream(stream) if relay => {
            let first = if held { until_content(stream).await? } else { Vec::new() };
            let readable = relay_each_chunk(stream, &first, &ctx)?;
            Ok(Response::builder().with_headers(response.headers().clone()).stream(readable))
        }
        _ => Ok(response),
    }
}

type Callback = Closure<dyn FnMut(JsValue)>;

/// The stream's chunks up to and including the first that carries content.
async fn until_content(stream: &ReadableStream) -> Result<Vec<u8>> {
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut seen = Vec::new();
    loop {
        let result = JsFuture::from(reader.read()).await?;
        if Reflect::get(&result, &"done".into())?.is_truthy() {
            break;
        }
        let chunk: Uint8Array = Reflect::get(&result, &"value".into())?.unchecked_into();
        let start = seen.len();
        seen.extend(chunk.to_vec());
        // Non-empty content: the stream's opening chunk carries `"content":""`.
        if seen[start..].windows(12).any(|w| w.starts_with(b"\"content\":\"") && w[11] != b'"') {
            break;
        }
    }
    reader.release_lock();
    Ok(seen)
}

fn relay_each_chunk(stream: &ReadableStream, first: &[u8], ctx: &Context) -> Result<ReadableStream> {
    let ctor: Function = Reflect::get(&global(), &"IdentityTransformStream".into())?.unchecked_into();
    let pipe: TransformStream = Reflect::construct(&ctor, &Array::new())?.unchecked_into();
    let writer = pipe.writable().get_writer()?;
    if !first.is_empty() {
        let _ = writer.write_with_chunk(&Uint8Array::from(first).into());
    }
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut resolve = None;
    let done = Promise::new(&mut |res, _| resolve = Some(res));
    // The callback asks for the next chunk with itself, so it lives in a slot it can see.
    let slot: Rc<RefCell<Option<Callback>>> = Rc::default();
    let (me, next) = (slot.clone(), reader.clone());
    let mut seen = Vec::new();
    let callback = Callback::new(move |result: JsValue| {
        if Reflect::get(&result, &"done".into()).unwrap_or_default().is_truthy() {
            let _ = writer.close();
            if let Some(resolve) = resolve.take() {
                let _ = resolve.call0(&JsValue::NULL);
            }
            return;
        }
        let chunk = Reflect::get(&result, &"value".into()).unwrap_or_default();
        if let Some(bytes) = chunk.dyn_ref::<Uint8Array>() {
            seen.resize(bytes.length() as usize, 0);
            bytes.copy_to(&mut seen);
        }
        let _ = writer.write_with_chunk(&chunk);
        if let Some(callback) = me.borrow().as_ref() {
            let _ = next.read().then(callback);
        }
    });
    let _ = reader.read().then(&callback);
    *slot.borrow_mut() = Some(callback);
    ctx.wait_until(async move {
        let _ = JsFuture::from(done).await;
        slot.borrow_mut().take();
    });
    Ok(pipe.readable())
}
