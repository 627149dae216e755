//! Starts the gateway under `wrangler dev` (real workerd, local KV and D1) against the
//! in-process mock provider, on free loopback ports with a fresh state directory.
//!
//! Rust never drops statics, so a test binary cannot stop its servers on exit itself: each
//! `wrangler dev` runs in its own process group, watched by a small shell loop that kills
//! the group once the test process is gone, whether the tests passed or panicked.

use super::http;
use mock_provider::MockServer;
use serde_json::{json, Value};
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const KEY: &str = "gw-test-key";
/// Bound to team `search`, with env `prod` as its default tag.
pub const TEAM_KEY: &str = "gw-team-key";
/// Three requests a minute (the `RL_TINY` binding).
pub const LIMITED_KEY: &str = "gw-limited-key";
/// A hard monthly budget of $0.0001.
pub const BUDGET_KEY: &str = "gw-budget-key";
/// May only use the alias `single`.
pub const NARROW_KEY: &str = "gw-narrow-key";
/// Held in a Worker secret rather than as a hash in the config.
pub const SECRET_KEY: &str = "gw-secret-held-key";
pub const PROVIDER_KEY: &str = "sk-test-PROVIDERSECRET-1234567890";
pub const MAX_BODY: usize = 64 * 1024;
/// Admin tokens by label, as the `ADMIN_TOKEN` secret lists them.
pub const ADMIN_COMPLIANCE: &str = "adm-compliance-token";
pub const ADMIN_PLATFORM: &str = "adm-platform-token";
/// The SigV4 credentials of deployment `bedrock-eu`, held in Worker secrets.
pub const AWS_ACCESS_KEY_ID: &str = "AKIDTESTBEDROCKEU001";
pub const AWS_SECRET_ACCESS_KEY: &str = "test/Bedrock+Secret/0123456789abcdefghijkl";
pub const AWS_SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjTESTSESSIONTOKEN0123456789";
/// The Bedrock API key of deployment `bedrock-us-key`.
pub const BEDROCK_API_KEY: &str = "bedrock-api-key-TEST-0123456789";
/// The keys of deployments `azure-eu` / `azure-v1`, `mistral-eu` and `gemini`.
pub const AZURE_API_KEY: &str = "azure-key-TEST-0123456789abcdef";
pub const MISTRAL_API_KEY: &str = "mistral-key-TEST-0123456789";
pub const GEMINI_API_KEY: &str = "AIzaTEST-gemini-key-0123456789";
/// The mock's OAuth endpoints (tags) the two test service accounts exchange their JWTs at:
/// one shared by the `vertex-eu` and `vertex-claude` deployments, one used by
/// `vertex-once` alone, so a test can count its exchanges.
pub const GCP_TOKEN_TAG: &str = "gcp-token";
pub const GCP_TOKEN_ONCE_TAG: &str = "gcp-token-once";

pub struct Gateway {
    pub base: String,
    pub state_dir: PathBuf,
    log: PathBuf,
    // Held, never waited for: the watchdog ends both after this process.
    _wrangler: Child,
    _watchdog: Child,
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn mock() -> &'static MockServer {
    static MOCK: OnceLock<MockServer> = OnceLock::new();
    MOCK.get_or_init(|| MockServer::start("127.0.0.1:0").expect("mock provider starts"))
}

/// The gateway with `TRUST_GEO_HEADERS = "true"`, as in the dev and test environments.
pub fn gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start("trusted", true))
}

/// The same gateway with `TRUST_GEO_HEADERS` off, as in production.
pub fn untrusted_gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| Gateway::start("untrusted", false))
}

fn sha256_hex(s: &str) -> String {
    llm_edge_gateway::util::hash::sha256_hex(s.as_bytes())
}

fn deployment(id: &str, jurisdiction: &str, region: &str, location: [f64; 2]) -> Value {
    json!({
        "id": id, "provider": "openai", "model": format!("model-{id}"),
        "base_url": format!("{}/{id}/v1", mock().base_url()),
        "jurisdiction": jurisdiction, "region": region, "location": location,
        "first_byte_timeout_ms": 2000,
        "price": price(id)
    })
}

