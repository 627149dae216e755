//! End to end through workerd: the ledger's fallback paths, each proven by counting rows.
//! D1 is broken by renaming `cost_events` away under the running gateway (this binary has
//! its own workerd and database), then restored, and the handlers run again.

mod support;

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::gateway::gateway;
use support::nonce;

fn ask(team: &str, fault: Option<&str>) -> String {
    let body = json!({"model": "single", "messages": [{"role": "user", "content": "hi [mock:prompt_tokens=10,completion_tokens=2]"}]});
    let mut headers = vec![("x-gateway-team", team)];
    if let Some(f) = fault {
        headers.push(("x-gateway-test-fault", f));
    }
    let r = gateway().chat(&body, &headers);
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-gateway-request-id").unwrap().to_string()
}

fn rows_for(id: &str) -> u64 {
    let rows = gateway().d1(&format!("SELECT COUNT(*) AS n FROM cost_events WHERE request_id = '{id}'"));
    rows[0]["n"].as_u64().unwrap()
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Renaming the table away breaks every write to it and keeps its rows for the repair.
fn break_d1() {
    gateway().d1("ALTER TABLE cost_events RENAME TO cost_events_away");
}

fn restore_d1() {
    gateway().d1("ALTER TABLE cost_events_away RENAME TO cost_events");
}

#[test]
fn every_request_lands_exactly_once_whatever_fails() {
    let team = nonce("faults");
    let g = gateway();

    // 1. The queue send fails: the event is written to D1 directly.
    let direct = ask(&team, Some("queue"));
    eventually("the directly written event", || rows_for(&direct) == 1);

    // 2. The queue send and D1 both fail: the event is parked in KV, then moved by the cron.
    break_d1();
    let parked = ask(&team, Some("queue"));
    eventually("the parked event", || g.kv_keys("ledger:parked:").contains(&format!("ledger:parked:{parked}")));
    let parked_copy = g.kv_get(&format!("ledger:parked:{parked}")).expect("the parked event's text");

    // 3. The queue works but its consumer cannot write: retried, then dead-lettered, then
    //    parked by the dead-letter consumer.
    let dead_lettered = ask(&team, None);
    eventually("the dead-lettered event to be parked", || {
        g.kv_keys("ledger:parked:").contains(&format!("ledger:parked:{dead_lettered}"))
    });

    restore_d1();
    g.run_cron();
    eventually("the cron to move parked events", || g.kv_keys("ledger:parked:").is_empty());
    for id in [&direct, &parked, &dead_lettered] {
        assert_eq!(rows_for(id), 1, "{id}");
    }

    // Running the handlers again changes nothing: every request exactly once, in the
    // events and in the rollup.
    g.run_cron();
    let more = ask(&team, None);
    eventually("a normal event after the repair", || rows_for(&more) == 1);
    let events = g
        .d1(&format!("SELECT COUNT(*) AS n, COUNT(DISTINCT request_id) AS ids FROM cost_events WHERE team = '{team}'"));
    assert_eq!((events[0]["n"].as_u64(), events[0]["ids"].as_u64()), (Some(4), Some(4)));
    let rollup = g.d1(&format!(
        "SELECT SUM(requests) AS requests, SUM(cost_micros) AS cost FROM cost_daily WHERE team = '{team}'"
    ));
    // 10 input tokens at $3 and 2 output tokens at $15 per million: 60 micro-dollars each.
    assert_eq!(rollup[0], json!({"requests": 4, "cost": 240}) as Value);

    // An event delivered again (here: parked again, as a redelivered dead letter would be)
    // is neither inserted nor counted twice.
    g.kv_put(&format!("ledger:parked:{parked}"), &parked_copy);
    g.run_cron();
    eventually("the cron to move the copy", || g.kv_keys("ledger:parked:").is_empty());
    assert_eq!(rows_for(&parked), 1);
    let again = g.d1(&format!(
        "SELECT SUM(requests) AS requests, SUM(cost_micros) AS cost FROM cost_daily WHERE team = '{team}'"
    ));
    assert_eq!(again[0], json!({"requests": 4, "cost": 240}) as Value);

    // Parked values as the cron meets them: groups of events in one value, more values than
    // one run moves, and a value that holds no cost event, moved aside so that it cannot
    // hold back the values after it.
    let original: Value = serde_json::from_str(&parked_copy).unwrap();
    let event = |id: &str| {
        let mut e = original.clone();
        e["request_id"] = json!(id);
        e.to_string()
    };
    let ids: Vec<String> = (0..40).map(|i| nonce(&format!("parked-group-{i}"))).collect();
    let mut values: Vec<(String, String)> = ids
        .chunks(2)
        .map(|p| (format!("ledger:parked:{}", p[0]), format!("[{},{}]", event(&p[0]), event(&p[1]))))
        .collect();
    values.push(("ledger:parked:0-not-an-event".to_string(), "{\"hello\": 1}".to_string()));
    g.kv_put_many(&values);
    g.run_cron();
    assert_eq!(g.kv_keys("ledger:parked:").len(), 5, "a run moves 16 values: the unreadable one and 15 groups");
    assert!(g.kv_get("ledger:unreadable:0-not-an-event").is_some_and(|v| v.contains("hello")));
    g.run_cron();
    assert!(g.kv_keys("ledger:parked:").is_empty());
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    let moved = g.d1(&format!(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT request_id) AS ids FROM cost_events WHERE request_id IN ({list})"
    ));
    assert_eq!((moved[0]["n"].as_u64(), moved[0]["ids"].as_u64()), (Some(40), Some(40)));

    // 4. The dead-letter consumer can store nowhere (KV refuses it, by a test fault on the
    //    team; D1 is broken): the event is never dropped. Each failed try writes it whole
    //    to the worker's log, and it is retried until D1 takes it.
    let nowhere = nonce("fault-dlq-park");
    break_d1();
    let unkept = ask(&nowhere, None);
    eventually("the event kept in the log", || {
        g.log_text()
            .lines()
            .any(|l| l.contains("not stored yet") && l.contains(&format!("\"request_id\":\"{unkept}\"")))
    });
    restore_d1();
    eventually("the dead letter to reach D1", || rows_for(&unkept) == 1);
}
