//! Getting cost events into D1, exactly once, off the request path.
//!
//! A request hands its event over after its response (for a stream, after the last byte).
//! Events finished within `GATHER_MS` of each other in an isolate go to the Queue packed
//! into messages (JSON arrays of them), the messages in one `sendBatch`, sent from the
//! `wait_until` of the request that finished first (which keeps the isolate alive until
//! they are sent); the queue consumer writes each batch of messages to D1 in one
//! transaction. If the send fails the events are written to D1 directly; if that fails
//! too they are parked in KV, and the cron moves parked events to D1. A batch whose D1
//! write keeps failing reaches the dead-letter queue, whose consumer parks it likewise.
//! Inserts are idempotent on request id and the rollup only counts rows inserted and not
//! yet rolled up, so redelivery never doubles a request.

use super::state::now_ms;
use super::store;
use crate::config::Deployment;
use crate::ledger::{check_event_json, events_in_message, pack, CostEvent, Facts, Outcome};
use crate::model::geo::Caller;
use crate::model::usage::Consumed;
use crate::policy::attempts::AttemptLog;
use crate::policy::tags::Tags;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use worker::js_sys::JSON;
use worker::wasm_bindgen::JsValue;
use worker::{Context, D1Database, Delay, Env, Headers, KvStore, MessageBatch, QueueContentType, RawMessageBuilder};

pub const QUEUE_BINDING: &str = "COST_EVENTS";
pub const DEAD_LETTER_QUEUE: &str = "llm-edge-gateway-cost-events-dlq";
const PARKED_PREFIX: &str = "ledger:parked:";
const UNREADABLE_PREFIX: &str = "ledger:unreadable:";

/// Per-request fault injection for the ledger's fallback paths, honoured only where
/// `ALLOW_TEST_FAULTS = "true"` (the test environment): `x-gateway-test-fault: queue`
/// makes the queue send fail. The header is not read elsewhere.
pub fn queue_fault(allowed: bool, headers: &Headers) -> bool {
    super::state::test_fault(allowed, headers).as_deref() == Some("queue")
}

/// How long the first event of a batch waits for others. Under load, one queue call then
/// carries many events; alone, an event reaches the queue this much later, which nothing
/// waits for: the consumer's own batching waits longer. Each queue call costs the sending
/// isolate more than the events it carries (on Miniflare at c=16, 100 ms took 3% off the
/// CPU per request that 20 ms cost).
const GATHER_MS: u64 = 100;
/// The events gathered go to the queue packed, several to a message: Queue operations
/// are billed per message (per 64 KB of it), and each message costs the queue and the
/// consumer work of its own. A message carries at most 128 KB; and at most
/// `MESSAGE_EVENTS` events, so that the consumer's batch of `max_batch_size = 4`
/// messages (wrangler.toml) is at most 100 events, one short D1 transaction that does
/// not hold the database's single writer for long.
const MAX_MESSAGE_BYTES: usize = 120_000;
const MESSAGE_EVENTS: usize = 25;
/// One `sendBatch` carries at most 100 messages and 256 KB in all.
const BATCH_MESSAGES: usize = 100;
const MAX_BATCH_BYTES: usize = 250_000;
/// D1 takes a value of up to 2 MB: the bound JSON array of one insert stays well below.
const MAX_INSERT_BYTES: usize = 1_000_000;

/// A cost event as it travels: its JSON text (what the queue carries, KV parks and D1's
/// insert reads), and its id.
struct Event {
    id: String,
    json: String,
}

impl Event {
    fn of(e: &CostEvent) -> Option<Event> {
        let json = serde_json::to_string(e).ok()?;
        Some(Event { id: e.request_id.clone(), json })
    }

    /// An event from JSON text that claims to be one, checked.
    fn read(json: String) -> Result<Event, String> {
        let id = check_event_json(json.as_bytes())?;
        Ok(Event { id, json })
    }
}

/// Events finished in this isolate and not yet taken by a sender; `gathering` while one
/// request's `wait_until` is about to take them.
#[derive(Default)]
struct Outbox {
    events: Vec<Event>,
    gathering: bool,
}

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::default();
}

