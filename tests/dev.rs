//! `make dev` as a newcomer runs it: the demo config served, the cron run on a timer (as
//! wrangler dev never runs crons), a country header alone standing in for `request.cf`, and
//! the dev-only admin token.
//! On free ports and a fresh state directory, like every end-to-end test.

mod support;

use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::gateway::{free_port, root, watch};
use support::http;

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn make_dev_serves_the_demo_runs_the_cron_and_stands_in_for_request_cf() {
    let (port, mock_port, inspector) = (free_port(), free_port(), free_port());
    let state = root().join("target/e2e").join(format!("dev-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let log = std::fs::File::create(root().join("target/e2e").join(format!("dev-{}.log", std::process::id()))).unwrap();
    // A session of its own: the recipe's job control must never reach the terminal (or
    // process group) of whoever runs the tests.
    let mut make = Command::new("setsid");
    make.current_dir(root())
        .arg("make")
        .arg("-s")
        .arg("dev")
        .arg(format!("DEV_PORT={port}"))
        .arg(format!("MOCK_PORT={mock_port}"))
        .arg(format!("DEV_INSPECTOR_PORT={inspector}"))
        .arg(format!("STATE={}", state.display()))
        .arg("DEV_CRON_S=2")
        .env("WRANGLER_REGISTRY_PATH", state.join("registry"))
        .env("WRANGLER_CI_DISABLE_CONFIG_WATCHING", "true")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut dev = make.spawn().expect("make dev starts");
    // Stops make dev however the test ends; stopped itself when the test ends well.
    let mut watchdog = watch(dev.id());
    let base = format!("http://127.0.0.1:{port}");

    wait_for("the gateway's first 200", Duration::from_secs(120), || {
        http::send("GET", &format!("{base}/healthz"), &[], None).ok().filter(|r| r.status == 200)
    });
    let body = json!({"model": "demo", "messages": [{"role": "user", "content": "Where am I served?"}]}).to_string();
    let ask = |country: &str| {
        let headers = [("authorization", "Bearer gw-demo-local-only"), ("x-gateway-geo-country", country)];
        http::send("POST", &format!("{base}/v1/chat/completions"), &headers, Some(body.as_bytes())).unwrap()
    };
    let r = ask("JP");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.header("x-gateway-rule"), r.header("x-gateway-deployment")),
        (Some("apac-callers"), Some("mock-apac"))
    );

    // The dev-only admin token the README names opens the admin API.
    let admin = [("authorization", "Bearer adm-demo-local-only")];
    let r = http::send("GET", &format!("{base}/admin/residency"), &admin, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["residency"]["rules"].is_array(), "{}", r.text());

    // The cron's spend snapshot reaches the dev KV without anyone triggering it: the key's
    // own spend then says when it was taken.
    wait_for("the cron's spend snapshot", Duration::from_secs(60), || {
        let headers = [("authorization", "Bearer gw-demo-local-only")];
        let r = http::send("GET", &format!("{base}/v1/spend"), &headers, None).ok()?;
        r.json()["as_of_ms"].as_u64().filter(|at| *at > 0)
    });

    let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", dev.id())]).status();
    let _ = dev.wait();
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}