/// A Bedrock deployment at `{mock}/{id}`, signing for `aws_region`.
fn bedrock(id: &str, jurisdiction: &str, aws_region: &str, model: &str, location: [f64; 2]) -> Value {
    let mut d = deployment(id, jurisdiction, aws_region, location);
    d["provider"] = json!("bedrock");
    d["model"] = json!(model);
    d["base_url"] = json!(format!("{}/{id}", mock().base_url()));
    d["aws_region"] = json!(aws_region);
    d
}

/// Each deployment's USD per million tokens; ledger tests recompute costs from these.
pub fn price(deployment: &str) -> Value {
    match deployment {
        "eu-1" | "eu-2" => json!({"input": "3.30", "output": "16.50", "cached_input": "0.33"}),
        "claude-1" => json!({"input": "3.00", "output": "15.00", "cached_input": "0.30", "cache_write": "3.75"}),
        "claude-us" | "bedrock-eu" | "bedrock-us-key" => {
            json!({"input": "3.30", "output": "16.50", "cached_input": "0.33", "cache_write": "4.125"})
        }
        _ => json!({"input": "3.00", "output": "15.00", "cached_input": "0.30"}),
    }
}

/// The config every end-to-end test runs against.
pub fn test_config() -> Value {
    let mut keyed = deployment("keyed", "us", "us-east-1", [39.0, -77.5]);
    keyed["api_key_secret"] = json!("TEST_PROVIDER_KEY");
    let mut unset = deployment("unset-secret", "us", "us-east-1", [39.0, -77.5]);
    unset["api_key_secret"] = json!("NEVER_SET_PROVIDER_KEY");
    // Anthropic's API processes anywhere unless a request asks for US inference.
    let mut claude = deployment("claude-1", "global", "global", [39.0, -77.5]);
    claude["provider"] = json!("anthropic");
    claude["api_key_secret"] = json!("TEST_PROVIDER_KEY");
    // Routing: a weighted pair, a flaky deployment with a quick circuit breaker, context
    // windows of three sizes, a text-only and a vision deployment.
    let us = |id: &str| deployment(id, "us", "us-east-1", [39.0, -77.5]);
    let mut flaky = us("flaky");
    flaky["health"] = json!({"failure_threshold": 2, "window_ms": 30000, "cooldown_ms": 2500});
    // Trips at its first failure, for the long-answer test.
    let mut slowpoke = us("slowpoke");
    slowpoke["health"] = json!({"failure_threshold": 1, "window_ms": 30000, "cooldown_ms": 30000});
    let with = |mut d: Value, capabilities: Value| {
        d["capabilities"] = capabilities;
        d
    };
    let routing = vec![
        us("w-a"),
        us("w-b"),
        flaky,
        slowpoke,
        us("steady"),
        us("solo"),
        with(us("ctx-small"), json!({"context_window": 8000})),
        with(us("ctx-tiny"), json!({"context_window": 4000})),
        with(us("ctx-big"), json!({"context_window": 200000})),
        with(us("text-only"), json!({"vision": false})),
        us("seeing"),
    ];
    let mut dead = deployment("dead", "us", "us-east-1", [39.0, -77.5]);
    // Port 1: nothing listens there and an unprivileged process cannot. A port that was
    // free when the config was written could be handed out again (once, wrangler dev
    // itself was given it, and the "dead" deployment answered 404).
    dead["base_url"] = json!("http://127.0.0.1:1/dead/v1");
    let mut claude_unset = deployment("claude-unset", "global", "global", [39.0, -77.5]);
    claude_unset["provider"] = json!("anthropic");
    claude_unset["api_key_secret"] = json!("NEVER_SET_PROVIDER_KEY");
    // Held to US inference (`inference_geo`), which only Claude 4.6 and later take.
    let mut claude_us = deployment("claude-us", "us", "us-east-1", [39.0, -77.5]);
    claude_us["provider"] = json!("anthropic");
    claude_us["model"] = json!("claude-sonnet-4-6");
    claude_us["api_key_secret"] = json!("TEST_PROVIDER_KEY");
    let mut bedrock_eu =
        bedrock("bedrock-eu", "europe", "eu-central-1", "eu.anthropic.claude-sonnet-4-5-20250929-v1:0", [50.1, 8.7]);
    bedrock_eu["aws_access_key_id_secret"] = json!("TEST_AWS_ACCESS_KEY_ID");
    bedrock_eu["aws_secret_access_key_secret"] = json!("TEST_AWS_SECRET_ACCESS_KEY");
    bedrock_eu["aws_session_token_secret"] = json!("TEST_AWS_SESSION_TOKEN");
    let mut bedrock_us_key =
        bedrock("bedrock-us-key", "us", "us-east-1", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", [39.0, -77.5]);
    bedrock_us_key["api_key_secret"] = json!("TEST_BEDROCK_API_KEY");
    let mut config = json!({
        "deployments": [
            deployment("us-1", "us", "us-east-1", [39.0, -77.5]),
            deployment("eu-1", "eu", "eu-central-1", [50.1, 8.7]),
            deployment("eu-2", "eu", "eu-west-3", [48.9, 2.4]),
            deployment("jp-1", "apac", "ap-northeast-1", [35.7, 139.7]),
            deployment("sg-1", "apac", "ap-southeast-1", [1.35, 103.8]),
            keyed,
            unset,
            dead,
            claude,
            claude_unset,
            claude_us,
            bedrock_eu,
            bedrock_us_key
        ],
        "aliases": [
            {"name": "chat", "description": "every region", "deployments": ["us-1", "eu-1", "eu-2", "jp-1", "sg-1"]},
            {"name": "single", "deployments": ["us-1"]},
            {"name": "keyed", "deployments": ["keyed"]},
            {"name": "unset", "deployments": ["unset-secret"]},
            {"name": "dead", "deployments": ["dead"]},
            {"name": "ab", "strategy": "weighted", "deployments": ["w-a", "w-b"], "weights": {"w-a": 90, "w-b": 10}},
            {"name": "ab-sticky", "strategy": "weighted", "sticky": "user", "deployments": ["w-a", "w-b"], "weights": {"w-a": 50, "w-b": 50}},
            {"name": "breaker", "deployments": ["flaky", "steady"]},
            {"name": "long", "deployments": ["slowpoke", "steady"]},
            {"name": "solo", "deployments": ["solo"]},
            {"name": "ctx", "deployments": ["ctx-small", "ctx-tiny", "ctx-big"]},
            {"name": "vision", "deployments": ["text-only", "seeing"]},
            {"name": "claude", "deployments": ["claude-1"]},
            {"name": "claude-unset", "deployments": ["claude-unset"]},
            {"name": "claude-then-openai", "deployments": ["claude-1", "us-1"]},
            {"name": "bedrock", "deployments": ["bedrock-eu"]},
            {"name": "bedrock-key", "deployments": ["bedrock-us-key"]},
            {"name": "claude-us-or-bedrock", "deployments": ["claude-us", "claude-1", "bedrock-us-key"]},
            {"name": "claude-us-then-openai", "deployments": ["claude-us", "us-1"]},
            {"name": "mistral-then-openai", "deployments": ["mistral-eu", "eu-1"]}
        ],
        "keys": [
            {"id": "test", "sha256": sha256_hex(KEY)},
            {"id": "team-bound", "sha256": sha256_hex(TEAM_KEY), "team": "search", "env": "prod"},
            {"id": "narrow", "sha256": sha256_hex(NARROW_KEY), "aliases": ["single"]},
            {"id": "limited", "sha256": sha256_hex(LIMITED_KEY), "rate_limit": "RL_TINY"},
            {"id": "budgeted", "sha256": sha256_hex(BUDGET_KEY), "budget": {"monthly_usd": "0.0001"}},
            {"id": "secret-held", "secret": "GATEWAY_KEY_SECRET_HELD"}
        ],
        "residency": {
            "compliance_tags": {"gdpr": ["eu", "uk", "ch"], "us-only": ["us"]},
            "rules": [
                {"id": "gdpr-tag", "when": {"compliance": ["gdpr"]}, "allow": ["eu"]},
                // The EU/EEA, the UK or Switzerland: what Bedrock's `eu.` profiles may reach.
                {"id": "eu-callers", "when": {"eu": true}, "allow": ["europe"]},
                {"id": "apac-callers", "when": {"continents": ["AS", "OC"]}, "allow": ["apac"]},
                {"id": "default", "allow": ["any"]}
            ]
        },
        // Shared deployments never trip a breaker between tests; `flaky` has its own.
        "limits": {"max_body_bytes": MAX_BODY, "max_attempts": 3, "health": {"failure_threshold": 1000}},
        "budgets": {"teams": {"softcap": {"monthly_usd": "0.000001", "mode": "soft"},
            "failcap": {"monthly_usd": "0.0001", "mode": "hard"}}}
    });
    config["deployments"].as_array_mut().unwrap().extend(routing);
    let (deployments, aliases) = google_azure_mistral();
    config["deployments"].as_array_mut().unwrap().extend(deployments);
    config["aliases"].as_array_mut().unwrap().extend(aliases);
    config
}

/// Azure OpenAI, Mistral, the Gemini API and Vertex AI deployments, and an alias each.
fn google_azure_mistral() -> (Vec<Value>, Vec<Value>) {
    let eu = |id: &str, provider: &str| {
        let mut d = deployment(id, "eu", "eu", [50.1, 8.7]);
        d["provider"] = json!(provider);
        d["base_url"] = json!(format!("{}/{id}", mock().base_url()));
        d
    };
    let global = |mut d: Value| {
        d["jurisdiction"] = json!("global");
        d["region"] = json!("global");
        d.as_object_mut().unwrap().remove("location");
        d
    };
    let mut azure_eu = eu("azure-eu", "azure_openai");
    azure_eu["model"] = json!("gpt-4o-mini-eu");
    azure_eu["api_version"] = json!("2024-10-21");
    azure_eu["azure_deployment_type"] = json!("data_zone_eu");
    azure_eu["api_key_secret"] = json!("TEST_AZURE_API_KEY");
    let mut azure_v1 = global(eu("azure-v1", "azure_openai"));
    azure_v1["model"] = json!("gpt-4o-mini-global");
    azure_v1["api_version"] = json!("v1");
    azure_v1["azure_deployment_type"] = json!("global");
    azure_v1["api_key_secret"] = json!("TEST_AZURE_API_KEY");
    let mut mistral = eu("mistral-eu", "mistral");
    mistral["model"] = json!("mistral-small-latest");
    mistral["base_url"] = json!(format!("{}/mistral-eu/mistral/v1", mock().base_url()));
    mistral["api_key_secret"] = json!("TEST_MISTRAL_API_KEY");
    let mut gemini = global(eu("gemini", "gemini"));
    gemini["model"] = json!("gemini-2.5-flash");
    gemini["base_url"] = json!(format!("{}/gemini/v1beta", mock().base_url()));
    gemini["api_key_secret"] = json!("TEST_GEMINI_API_KEY");
    let vertex = |id: &str, publisher: &str, model: &str, secret: &str| {
        let mut d = eu(id, "vertex");
        d["model"] = json!(model);
        d["gcp_project"] = json!("llm-edge-gateway-test");
        d["gcp_location"] = json!("eu");
        d["vertex_publisher"] = json!(publisher);
        d["gcp_service_account_secret"] = json!(secret);
        d
    };
    let mut vertex_once = global(vertex("vertex-once", "google", "gemini-2.5-flash", "TEST_GCP_SERVICE_ACCOUNT_ONCE"));
    vertex_once["gcp_location"] = json!("global");
    let deployments = vec![
        azure_eu,
        azure_v1,
        mistral,
        gemini,
        vertex("vertex-eu", "google", "gemini-2.5-flash", "TEST_GCP_SERVICE_ACCOUNT"),
        vertex("vertex-claude", "anthropic", "claude-sonnet-4-6", "TEST_GCP_SERVICE_ACCOUNT"),
        vertex_once,
    ];
    let aliases = ["azure-eu", "azure-v1", "mistral-eu", "gemini", "vertex-eu", "vertex-claude", "vertex-once"]
        .map(|id| json!({"name": id, "deployments": [id]}))
        .to_vec();
    (deployments, aliases)
}

/// The committed test service account's key file, its token endpoint the mock's `tag`.
pub fn gcp_service_account(tag: &str) -> String {
    let mut key: Value =
        serde_json::from_str(&fs::read_to_string(root().join("tests/data/gcp-service-account.json")).unwrap()).unwrap();
    key["token_uri"] = json!(format!("{}/{tag}/token", mock().base_url()));
    key.to_string()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wrangler() -> Command {
    let mut c = Command::new(root().join("node_modules/.bin/wrangler"));
    c.current_dir(root()).env("WRANGLER_SEND_METRICS", "false").env("CI", "true").stdin(Stdio::null());
    c
}

/// The worker build is `make`'s job; this only makes a plain `cargo test` after an edit
/// test the edited code rather than a stale build.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("make").args(["-s", "worker"]).current_dir(root()).status().expect("make runs");
        assert!(status.success(), "`make worker` failed");
    });
}