/// Hands the event over without delaying the response.
pub fn record(ctx: &Context, env: &Env, event: CostEvent, fail_queue: bool) {
    let Some(event) = Event::of(&event) else {
        worker::console_error!("cost event {} could not be serialised", event.request_id);
        return;
    };
    if fail_queue {
        ctx.wait_until(deliver(env.clone(), vec![event], true));
        return;
    }
    let leads = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        o.events.push(event);
        !std::mem::replace(&mut o.gathering, true)
    });
    if leads {
        ctx.wait_until(send_gathered(env.clone()));
    }
}

/// Waits for the events that finish meanwhile, then sends what has gathered. Taking them
/// ends the gathering, so an event that finishes while these are sent starts the next
/// batch rather than waiting for a request that may never come.
async fn send_gathered(env: Env) {
    Delay::from(Duration::from_millis(GATHER_MS)).await;
    let mut events = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        o.gathering = false;
        std::mem::take(&mut o.events)
    });
    for run in runs(&events, MAX_BATCH_BYTES, MESSAGE_EVENTS * BATCH_MESSAGES) {
        let batch: Vec<Event> = events.drain(..run.len()).collect();
        deliver(env.clone(), batch, false).await;
    }
}

/// The events as messages of one `sendBatch`.
async fn send(env: &Env, events: &[Event]) -> Result<(), String> {
    let queue = env.queue(QUEUE_BINDING).map_err(|e| e.to_string())?;
    let messages = runs(events, MAX_MESSAGE_BYTES, MESSAGE_EVENTS).into_iter().map(|run| {
        let text = json_array(events[run].iter().map(|e| e.json.as_str()));
        RawMessageBuilder::new(JsValue::from_str(&text)).build_with_content_type(QueueContentType::Text)
    });
    queue.send_raw_batch(messages).await.map_err(|e| e.to_string())
}

async fn deliver(env: Env, events: Vec<Event>, fail_queue: bool) {
    let sent =
        if fail_queue { Err("queue send failed (injected test fault)".to_string()) } else { send(&env, &events).await };
    let Err(queue_error) = sent else { return };
    let written = match store::d1(&env) {
        Ok(db) => write_events(&db, &events).await,
        Err(e) => Err(e.message),
    };
    let Err(d1_error) = written else { return };
    let parked = match store::kv(&env) {
        Ok(kv) => park(&kv, &events).await,
        Err(e) => Err(e.message),
    };
    if let Err(kv_error) = parked {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        worker::console_error!(
            "cost events {} lost: queue: {queue_error}; D1: {d1_error}; KV: {kv_error}",
            ids.join(", ")
        );
    }
}

/// A queue message's text: JSON text, or (from a producer before that) a JS object.
fn message_text(body: &JsValue) -> Option<String> {
    body.as_string().or_else(|| JSON::stringify(body).ok()?.as_string())
}

/// Where the dead-letter consumer keeps events: parked in KV for the cron, else straight in
/// D1. `Err` says why neither took them.
async fn keep(env: &Env, events: &[Event]) -> Result<(), String> {
    let parked = match store::kv(env) {
        Ok(_) if park_fault(env, events) => Err("KV refused them (injected test fault)".to_string()),
        Ok(kv) => park(&kv, events).await,
        Err(e) => Err(e.message),
    };
    let Err(kv_error) = parked else { return Ok(()) };
    let written = match store::d1(env) {
        Ok(db) => write_events(&db, events).await,
        Err(e) => Err(e.message),
    };
    written.map_err(|d1_error| format!("KV: {kv_error}; D1: {d1_error}"))
}

/// In the test environment only, a team named `fault-dlq-park…` makes parking its events
/// fail: the dead-letter consumer has no request whose headers could ask for it.
fn park_fault(env: &Env, events: &[Event]) -> bool {
    super::state::var(env, "ALLOW_TEST_FAULTS").as_deref() == Some("true")
        && events.iter().any(|e| e.json.contains("\"team\":\"fault-dlq-park"))
}

