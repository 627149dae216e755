//! Streamed answers: hold the upstream stream until its first content (so a deployment
//! that fails before saying anything can still be fallen back from), then relay it chunk
//! by chunk, translated (and re-encoded for a client that speaks another format than
//! OpenAI's), and bill it after the last byte — or when the client goes away.

use super::ledger::{Bill, Ending};
use super::respond;
use super::state::now_ms;
use super::upstream;
use crate::attempts::AttemptLog;
use crate::config::Deployment;
use crate::error::GatewayError;
use crate::ingress::StreamEncoder;
use crate::ledger::Outcome;
use crate::providers::{openai, ErrorClass, StreamEnd, StreamTranslator, Usage};
use futures_util::{stream, StreamExt};
use worker::{ByteStream, Headers, Response};

/// An upstream stream that has shown its first content: from here on the client is
/// committed to this deployment.
pub struct Opened {
    body: ByteStream,
    translator: Box<dyn StreamTranslator>,
    first: Vec<u8>,
}

/// Reads the upstream stream until its first content event or the deadline. A failure
/// carries what the provider reported consumed so far (Anthropic reports the input first).
pub async fn open(
    response: &mut Response,
    mut translator: Box<dyn StreamTranslator>,
    deadline: u64,
) -> Result<Opened, (ErrorClass, Option<Usage>)> {
    let mut body = response.stream().map_err(|_| (ErrorClass::Unreachable, None))?;
    let mut first = Vec::new();
    while !translator.started() {
        let left = deadline.saturating_sub(now_ms()).max(1);
        match upstream::next_chunk(&mut body, left).await {
            Ok(Some(chunk)) => translator.push(&chunk, &mut first),
            Ok(None) => return Err((ErrorClass::Server, translator.usage())),
            Err(class) => return Err((class, translator.usage())),
        }
    }
    Ok(Opened { body, translator, first })
}

struct Relay {
    opened: Opened,
    bill: Bill,
    deployment: Deployment,
    attempts: AttemptLog,
    ttfb_ms: u64,
    /// Re-encodes the OpenAI stream, cut-stream error included, for a non-OpenAI client.
    encoder: Option<Box<dyn StreamEncoder>>,
    billed: bool,
}

impl Relay {
    fn bill(&mut self, end: StreamEnd) {
        if std::mem::replace(&mut self.billed, true) {
            return;
        }
        let outcome = if end == StreamEnd::Complete { Outcome::Ok } else { Outcome::Cut };
        self.bill.close(Ending {
            served_by: Some(&self.deployment),
            usage: self.opened.translator.usage(),
            status: 200,
            outcome,
            ttfb_ms: Some(self.ttfb_ms),
            attempts: &self.attempts,
        });
    }

    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            let openai = self.next_openai().await?;
            let Some(encoder) = &mut self.encoder else { return Some(openai) };
            let mut out = Vec::new();
            encoder.push(&openai, &mut out);
            if !out.is_empty() {
                return Some(out);
            }
            if self.billed {
                return None;
            }
        }
    }

    async fn next_openai(&mut self) -> Option<Vec<u8>> {
        if !self.opened.first.is_empty() {
            return Some(std::mem::take(&mut self.opened.first));
        }
        loop {
            let mut out = Vec::new();
            match self.opened.body.next().await {
                Some(Ok(chunk)) => {
                    self.opened.translator.push(&chunk, &mut out);
                    if !out.is_empty() {
                        return Some(out);
                    }
                }
                Some(Err(_)) | None => {
                    let end = self.opened.translator.end();
                    if end == StreamEnd::Cut {
                        let e = GatewayError::new(
                            502,
                            "upstream_error",
                            "stream_cut",
                            format!(
                                "The stream from deployment `{}` ended before its final event; the answer is incomplete.",
                                self.deployment.id
                            ),
                        );
                        out.extend_from_slice(&openai::stream_error_event(&e));
                    }
                    self.bill(end);
                    return (!out.is_empty()).then_some(out);
                }
            }
        }
    }
}

/// A client that disconnects mid-stream still gets its request billed, for what the
/// upstream had sent.
impl Drop for Relay {
    fn drop(&mut self) {
        self.bill(StreamEnd::Cut);
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
    let relay = Relay {
        opened: c.opened,
        bill: c.bill,
        deployment: c.deployment,
        attempts: c.attempts,
        ttfb_ms: c.ttfb_ms,
        encoder: c.encoder,
        billed: false,
    };
    let body = stream::unfold(Some(relay), |relay| async move {
        let mut relay = relay?;
        match relay.next().await {
            Some(out) if !relay.billed => Some((Ok::<Vec<u8>, worker::Error>(out), Some(relay))),
            Some(out) => Some((Ok(out), None)),
            None => None,
        }
    });
    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    Ok(Response::from_stream(body).map_err(respond::internal)?.with_headers(headers))
}