impl Gateway {
    fn start(name: &str, trust_geo_headers: bool) -> Gateway {
        ensure_built();
        let state_dir = root().join("target/e2e").join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&state_dir);
        fs::create_dir_all(&state_dir).unwrap();
        let env_file = state_dir.join("test.env");
        let config = test_config().to_string();
        assert!(!config.contains('\''), "the env file quotes the config in single quotes");
        fs::write(
            &env_file,
            format!(
                "GATEWAY_CONFIG='{config}'\nTEST_PROVIDER_KEY={PROVIDER_KEY}\nGATEWAY_KEY_SECRET_HELD={SECRET_KEY}\n\
                 TRUST_GEO_HEADERS={trust_geo_headers}\nADMIN_TOKEN=compliance:{ADMIN_COMPLIANCE},platform:{ADMIN_PLATFORM}\n\
                 TEST_AWS_ACCESS_KEY_ID={AWS_ACCESS_KEY_ID}\nTEST_AWS_SECRET_ACCESS_KEY={AWS_SECRET_ACCESS_KEY}\n\
                 TEST_AWS_SESSION_TOKEN={AWS_SESSION_TOKEN}\nTEST_BEDROCK_API_KEY={BEDROCK_API_KEY}\n\
                 TEST_AZURE_API_KEY={AZURE_API_KEY}\nTEST_MISTRAL_API_KEY={MISTRAL_API_KEY}\n\
                 TEST_GEMINI_API_KEY={GEMINI_API_KEY}\nTEST_GCP_SERVICE_ACCOUNT='{}'\nTEST_GCP_SERVICE_ACCOUNT_ONCE='{}'\n",
                gcp_service_account(GCP_TOKEN_TAG),
                gcp_service_account(GCP_TOKEN_ONCE_TAG),
            ),
        )
        .unwrap();

