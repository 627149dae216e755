//! A mock LLM provider for the gateway's end-to-end tests and for `make dev`.
//!
//! It speaks the providers' wire formats (OpenAI Chat Completions with Azure OpenAI's and
//! Mistral's flavours, Anthropic Messages also as Claude on Vertex AI, Bedrock Converse,
//! Google's GenerateContent as the Gemini API and Vertex AI serve it, and Google's OAuth
//! token endpoint; each format is one module), logs every request, and fails on demand. A
//! base URL like `http://127.0.0.1:PORT/<tag>/v1` names a deployment: the first path
//! segment is the request's tag. Each request's behaviour is, first that applies:
//! 1. a [`Script`] whose tag and needle match it (see [`MockServer::script`]);
//! 2. the last `[mock:key=value,...]` directive in its body (keys: see [`Behaviour`]);
//! 3. a normal, deterministic answer.
//!
//! Control over HTTP: `POST /_mock/script` (a script as JSON: `tag`, `needle`, `times`
//! and the [`Behaviour`] fields), `DELETE /_mock/script`, `GET /_mock/requests?needle=X`,
//! `GET /_mock/health`.

mod answer;
mod anthropic;
mod base64;
mod bedrock;
mod control;
mod eventstream;
mod faults;
mod gcp;
mod gemini;
mod http;
mod log;
mod openai;

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

pub use faults::{Behaviour, Script};

/// The body of a `garbled` answer: JSON cut short, in no provider's format.
pub const GARBLED_BODY: &str = r#"{"id": "mock-garbled", "choices": [{"#;
pub use log::LoggedRequest;

use faults::Scripts;
use http::{Request, Responder};
use log::RequestLog;

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Sleep between streamed events unless a behaviour says otherwise.
    pub chunk_delay_ms: u64,
}

pub(crate) struct State {
    options: Options,
    scripts: Scripts,
    log: RequestLog,
    seq: AtomicU64,
    stopping: AtomicBool,
    /// Access tokens the mock's OAuth endpoint issued, which its Vertex AI paths accept.
    tokens: Mutex<HashSet<String>>,
}

/// What a wire-format module needs to answer one provider request.
pub(crate) struct Call {
    pub tag: String,
    pub behaviour: Behaviour,
    /// Unique per request; makes ids like `chatcmpl-mock-7`.
    pub seq: u64,
    pub default_chunk_delay_ms: u64,
}

/// A running mock. Dropping it stops accepting connections.
pub struct MockServer {
    state: Arc<State>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Listens on `addr`, e.g. `127.0.0.1:0` for any free port; loopback only.
    pub fn start(addr: &str) -> io::Result<MockServer> {
        MockServer::start_with(addr, Options::default())
    }

    pub fn start_with(addr: &str, options: Options) -> io::Result<MockServer> {
        let addr: SocketAddr =
            addr.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        if !addr.ip().is_loopback() {
            let message = format!("{addr}: the mock only listens on loopback addresses");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            options,
            scripts: Scripts::default(),
            log: RequestLog::default(),
            seq: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            tokens: Mutex::default(),
        });
        let acceptor = thread::Builder::new().name(format!("mock-provider-{}", addr.port())).spawn({
            let state = Arc::clone(&state);
            move || accept(&listener, &state)
        })?;
        Ok(MockServer { state, addr, acceptor: Some(acceptor) })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self, script: Script) {
        self.state.scripts.add(script);
    }

    /// Removes every script, including other tests' (prefer unique needles and `times`).
    pub fn clear_scripts(&self) {
        self.state.scripts.clear();
    }

    /// Every provider request so far (not `/_mock/` control calls), oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state.log.matching("")
    }

    /// The logged requests whose body contains `needle`.
    pub fn requests_matching(&self, needle: &str) -> Vec<LoggedRequest> {
        self.state.log.matching(needle)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::Relaxed);
        // `accept` only notices the flag once a connection arrives: make one.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
            if let Some(acceptor) = self.acceptor.take() {
                let _ = acceptor.join();
            }
        }
    }
}

fn accept(listener: &TcpListener, state: &Arc<State>) {
    for stream in listener.incoming() {
        if state.stopping.load(Ordering::Relaxed) {
            return;
        }
        // Accept errors (e.g. out of file descriptors) are transient: keep serving.
        let Ok(stream) = stream else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let state = Arc::clone(state);
        // A connection's failure, even a panic, ends only that connection's thread.
        let _ = thread::Builder::new().spawn(move || {
            let bad_request = |why: &str| {
                openai::error_body(&format!("Malformed HTTP request: {why}"), Some("invalid_request_error"), None, None)
            };
            let _ = http::serve(stream, &state.stopping, bad_request, |request, out| handle(&state, request, out));
        });
    }
}