/// Parks events in KV for the cron, as few values as one insert each takes (usually one):
/// KV allows a Free plan 1,000 writes a day. A value is named after its first event, so a
/// batch parked again (a redelivered dead letter) replaces its own copy.
async fn park(kv: &KvStore, events: &[Event]) -> Result<(), String> {
    for run in runs(events, MAX_INSERT_BYTES, usize::MAX) {
        let group = &events[run];
        let text = match group {
            [one] => one.json.clone(),
            _ => json_array(group.iter().map(|e| e.json.as_str())),
        };
        let key = format!("{PARKED_PREFIX}{}", group[0].id);
        store::put_bytes(kv, &key, text.as_bytes()).await?;
    }
    Ok(())
}

/// A batch's events in one statement, read from one JSON array parameter: D1 allows 100
/// bound parameters per statement, and binding 30 per event across a statement per event
/// cost more than the rest of the batch (in the queue consumer's CPU, and in Miniflare's
/// D1 running beside it).
const INSERT: &str = "INSERT OR IGNORE INTO cost_events (request_id, ts_ms, day, key_id, team, feature, env, \
caller_country, caller_continent, caller_colo, residency_rule, jurisdiction, provider, region, deployment, \
endpoint_host, alias, model, input_tokens, output_tokens, cached_tokens, cache_write_tokens, cost_micros, priced, \
cost_estimated_micros, residency_breaches, status, outcome, latency_ms, ttfb_ms, attempts, attempts_detail) \
SELECT json_extract(value, '$.request_id'), json_extract(value, '$.ts_ms'), json_extract(value, '$.day'), \
json_extract(value, '$.key_id'), json_extract(value, '$.team'), json_extract(value, '$.feature'), \
json_extract(value, '$.env'), json_extract(value, '$.caller_country'), json_extract(value, '$.caller_continent'), \
json_extract(value, '$.caller_colo'), json_extract(value, '$.residency_rule'), json_extract(value, '$.jurisdiction'), \
json_extract(value, '$.provider'), json_extract(value, '$.region'), json_extract(value, '$.deployment'), \
json_extract(value, '$.endpoint_host'), json_extract(value, '$.alias'), json_extract(value, '$.model'), \
json_extract(value, '$.input_tokens'), json_extract(value, '$.output_tokens'), json_extract(value, '$.cached_tokens'), \
json_extract(value, '$.cache_write_tokens'), json_extract(value, '$.cost_micros'), \
json_extract(value, '$.cost_micros') IS NOT NULL, COALESCE(json_extract(value, '$.cost_estimated_micros'), 0), \
COALESCE(json_extract(value, '$.residency_breaches'), 0), \
json_extract(value, '$.status'), json_extract(value, '$.outcome'), \
json_extract(value, '$.latency_ms'), json_extract(value, '$.ttfb_ms'), json_array_length(value, '$.attempts'), \
json_extract(value, '$.attempts') FROM json_each(?1)";

/// Rolls up every inserted, not yet rolled-up row: in the same transaction as the
/// inserts, so a row is counted once however often its batch is delivered.
const ROLLUP: &str = "INSERT INTO cost_daily (day, team, feature, env, caller_country, caller_continent, \
jurisdiction, provider, region, deployment, model, requests, input_tokens, output_tokens, cached_tokens, \
cost_micros, cost_estimated_micros, residency_breaches, unpriced_requests) \
SELECT day, team, feature, env, COALESCE(caller_country, '-'), COALESCE(caller_continent, '-'), \
COALESCE(jurisdiction, '-'), COALESCE(provider, '-'), COALESCE(region, '-'), COALESCE(deployment, '-'), \
COALESCE(model, '-'), COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), \
SUM(COALESCE(cost_micros, 0)), SUM(cost_estimated_micros), SUM(residency_breaches), SUM(priced = 0) \
FROM cost_events WHERE rolled_up = 0 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 \
ON CONFLICT (day, team, feature, env, caller_country, caller_continent, jurisdiction, provider, region, \
deployment, model) DO UPDATE SET requests = requests + excluded.requests, \
input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens, \
cached_tokens = cached_tokens + excluded.cached_tokens, cost_micros = cost_micros + excluded.cost_micros, \
cost_estimated_micros = cost_estimated_micros + excluded.cost_estimated_micros, \
residency_breaches = residency_breaches + excluded.residency_breaches, \
unpriced_requests = unpriced_requests + excluded.unpriced_requests";

