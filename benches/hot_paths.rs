//! Native microbenchmarks of the gateway's pure hot paths (`make bench` runs them and
//! reports the medians; `cargo bench --bench hot_paths` alone works too).
//!
//! Inputs are realistic and fixed: `bench/gateway-config.json` (the benchmark config: 16
//! deployments in 6 jurisdictions, 8 residency rules, 4 keys), the ~2 KB chat body in
//! `bench/payloads/chat-2k.json`, and streams recorded from the project's mock provider
//! (`benches/data/`: OpenAI SSE, Anthropic SSE and Bedrock event-stream, 100 content
//! chunks each), fed one event per network chunk as a provider sends them.
//!
//! Issue 7's targets: residency + routing ≤ 20 µs, request translation ≤ 50 µs for a
//! 2 KB body, stream translation ≤ 2 µs per chunk.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use llm_edge_gateway::config::{self, Gateway};
use llm_edge_gateway::ledger::pricing;
use llm_edge_gateway::model::chat::{self, ChatRequest};
use llm_edge_gateway::model::geo::Caller;
use llm_edge_gateway::model::usage::Usage;
use llm_edge_gateway::policy::keys::{self, KeyRing};
use llm_edge_gateway::policy::residency::{self, Subject};
use llm_edge_gateway::providers::{self, Auth, AwsCredentials};
use llm_edge_gateway::util::sse::SseDecoder;
use std::hint::black_box;
use std::time::Duration;

const CONFIG: &str = include_str!("../bench/gateway-config.json");
const BODY: &[u8] = include_bytes!("../bench/payloads/chat-2k.json");
const OPENAI_STREAM: &[u8] = include_bytes!("data/openai-stream.sse");
const ANTHROPIC_STREAM: &[u8] = include_bytes!("data/anthropic-stream.sse");
const BEDROCK_STREAM: &[u8] = include_bytes!("data/bedrock-stream.bin");

/// One deployment per provider wire format, for request and stream translation.
const PROVIDERS: &str = r#"{
  "deployments": [
    {"id": "openai", "provider": "openai", "model": "gpt-4.1-mini", "base_url": "https://eu.api.openai.com/v1",
     "api_key_secret": "OPENAI_KEY", "jurisdiction": "eu", "region": "eu", "price": {"input": "0.44", "output": "1.76"}},
    {"id": "anthropic", "provider": "anthropic", "model": "claude-haiku-4-5", "base_url": "https://api.anthropic.com/v1",
     "api_key_secret": "ANTHROPIC_KEY", "jurisdiction": "us", "region": "us", "price": {"input": "1.00", "output": "5.00"}},
    {"id": "bedrock", "provider": "bedrock", "model": "eu.anthropic.claude-haiku-4-5-v1:0",
     "base_url": "https://bedrock-runtime.eu-central-1.amazonaws.com", "aws_region": "eu-central-1",
     "aws_access_key_id_secret": "AWS_KEY_ID", "aws_secret_access_key_secret": "AWS_SECRET",
     "jurisdiction": "eu", "region": "eu-central-1", "price": {"input": "1.00", "output": "5.00"}}
  ],
  "aliases": [{"name": "all", "deployments": ["openai", "anthropic", "bedrock"]}],
  "residency": {"rules": [{"id": "default", "allow": ["any"]}]}
}"#;

fn bench_config() -> Gateway {
    let json = CONFIG.replace("@UPSTREAM@", "http://127.0.0.1:9").replace("@STREAM_UPSTREAM@", "http://127.0.0.1:9");
    config::parse(&json).expect("bench/gateway-config.json is a valid config")
}

fn caller(country: &str, continent: &str, location: Option<[f64; 2]>) -> Caller {
    Caller { location, ..Caller::new(Some(country), Some(continent), None) }
}

fn request() -> ChatRequest {
    chat::parse(BODY).expect("the 2 KB body parses")
}

/// Splits a recorded SSE stream into its events, each with its blank line.
fn sse_events(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(at) = stream[start..].windows(2).position(|w| w == b"\n\n") {
        out.push(&stream[start..start + at + 2]);
        start += at + 2;
    }
    if start < stream.len() {
        out.push(&stream[start..]);
    }
    out
}

/// Splits a recorded AWS event stream into its frames (each starts with its total length).
fn eventstream_frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

fn auth(api_key: &str) -> Auth {
    Auth { api_key: Some(api_key.to_string()), now_unix: 1_776_000_000, ..Auth::default() }
}

fn aws_auth() -> Auth {
    Auth {
        aws: Some(AwsCredentials {
            access_key_id: "AKIDEXAMPLEBENCH0001".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }),
        now_unix: 1_776_000_000,
        ..Auth::default()
    }
}

