//! The trivial pass-through worker `make bench` measures next to the gateway: it buffers
//! the client's body, POSTs it to `UPSTREAM_URL` (or, for paths under `/stream/`, to
//! `UPSTREAM_STREAM_URL`) and returns the upstream response as is, its body streamed
//! through by the runtime, never copied into wasm. No auth, no parsing, no routing, no
//! ledger: the floor for a workers-rs worker on the same runtime.

use worker::{event, js_sys::Uint8Array, Context, Env, Fetch, Headers, Method, Request, RequestInit, Response, Result};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    if path == "/healthz" {
        return Response::ok("ok");
    }
    let var = if path.starts_with("/stream/") { "UPSTREAM_STREAM_URL" } else { "UPSTREAM_URL" };
    let upstream = env.var(var)?.to_string();
    let body = req.bytes().await?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(Uint8Array::from(body.as_slice()).into()));
    Fetch::Request(Request::new_with_init(&upstream, &init)?).send().await
}