const MARK_ROLLED_UP: &str = "UPDATE cost_events SET rolled_up = 1 WHERE rolled_up = 0";

/// The runs of `events` that fit one JSON array each (`ledger::pack`).
fn runs(events: &[Event], max_bytes: usize, max_items: usize) -> Vec<std::ops::Range<usize>> {
    let lens: Vec<usize> = events.iter().map(|e| e.json.len()).collect();
    pack(&lens, max_bytes, max_items)
}

/// Events as one JSON array, for `INSERT`: each is JSON text already (a queue message, a
/// parked copy, or serialised once here).
fn json_array<'a>(events: impl Iterator<Item = &'a str>) -> String {
    let mut array = String::from("[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            array.push(',');
        }
        array.push_str(e);
    }
    array.push(']');
    array
}

/// One D1 batch (one transaction): the inserts (one per up to 1 MB of events), the
/// rollup, the mark.
async fn write_events(db: &D1Database, events: &[Event]) -> Result<(), String> {
    let mut statements = Vec::new();
    for run in runs(events, MAX_INSERT_BYTES, usize::MAX) {
        let array = json_array(events[run].iter().map(|e| e.json.as_str()));
        statements.push(db.prepare(INSERT).bind(&[JsValue::from_str(&array)]).map_err(|e| e.to_string())?);
    }
    statements.extend([db.prepare(ROLLUP), db.prepare(MARK_ROLLED_UP)]);
    let results = db.batch(statements).await.map_err(|e| e.to_string())?;
    match results.iter().find_map(|r| r.error()) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The queue consumer: the cost-event queue's batches go to D1 (retried by the queue on
/// failure); the dead-letter queue's are parked for the cron.
pub async fn consume(batch: MessageBatch<CostEvent>, env: &Env) -> worker::Result<()> {
    let mut events = Vec::new();
    let mut unreadable = Vec::new();
    for message in batch.raw_iter() {
        let Some(text) = message_text(&message.body()) else {
            unreadable.push(("not JSON".to_string(), String::new()));
            continue;
        };
        match events_in_message(&text) {
            Ok(items) => {
                for item in items {
                    match Event::read(item.to_string()) {
                        Ok(e) => events.push(e),
                        Err(why) => unreadable.push((why, item.to_string())),
                    }
                }
            }
            Err(why) => unreadable.push((why, text)),
        }
    }
    // Retrying cannot make them readable: kept aside in KV, for a person to look at.
    for (i, (why, text)) in unreadable.iter().enumerate() {
        worker::console_error!("unreadable cost event kept as {UNREADABLE_PREFIX}…: {why}");
        if let (Ok(kv), false) = (store::kv(env), text.is_empty()) {
            let key = format!("{UNREADABLE_PREFIX}{}-{i}", now_ms());
            store::put_bytes(&kv, &key, text.as_bytes()).await.map_err(worker::Error::RustError)?;
        }
    }
    if batch.queue() == DEAD_LETTER_QUEUE {
        match keep(env, &events).await {
            Ok(()) => batch.ack_all(),
            Err(why) => {
                // Never dropped: until a retry stores them, each event stays whole in the
                // worker's log (Workers Logs, `wrangler tail`), where a person can find it.
                let why = why.replace(['\n', '\r'], " ");
                for e in &events {
                    worker::console_error!("cost event not stored yet, kept here until it is: {} ({why})", e.json);
                }
                batch.retry_all();
            }
        }
        return Ok(());
    }
    match store::d1(env).map_err(|e| e.message) {
        Ok(db) => match write_events(&db, &events).await {
            Ok(()) => batch.ack_all(),
            Err(e) => {
                worker::console_error!("cost batch of {} not written, will retry: {e}", events.len());
                batch.retry_all();
            }
        },
        Err(e) => {
            worker::console_error!("{e}");
            batch.retry_all();
        }
    }
    Ok(())
}

/// Parked values a cron run moves at most: each costs a KV read and a delete, and an
/// invocation on the Free plan makes at most 50 subrequests (the rest of the cron takes a
/// few). A value holds up to 1 MB of events, so a run still moves thousands.
const PARKED_PER_RUN: u32 = 16;

/// The cron's part: parked events to D1, in one batch; each value is deleted from KV only
/// once its events are written. A value that does not hold cost events is moved aside
/// under `ledger:unreadable:`, so that it cannot hold back the values after it. Returns
/// how many events moved.
pub async fn move_parked(env: &Env) -> Result<usize, String> {
    let kv = store::kv(env).map_err(|e| e.message)?;
    let db = store::d1(env).map_err(|e| e.message)?;
    let page = store::list_page(env, PARKED_PREFIX, Some(PARKED_PER_RUN), None).await?;
    let mut events = Vec::new();
    let mut moved_keys = Vec::with_capacity(page.keys.len());
    for key in &page.keys {
        let Some(text) = kv.get(&key.name).text().await.map_err(|e| e.to_string())? else { continue };
        match parked_events(&text) {
            Ok(mut group) => {
                events.append(&mut group);
                moved_keys.push(key.name.clone());
            }
            Err(why) => {
                worker::console_error!("parked value {} is unreadable, moved to {UNREADABLE_PREFIX}: {why}", key.name);
                let aside = format!("{UNREADABLE_PREFIX}{}", &key.name[PARKED_PREFIX.len()..]);
                store::put_bytes(&kv, &aside, text.as_bytes()).await?;
                kv.delete(&key.name).await.map_err(|e| e.to_string())?;
            }
        }
    }
    if !events.is_empty() {
        write_events(&db, &events).await?;
    }
    for key in &moved_keys {
        kv.delete(key).await.map_err(|e| e.to_string())?;
    }
    Ok(events.len())
}

/// A parked value's events: one event, or a JSON array of them; all readable, or none.
fn parked_events(text: &str) -> Result<Vec<Event>, String> {
    events_in_message(text)?.into_iter().map(|item| Event::read(item.to_string())).collect()
}

/// Everything a request's cost event needs besides how it ended, owned so that a stream
/// can carry it to its last byte.
pub struct Bill {
    pub ctx: Rc<Context>,
    pub env: Env,
    pub request_id: String,
    pub started_ms: u64,
    pub key_id: String,
    pub tags: Tags,
    pub caller: Caller,
    pub rule: String,
    pub alias: String,
    pub fail_queue: bool,
}

/// How a request ended, as far as its bill goes.
pub struct Ending<'a> {
    pub served_by: Option<&'a Deployment>,
    /// What the answer consumed, if there was one; the attempts carry the rest.
    pub answer: Option<Consumed>,
    pub status: u16,
    pub outcome: Outcome,
    pub ttfb_ms: Option<u64>,
    pub attempts: &'a AttemptLog,
}

impl Bill {
    /// Records the event (after the response, through `wait_until`) and returns its cost,
    /// which counts against this isolate's view of the budgets at once.
    pub fn close(&self, end: Ending<'_>) -> u64 {
        let event = CostEvent::new(&Facts {
            request_id: &self.request_id,
            started_ms: self.started_ms,
            finished_ms: now_ms(),
            ttfb_ms: end.ttfb_ms,
            key_id: &self.key_id,
            tags: &self.tags,
            caller: &self.caller,
            rule: &self.rule,
            alias: &self.alias,
            deployment: end.served_by,
            provider: end.served_by.map(|d| d.provider.name()),
            answer: end.answer,
            status: end.status,
            outcome: end.outcome,
            attempts: end.attempts,
        });
        let cost = event.cost_micros;
        super::spend::note(&self.tags.team, &self.key_id, cost);
        record(&self.ctx, &self.env, event, self.fail_queue);
        cost
    }
}