        let migrate = wrangler()
            .args(["d1", "migrations", "apply", "llm-edge-gateway", "--local", "--env", "test", "--persist-to"])
            .arg(&state_dir)
            .output()
            .expect("wrangler runs (did `make test` install it?)");
        assert!(migrate.status.success(), "migrations failed: {}", String::from_utf8_lossy(&migrate.stderr));

        let port = free_port();
        let log = state_dir.join("wrangler.log");
        let out = fs::File::create(&log).unwrap();
        // Each instance gets its own dev registry: wrangler reloads running sessions when
        // another session of the same worker registers, which would restart the first
        // gateway mid-test when the second one starts.
        let child = wrangler()
            .env("WRANGLER_REGISTRY_PATH", state_dir.join("registry"))
            .env("WRANGLER_CI_DISABLE_CONFIG_WATCHING", "true")
            .args(["dev", "--env", "test", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &free_port().to_string(), "--persist-to"])
            .arg(&state_dir)
            .arg("--env-file")
            .arg(&env_file)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("wrangler dev starts");
        let watchdog = watch(child.id());

        let gw =
            Gateway { base: format!("http://127.0.0.1:{port}"), state_dir, log, _wrangler: child, _watchdog: watchdog };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(180) {
            if let Ok(r) = http::send("GET", &self.url("/healthz"), &[], None) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("wrangler dev did not become ready; its log:\n{}", self.log_tail());
    }