fn handle(state: &State, request: &Request, out: &mut Responder) -> io::Result<()> {
    let path = request.path();
    if path.starts_with("/_mock/") {
        return control::handle(state, request, out);
    }
    let tag = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    let body = String::from_utf8_lossy(&request.body).into_owned();
    let payload = bedrock::counted_payload(path, &body);
    state.log.push(LoggedRequest {
        tag: tag.to_string(),
        method: request.method.clone(),
        path: request.target.clone(),
        headers: request.headers.clone(),
        body: body.clone(),
        payload: payload.clone(),
        received_at: SystemTime::now(),
    });
    let behaviour = match faults::select(&state.scripts, tag, payload.as_deref().unwrap_or(&body)) {
        Ok(behaviour) => behaviour,
        Err(why) => {
            let message = format!("mock-provider: bad [mock:...] directive: {why}");
            let error = openai::error_body(&message, Some("invalid_request_error"), None, Some("mock_directive"));
            return out.json(400, &[], &error);
        }
    };
    if let Some(ms) = behaviour.first_byte_delay_ms {
        thread::sleep(Duration::from_millis(ms));
    }
    // Format-independent failures of a request that reached the provider.
    if behaviour.hang_up {
        return out.cut();
    }
    if behaviour.garbled {
        return out.send(200, &[("Content-Type", "application/json")], GARBLED_BODY.as_bytes());
    }
    let call = Call {
        tag: tag.to_string(),
        behaviour,
        seq: state.seq.fetch_add(1, Ordering::Relaxed),
        default_chunk_delay_ms: state.options.chunk_delay_ms,
    };
    // One arm per wire format (and its flavours). Azure OpenAI (`/openai/deployments/{d}/
    // chat/completions`, `/openai/v1/chat/completions`) and Mistral (`/<tag>/mistral/...`)
    // share OpenAI's path suffix and format.
    let rest = &path[1 + tag.len()..];
    let model_in_path = || path.rsplit("/models/").next().and_then(|m| m.split(':').next()).unwrap_or_default();
    match request.method.as_str() {
        "POST" if rest == "/token" => gcp::token(state, &call, request, out),
        "POST" if path.ends_with("/chat/completions") => {
            let flavour = if let Some(azure) = rest.strip_prefix("/openai/") {
                let deployment = azure.strip_prefix("deployments/").and_then(|d| d.split('/').next());
                openai::Flavour::Azure { deployment }
            } else if rest.starts_with("/mistral/") {
                openai::Flavour::Mistral
            } else {
                openai::Flavour::OpenAi
            };
            openai::chat(&call, request, flavour, out)
        }
        "POST" if path.ends_with("/messages") => anthropic::messages(&call, request, anthropic::Host::Anthropic, out),
        "POST" if path.ends_with("/messages/count_tokens") => anthropic::count_tokens(&call, request, false, out),
        // Gemini: `/v1beta/models/{m}:generateContent`; Vertex AI's Gemini publisher:
        // `/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`.
        "POST" if path.ends_with(":generateContent") || path.ends_with(":streamGenerateContent") => {
            let host =
                if path.contains("/publishers/google/") { gemini::Host::Vertex } else { gemini::Host::GeminiApi };
            gemini::generate(state, &call, request, host, path.ends_with(":streamGenerateContent"), out)
        }
        // Claude on Vertex AI: `.../publishers/anthropic/models/count-tokens:rawPredict`, and
        // for a model, `.../models/{m}:rawPredict` and `:streamRawPredict`.
        "POST" if path.ends_with("/publishers/anthropic/models/count-tokens:rawPredict") => {
            if !gcp::authorized(state, request) {
                return out.json(401, &[], &gcp::unauthenticated());
            }
            anthropic::count_tokens(&call, request, true, out)
        }
        "POST" if path.ends_with(":rawPredict") || path.ends_with(":streamRawPredict") => {
            if !gcp::authorized(state, request) {
                return out.json(401, &[], &gcp::unauthenticated());
            }
            anthropic::messages(&call, request, anthropic::Host::Vertex { model: model_in_path() }, out)
        }
        // Bedrock's InvokeModel for Claude: `{base}/model/{modelId}/invoke` and
        // `/invoke-with-response-stream`.
        "POST"
            if path.contains("/model/")
                && (path.ends_with("/invoke") || path.ends_with("/invoke-with-response-stream")) =>
        {
            let model = path.rsplit("/model/").next().and_then(|m| m.split('/').next()).unwrap_or_default();
            let model = model.replace("%3A", ":");
            bedrock::invoke(&call, request, &model, path.ends_with("/invoke-with-response-stream"), out)
        }
        "POST" if path.contains("/model/") && path.ends_with("/count-tokens") => {
            let model = path.rsplit("/model/").next().and_then(|m| m.split('/').next()).unwrap_or_default();
            bedrock::count_tokens(&call, request, &model.replace("%3A", ":"), out)
        }
        // Bedrock: `{base}/model/{modelId}/converse` and `/converse-stream`.
        "POST" if path.contains("/model/") && path.ends_with("/converse") => {
            bedrock::converse(&call, request, false, out)
        }
        "POST" if path.contains("/model/") && path.ends_with("/converse-stream") => {
            bedrock::converse(&call, request, true, out)
        }
        "GET" if path.ends_with("/models") => openai::models(out),
        _ => openai::not_found(request, out),
    }
}