fn residency_routing(c: &mut Criterion) {
    let g = bench_config();
    let alias = g.alias("bench").expect("alias bench");
    let key = &g.config.keys[0];
    let callers = [
        ("frankfurt", caller("DE", "EU", Some([50.11, 8.68])), None),
        ("virginia", caller("US", "NA", Some([38.9, -77.0])), None),
        ("tokyo", caller("JP", "AS", Some([35.68, 139.69])), None),
        ("us-gdpr-tag", caller("US", "NA", Some([38.9, -77.0])), Some("gdpr")),
        ("unknown-location", caller("XX", "", None), None),
    ];
    let mut group = c.benchmark_group("residency_routing");
    for (name, caller, tag) in &callers {
        let tags: Vec<String> = tag.iter().map(|t| t.to_string()).collect();
        group.bench_function(*name, |b| {
            b.iter(|| {
                let subject = Subject {
                    caller: black_box(caller),
                    compliance: &tags,
                    team: key.team.as_deref(),
                    key_id: Some(&key.id),
                    key_policy: key.residency.as_deref(),
                };
                let decision = residency::decide(&g.config.residency, &subject).expect("a rule applies");
                let candidates = residency::candidates(&g, alias, &decision, caller);
                black_box((decision, candidates.kept.len()))
            })
        });
    }
    group.finish();

    // The other per-request decisions before routing: the key check and the body parse.
    let ring = KeyRing::build(&g, |_| None);
    c.bench_function("auth/key_sha256_lookup", |b| {
        b.iter(|| black_box(ring.authenticate(&g, Some(black_box("gw-bench-key"))).is_ok()))
    });
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Bytes(BODY.len() as u64));
    group.bench_function("parse_2k_body", |b| b.iter(|| black_box(chat::parse(black_box(BODY)).is_ok())));
    group.finish();
    let _ = keys::may_use(key, "bench");
}

fn request_translation(c: &mut Criterion) {
    let g = config::parse(PROVIDERS).expect("providers config");
    let req = request();
    let mut group = c.benchmark_group("request_translation");
    group.throughput(Throughput::Bytes(BODY.len() as u64));
    for (id, auth) in [("openai", auth("sk-bench")), ("anthropic", auth("sk-ant-bench")), ("bedrock", aws_auth())] {
        let d = g.deployment(id).expect("deployment");
        let provider = providers::for_deployment(d);
        group.bench_function(id, |b| b.iter(|| black_box(provider.build(d, black_box(&req), &auth).expect("builds"))));
    }
    group.finish();
}

fn stream_translation(c: &mut Criterion) {
    let g = config::parse(PROVIDERS).expect("providers config");
    let mut req = request();
    req.stream = true;
    let cases: [(&str, Vec<&[u8]>); 3] = [
        ("openai", sse_events(OPENAI_STREAM)),
        ("anthropic", sse_events(ANTHROPIC_STREAM)),
        ("bedrock", eventstream_frames(BEDROCK_STREAM)),
    ];
    let mut group = c.benchmark_group("stream_translation_per_chunk");
    for (id, chunks) in &cases {
        let provider = providers::for_deployment(g.deployment(id).expect("deployment"));
        // Sanity: the recording translates into a non-empty OpenAI stream.
        let mut t = provider.stream(&req);
        let mut out = Vec::new();
        for chunk in chunks {
            t.push(chunk, &mut out);
        }
        assert!(t.started() && !out.is_empty(), "{id}: the recorded stream translates");
        // Per chunk: one whole stream per iteration, reported per upstream chunk.
        group.throughput(Throughput::Elements(chunks.len() as u64));
        group.bench_function(*id, |b| {
            b.iter_batched(
                || (provider.stream(&req), Vec::with_capacity(64 * 1024)),
                |(mut t, mut out)| {
                    for chunk in chunks {
                        t.push(black_box(chunk), &mut out);
                    }
                    black_box((t.end(), out.len()))
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn decoding(c: &mut Criterion) {
    let events = sse_events(OPENAI_STREAM);
    let mut group = c.benchmark_group("decode_per_event");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("sse", |b| {
        b.iter(|| {
            let mut decoder = SseDecoder::new();
            let mut n = 0usize;
            for chunk in &events {
                decoder.push(black_box(chunk), |e| n += e.data.map_or(0, |d| d.len()));
            }
            black_box(n)
        })
    });
    let frames = eventstream_frames(BEDROCK_STREAM);
    group.throughput(Throughput::Elements(frames.len() as u64));
    group.bench_function("aws_eventstream", |b| {
        b.iter(|| {
            let mut decoder = llm_edge_gateway::providers::bedrock::eventstream::Decoder::new();
            let mut n = 0usize;
            for frame in &frames {
                decoder.push(black_box(frame), |m| n += m.payload.len()).expect("valid frames");
            }
            black_box(n)
        })
    });
    group.finish();
}

fn pricing_cost(c: &mut Criterion) {
    let g = bench_config();
    let price = &g.deployment("openai-fra").expect("deployment").price;
    let usage = Usage { input_tokens: 1_834, output_tokens: 412, cached_input_tokens: 1_024, ..Usage::default() };
    c.bench_function("pricing/cost_micros", |b| b.iter(|| black_box(pricing::cost_micros(price, black_box(&usage)))));
}

fn short() -> Criterion {
    // Short runs: `make bench` must finish within minutes on a shared 2-core machine.
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = hot_paths;
    config = short();
    targets = residency_routing, request_translation, stream_translation, decoding, pricing_cost
}
criterion_main!(hot_paths);