    /// Everything the worker has logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v1/chat/completions` with the test key and extra headers.
    pub fn chat(&self, body: &Value, headers: &[(&str, &str)]) -> http::Response {
        let auth = format!("Bearer {KEY}");
        let mut all = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
        all.extend_from_slice(headers);
        http::send("POST", &self.url("/v1/chat/completions"), &all, Some(body.to_string().as_bytes()))
            .expect("gateway answers")
    }

    pub fn chat_stream(&self, body: &Value, headers: &[(&str, &str)]) -> http::Streaming {
        let auth = format!("Bearer {KEY}");
        let mut all = vec![("authorization", auth.as_str()), ("content-type", "application/json")];
        all.extend_from_slice(headers);
        http::send_streaming("POST", &self.url("/v1/chat/completions"), &all, Some(body.to_string().as_bytes()))
            .expect("gateway answers")
    }

    /// An admin API call with the compliance team's token.
    pub fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> http::Response {
        self.admin_as(ADMIN_COMPLIANCE, method, path, body)
    }

    pub fn admin_as(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> http::Response {
        let auth = format!("Bearer {token}");
        let body = body.map(Value::to_string);
        http::send(method, &self.url(path), &[("authorization", &auth)], body.as_deref().map(str::as_bytes))
            .expect("gateway answers")
    }

    /// Key names in the local KV namespace under `prefix`, through wrangler.
    pub fn kv_keys(&self, prefix: &str) -> Vec<String> {
        let out = local_store(|| {
            let mut c = wrangler();
            c.args(["kv", "key", "list", "--binding", "GATEWAY_KV", "--local", "--env", "test", "--prefix", prefix])
                .arg("--persist-to")
                .arg(&self.state_dir);
            c
        });
        assert!(out.status.success(), "kv key list failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("kv key list prints JSON");
        v.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap().to_string()).collect()
    }

    /// A value in the local KV namespace, through wrangler.
    pub fn kv_get(&self, key: &str) -> Option<String> {
        let out = local_store(|| {
            let mut c = wrangler();
            c.args(["kv", "key", "get", "--binding", "GATEWAY_KV", "--local", "--env", "test", "--text", key])
                .arg("--persist-to")
                .arg(&self.state_dir);
            c
        });
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.trim().is_empty() && text.trim() != "Value not found").then_some(text)
    }

    /// Writes a value into the local KV namespace, through wrangler.
    pub fn kv_put(&self, key: &str, value: &str) {
        let out = local_store(|| {
            let mut c = wrangler();
            c.args(["kv", "key", "put", "--binding", "GATEWAY_KV", "--local", "--env", "test", key, value])
                .arg("--persist-to")
                .arg(&self.state_dir);
            c
        });
        assert!(out.status.success(), "kv key put failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Writes many values into the local KV namespace in one wrangler call.
    pub fn kv_put_many(&self, entries: &[(String, String)]) {
        let file = self.state_dir.join(format!("kv-bulk-{}.json", super::nonce("bulk")));
        let body: Vec<Value> = entries.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        fs::write(&file, serde_json::to_vec(&body).unwrap()).unwrap();
        let out = local_store(|| {
            let mut c = wrangler();
            c.args(["kv", "bulk", "put", "--binding", "GATEWAY_KV", "--local", "--env", "test"])
                .arg(&file)
                .arg("--persist-to")
                .arg(&self.state_dir);
            c
        });
        let _ = fs::remove_file(&file);
        assert!(out.status.success(), "kv bulk put failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs the cron (`scheduled`) handler now, as wrangler dev allows.
    pub fn run_cron(&self) {
        let r = http::send("GET", &self.url("/cdn-cgi/handler/scheduled"), &[], None).expect("scheduled handler runs");
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// A SQL query against the local D1 database, through wrangler.
    pub fn d1(&self, sql: &str) -> Vec<Value> {
        let out = local_store(|| {
            let mut c = wrangler();
            c.args(["d1", "execute", "llm-edge-gateway", "--local", "--env", "test", "--json", "--persist-to"])
                .arg(&self.state_dir)
                .args(["--command", sql]);
            c
        });
        assert!(out.status.success(), "d1 execute failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("d1 --json output");
        v[0]["results"].as_array().cloned().unwrap_or_default()
    }
}

/// Runs a wrangler command on the local stores, again while the running gateway holds the
/// SQLite file busy (its queue consumer writes while tests read).
fn local_store(command: impl Fn() -> Command) -> std::process::Output {
    for _ in 0..20 {
        let out = command().output().expect("wrangler runs");
        let busy = String::from_utf8_lossy(&out.stderr).contains("SQLITE_BUSY");
        if out.status.success() || !busy {
            return out;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    command().output().expect("wrangler runs")
}

/// Kills the process group `pgid` once this test process has exited.
pub fn watch(pgid: u32) -> Child {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -TERM -{pgid} 2>/dev/null; sleep 3; kill -KILL -{pgid} 2>/dev/null",
        parent = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("watchdog starts")
}
