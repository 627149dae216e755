#!/usr/bin/env node
// `make bench`: the gateway side by side with a trivial Rust pass-through worker, Portkey's
// gateway and LiteLLM's proxy, against the same upstream on loopback, in one run.
// BENCHMARKS.md explains the method and the results.
//
// Everything listens on 127.0.0.1, on free ports; every process started here runs in its
// own process group and is killed when this script exits, however it exits (the Makefile
// also kills the groups listed in the run's `pids` file if this script itself is killed).
//
// Knobs (environment): BENCH_DURATION (s per measurement, 3), BENCH_WARMUP (s, 1),
// BENCH_RUNS (3), BENCH_CONCURRENCY ("1,16,64"), BENCH_DEV_CONCURRENCY ("16": the dev
// server's levels), BENCH_STREAMS (streamed requests per contender and run, 8),
// BENCH_SOAK_REQUESTS (50000), BENCH_SOAK_MAX_SECONDS (100), BENCH_ONLY (contender ids),
// BENCH_SKIP (phases: startup, load, stream, cpu, soak, profile, micro, size),
// BENCH_GATEWAY_BUILD (another build directory to measure, e.g. an experiment's),
// BENCH_OUT (results directory), BENCH_NO_UPDATE=1 (leave BENCHMARKS.md alone),
// BENCH_HOLD=1 (start the contenders, print their URLs and keep them up until Ctrl-C).

import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, statSync, unlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";
import {
  freePort, spawnTracked, stopProcess, killAllNow, trackedGroups, trackPidsIn, tree, usage, vmRss, comm, request, waitFor200, wrk,
  measureStream, median, sleep,
} from "./lib.mjs";
import { render, updateBenchmarksMd } from "./report.mjs";

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(BENCH, "..");
const env = process.env;
const num = (v, d) => (v === undefined || v === "" ? d : Number(v));
const O = {
  duration: num(env.BENCH_DURATION, 3),
  warmup: num(env.BENCH_WARMUP, 1),
  runs: num(env.BENCH_RUNS, 3),
  concurrency: (env.BENCH_CONCURRENCY || "1,16,64").split(",").map(Number),
  devConcurrency: (env.BENCH_DEV_CONCURRENCY || "16").split(",").map(Number),
  streams: num(env.BENCH_STREAMS, 8),
  soak: num(env.BENCH_SOAK_REQUESTS, 50000),
  soakMaxSeconds: num(env.BENCH_SOAK_MAX_SECONDS, 100),
  only: env.BENCH_ONLY ? env.BENCH_ONLY.split(",") : null,
  skip: new Set((env.BENCH_SKIP || "").split(",").filter(Boolean)),
};

const stamp = new Date().toISOString().replace(/[:.]/g, "-").replace(/-\d+Z$/, "Z");
const OUT = path.resolve(env.BENCH_OUT || path.join(BENCH, "results", stamp));
const LOGS = path.join(OUT, "logs");
mkdirSync(LOGS, { recursive: true });
trackPidsIn(path.join(OUT, "pids"));

const P = {
  workerd: path.join(ROOT, "node_modules/@cloudflare/workerd-linux-64/bin/workerd"),
  wrangler: path.join(ROOT, "node_modules/.bin/wrangler"),
  mock: path.join(ROOT, "target/release/mock-provider"),
  gatewayBuild: path.resolve(env.BENCH_GATEWAY_BUILD || path.join(ROOT, "build")),
  // The same build with function names (`make bench-named`), for the profile and twiggy.
  gatewayNamedBuild: env.BENCH_GATEWAY_BUILD ? null : path.join(ROOT, "target/bench-named"),
  passthroughBuild: path.join(BENCH, "passthrough/build"),
  portkey: path.join(BENCH, "node_modules/@portkey-ai/gateway/build/start-server.js"),
  litellm: path.join(BENCH, ".venv/bin/litellm"),
  wrkScript: path.join(BENCH, "wrk/post.lua"),
  body: path.join(BENCH, "payloads/chat-2k.json"),
  streamBody: path.join(BENCH, "payloads/chat-2k-stream.json"),
  fastStreamBody: path.join(BENCH, "payloads/chat-2k-stream-fast.json"),
};
const BODY = readFileSync(P.body, "utf8");
const STREAM_BODY = readFileSync(P.streamBody, "utf8");
const GATEWAY_KEY = "gw-bench-key";
const PROVIDER_KEY = "sk-bench-provider-0123456789";
const LITELLM_KEY = "sk-bench-litellm-master";
// The caller every worker request comes from (request.cf through MF-CF-Blob, as Miniflare
// and `wrangler dev` accept it, and as raw workerd's cfBlobHeader is configured here).
const CF = JSON.stringify({
  country: "DE", continent: "EU", isEUCountry: "1", colo: "FRA", regionCode: "HE", city: "Frankfurt am Main",
  latitude: "50.11090", longitude: "8.68213", timezone: "Europe/Berlin", asn: 3320,
  // No compression: Miniflare compresses responses by this field (as Cloudflare's edge
  // does, outside the worker); without it `wrangler dev` answers brotli to every client.
  clientAcceptEncoding: "identity",
});

const results = {
  started: new Date().toISOString(),
  options: { ...O, skip: [...O.skip] },
  machine: {}, versions: {}, upstream: {}, contenders: {}, startup: {}, load: [], stream: [], cpuStream: [],
  memory: {}, soak: {}, profile: {}, micro: {}, size: {}, ledger: {}, failures: [], notes: [],
};
const log = (...a) => console.log(`[${((Date.now() - Date.parse(results.started)) / 1000).toFixed(0).padStart(4)}s]`, ...a);
const save = () => writeFileSync(path.join(OUT, "results.json"), JSON.stringify(results, null, 1));
function fail(where, e) {
  const message = e?.message ?? String(e);
  results.failures.push({ where, message });
  log(`FAILED ${where}: ${message}`);
}

// ------------------------------------------------------------------ machine, versions

/** A command's output (stdout, else stderr: `nginx -v` prints there); "" when it cannot run. */
function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...opts });
  if (r.error) return "";
  return (r.stdout || "").trim() || (r.stderr || "").trim();
}
const pkgVersion = (p) => { try { return JSON.parse(readFileSync(p, "utf8")).version; } catch { return null; } };
const lockVersion = (name) => readFileSync(path.join(ROOT, "Cargo.lock"), "utf8").match(new RegExp(`name = "${name}"\\nversion = "([^"]+)"`))?.[1];

/** Share of CPU time the whole machine spent busy over `ms`, from /proc/stat. */
async function machineBusy(ms) {
  const read = () => readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const a = read();
  await sleep(ms);
  const b = read();
  const d = b.map((x, i) => x - a[i]);
  const idle = d[3] + d[4];
  const total = d.reduce((s, x) => s + x, 0);
  return total ? 1 - idle / total : 0;
}

/** Busy processes that are not this run's (ours: its own process group and every group it started). */
function otherBusyProcesses() {
  const ownGroup = Number(sh("ps", ["-o", "pgid=", "-p", String(process.pid)]));
  const ours = new Set([ownGroup, ...trackedGroups()]);
  const lines = sh("ps", ["-eo", "pid,pgid,pcpu,etime,comm", "--sort=-pcpu", "--no-headers"]).split("\n");
  return lines.map((l) => l.trim().split(/\s+/))
    .filter((f) => !ours.has(Number(f[1])) && f[4] !== "ps" && Number(f[2]) >= 5)
    .slice(0, 8).map((f) => `${f[4]} (pid ${f[0]}, ${f[2]}% CPU averaged over its ${f[3]} lifetime)`);
}

async function describeMachine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  results.machine = {
    nproc: Number(sh("nproc", [])),
    cpuModel: cpuinfo.match(/model name\s*:\s*(.+)/)?.[1] ?? "?",
    cpuMHz: cpuinfo.match(/cpu MHz\s*:\s*(.+)/)?.[1] ?? "?",
    memTotalGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    kernel: os.release(),
    os: sh("sh", ["-c", ". /etc/os-release && echo $PRETTY_NAME"]),
    loadavgStart: readFileSync("/proc/loadavg", "utf8").trim(),
    busyBeforeStart: +(await machineBusy(2000)).toFixed(3),
    otherProcessesAtStart: otherBusyProcesses(),
  };
  results.versions = {
    gatewayCommit: sh("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]),
    gatewayDirty: sh("git", ["-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "config"]) !== "",
    rustc: sh("rustc", ["--version"]),
    workerCrate: lockVersion("worker"),
    wasmBindgen: lockVersion("wasm-bindgen"),
    workerBuild: sh(path.join(env.CARGO_HOME || path.join(os.homedir(), ".cargo"), "bin/worker-build"), ["--version"]),
    node: process.version,
    wrangler: pkgVersion(path.join(ROOT, "node_modules/wrangler/package.json")),
    miniflare: pkgVersion(path.join(ROOT, "node_modules/miniflare/package.json")),
    workerd: sh(P.workerd, ["--version"]),
    portkey: pkgVersion(path.join(BENCH, "node_modules/@portkey-ai/gateway/package.json")),
    litellm: sh(path.join(BENCH, ".venv/bin/python"), ["-c", "import importlib.metadata as m; print(m.version('litellm'))"]),
    python: sh(path.join(BENCH, ".venv/bin/python"), ["--version"]),
    wrk: `wrk ${sh("wrk", ["-v"]).match(/wrk (\S+)/)?.[1] ?? "?"}`,
    nginx: sh("nginx", ["-v"]).replace("nginx version: ", ""),
    perf: sh("perf", ["--version"]),
  };
}

// ------------------------------------------------------------------ upstreams

let upstream; // { nginx, mock, nonStreamBase, streamBase }

async function startUpstreams() {
  const mockPort = await freePort();
  const mock = spawnTracked("mock-provider", P.mock, ["--port", String(mockPort), "--chunk-delay-ms", "0"], { log: path.join(LOGS, "mock.log") });
  const mockBase = `http://127.0.0.1:${mockPort}`;
  for (let i = 0; i < 200; i++) {
    try { if ((await request(`${mockBase}/_mock/health`)).status === 200) break; } catch { await sleep(25); }
  }
  // The fixed non-streamed answer: the mock's own answer to the benchmark body.
  const answer = await request(`${mockBase}/fixed/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: BODY });
  if (answer.status !== 200) throw new Error(`mock answered ${answer.status}: ${answer.body}`);
  const dir = path.join(OUT, "nginx");
  mkdirSync(dir, { recursive: true });
  const nginxPort = await freePort();
  const quoted = answer.body.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\$/g, "${dollar}");
  writeFileSync(path.join(dir, "nginx.conf"), `# generated by bench/bench.mjs: the fixed upstream for non-streamed requests
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  geo $dollar { default "$"; }
  server {
    listen 127.0.0.1:${nginxPort};
    location / {
      default_type application/json;
      add_header x-request-id req_nginx_fixed;
      return 200 '${quoted}';
    }
  }
}
`);
  const nginx = spawnTracked("nginx", "nginx", ["-p", dir, "-c", path.join(dir, "nginx.conf"), "-e", path.join(dir, "error.log")], { log: path.join(LOGS, "nginx.log") });
  const nginxBase = `http://127.0.0.1:${nginxPort}`;
  let ok = false;
  for (let i = 0; i < 200 && !ok; i++) {
    try { ok = (await request(`${nginxBase}/x/v1/chat/completions`, { method: "POST", body: BODY })).body === answer.body; } catch { await sleep(25); }
  }
  if (!ok) throw new Error(`nginx did not serve the fixed answer; see ${LOGS}/nginx.log and ${dir}/error.log`);
  upstream = { nginx, mock, nonStreamBase: nginxBase, streamBase: mockBase, answerBytes: Buffer.byteLength(answer.body) };
  results.upstream = {
    nonStreamed: `${results.versions.nginx}, one worker process, a fixed ${upstream.answerBytes}-byte chat.completion (the mock provider's own answer to the benchmark body)`,
    streamed: "the project's mock provider (target/release/mock-provider --chunk-delay-ms 0), 100 content chunks 5 ms apart",
  };
}

/** The mock's own throughput and memory, measured once, to justify the choice above. */
async function probeMockUpstream() {
  const url = `${upstream.streamBase}/probe/v1/chat/completions`;
  const before = vmRss(upstream.mock.pid);
  const r = await wrk({ script: P.wrkScript, url, bodyFile: P.body, connections: 16, seconds: O.duration });
  const after = vmRss(upstream.mock.pid);
  const n = await wrk({ script: P.wrkScript, url: `${upstream.nonStreamBase}/probe/v1/chat/completions`, bodyFile: P.body, connections: 16, seconds: O.duration });
  results.upstream.probe = {
    mockRps16: r.rps, mockP50Ms: r.latency_us.p50 / 1000, mockRssGrowthPerRequestBytes: (after - before) / r.requests,
    nginxRps16: n.rps, nginxP50Ms: n.latency_us.p50 / 1000,
  };
  log(`upstream probe: mock ${r.rps.toFixed(0)} req/s at c=16 (RSS +${((after - before) / r.requests).toFixed(0)} B/request: it logs every request), nginx ${n.rps.toFixed(0)} req/s`);
}

// ------------------------------------------------------------------ contenders

function gatewayConfig() {
  return readFileSync(path.join(BENCH, "gateway-config.json"), "utf8")
    .replaceAll("@UPSTREAM@", upstream.nonStreamBase)
    .replaceAll("@STREAM_UPSTREAM@", upstream.streamBase);
}

/** A frozen copy of a worker build, so a rebuild by someone else mid-run changes nothing. */
function snapshotBuild(from, name) {
  const dir = path.join(OUT, "builds", name);
  mkdirSync(dir, { recursive: true });
  for (const f of ["index.js", "index_bg.wasm"]) copyFileSync(path.join(from, f), path.join(dir, f));
  return dir;
}

const workerHeaders = (extra = {}) => ({ "MF-CF-Blob": CF, ...extra });
const gatewayHeaders = () => workerHeaders({ Authorization: `Bearer ${GATEWAY_KEY}` });

let builds; // { gateway, gatewayNamed, passthrough }

const DEFS = {
  direct: {
    label: "direct (upstream alone)", group: "floor",
    async start() {
      return {
        proc: upstream.nginx, url: `${upstream.nonStreamBase}/direct/v1/chat/completions`,
        streamUrl: `${upstream.streamBase}/direct/v1/chat/completions`, headers: {}, streamHeaders: {},
        pids: () => [upstream.nginx.pid], cpuPids: () => [upstream.nginx.pid], shared: true,
      };
    },
  },
  "pt-miniflare": { label: "pass-through worker, Miniflare", group: "miniflare", runtime: "miniflare", worker: "passthrough" },
  "gw-miniflare": { label: "gateway, Miniflare (KV, D1, queue)", group: "miniflare", runtime: "miniflare", worker: "gateway" },
  // Non-streamed load only: the same with the queue's consumer (and its D1 writes) off
  // the worker's thread, as on Cloudflare; every event is still queued.
  "gw-miniflare-queued": { label: "gateway, Miniflare, events queued, no consumer on its thread", group: "miniflare", runtime: "miniflare", worker: "gateway", noConsumer: true, loadOnly: true },
  "pt-workerd": { label: "pass-through worker, raw workerd", group: "workerd", runtime: "workerd", worker: "passthrough" },
  "gw-workerd": { label: "gateway, raw workerd (stub KV, queue, cache)", group: "workerd", runtime: "workerd", worker: "gateway" },
  // Streams only: its non-streamed path is the pass-through's.
  "relay-workerd": { label: "pass-through reading each chunk into wasm, raw workerd", group: "workerd", runtime: "workerd", worker: "passthrough", relay: true, streamsOnly: true },
  // Streams only: the relay above written in JavaScript, to tell wasm's share from the runtime's.
  "relay-js-workerd": { label: "the same relay in JavaScript, raw workerd", group: "workerd", runtime: "workerd", worker: "js-relay", relay: true, streamsOnly: true },
  // Streams only: the relay above, started only once the first content has arrived.
  "held-workerd": { label: "pass-through holding its answer until the first content, then as relay-workerd, raw workerd", group: "workerd", runtime: "workerd", worker: "passthrough", held: true, streamsOnly: true },
  "held-miniflare": { label: "pass-through holding its answer until the first content, then as relay-workerd, Miniflare", group: "miniflare", runtime: "miniflare", worker: "passthrough", held: true, streamsOnly: true },
  portkey: { label: `Portkey gateway (Node ${process.version})`, group: "peer", runtime: "portkey" },
  litellm: { label: "LiteLLM proxy (1 worker)", group: "peer", runtime: "litellm" },
  "pt-wrangler": { label: "pass-through worker, wrangler dev (DEV SERVER)", group: "dev", runtime: "wrangler", worker: "passthrough", dev: true },
  "gw-wrangler": { label: "gateway, wrangler dev (DEV SERVER)", group: "dev", runtime: "wrangler", worker: "gateway", dev: true },
};

function workerdPid(rootPid) {
  return tree(rootPid).find((p) => comm(p) === "workerd") ?? null;
}

async function startWorker(def, id, { profile = false } = {}) {
  const port = await freePort();
  const logFile = path.join(LOGS, `${id}${profile ? "-profile" : ""}.log`);
  const gw = def.worker === "gateway";
  const dir = gw ? (profile ? builds.gatewayNamed : builds.gateway) : builds.passthrough;
  const base = `http://127.0.0.1:${port}`;
  const upstreamVars = {
    UPSTREAM_URL: `${upstream.nonStreamBase}/pt/v1/chat/completions`,
    UPSTREAM_STREAM_URL: `${upstream.streamBase}/pt/v1/chat/completions`,
  };
  const stateDir = path.join(OUT, "state", `${id}-${Date.now()}`);
  mkdirSync(stateDir, { recursive: true });
  const configFile = path.join(stateDir, "gateway-config.json");
  if (gw) writeFileSync(configFile, gatewayConfig());
  let proc;
  let rootPid;
  let stubPort = null;
  const extra = []; // processes stopped with the contender
  if (def.runtime === "miniflare") {
    const args = [path.join(BENCH, "run-miniflare.mjs"), "--dir", dir, "--port", String(port)];
    if (gw) {
      args.push("--wrangler-config", path.join(ROOT, "wrangler.toml"), "--env", "test", "--migrations", path.join(ROOT, "migrations"),
        "--persist", stateDir, "--var-file", `GATEWAY_CONFIG=${configFile}`, "--var", `BENCH_PROVIDER_KEY=${PROVIDER_KEY}`);
      if (def.noConsumer) args.push("--queue-consumers", "off");
    } else {
      for (const [k, v] of Object.entries(upstreamVars)) args.push("--var", `${k}=${v}`);
    }
    proc = spawnTracked(id, process.execPath, args, { cwd: ROOT, log: logFile, stdin: "pipe" });
    rootPid = proc.pid;
    proc.lines = [];
    let pending = "";
    proc.stdout.setEncoding("utf8");
    proc.stdout.on("data", (c) => {
      pending += c;
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        const waiter = proc.waiters?.shift();
        if (waiter) waiter(line); else proc.lines.push(line);
      }
    });
    proc.query = (sql) => new Promise((resolve) => {
      (proc.waiters ??= []).push((line) => { try { resolve(JSON.parse(line)); } catch { resolve({ error: line }); } });
      proc.stdin.write(sql.replace(/\n/g, " ") + "\n");
    });
  } else if (def.runtime === "workerd") {
    const capnp = path.join(stateDir, "config.capnp");
    const js = def.worker === "js-relay";
    if (js) {
      copyFileSync(path.join(BENCH, "passthrough/relay.js"), path.join(stateDir, "relay.js"));
    } else {
      copyFileSync(path.join(dir, "index.js"), path.join(stateDir, "index.js"));
      copyFileSync(path.join(dir, "index_bg.wasm"), path.join(stateDir, "index_bg.wasm"));
    }
    const text = (name, value) => `(name = "${name}", text = "${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}")`;
    const bindings = gw
      ? [`(name = "GATEWAY_CONFIG", text = embed "gateway-config.json")`, text("TRUST_GEO_HEADERS", "true"),
         text("BENCH_PROVIDER_KEY", PROVIDER_KEY), text("PROVIDER_SECRETS", "BENCH_PROVIDER_KEY"),
         `(name = "GATEWAY_KV", kvNamespace = "stub")`,
         `(name = "COST_EVENTS", queue = "stub")`]
      : Object.entries(upstreamVars).map(([k, v]) => text(k, v));
    // The stub runs in a workerd process of its own, so that the gateway's process CPU
    // holds the gateway's work only (on Cloudflare, KV, queues and the cache are services).
    if (gw) {
      stubPort = await freePort();
      writeFileSync(path.join(stateDir, "stub.js"), STUB_WORKER);
      writeFileSync(path.join(stateDir, "stub.capnp"), `# generated by bench/bench.mjs
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "stub", worker = .stub) ],
  sockets = [ (name = "stub", address = "127.0.0.1:${stubPort}", service = "stub") ],
);
const stub :Workerd.Worker = (
  modules = [ (name = "stub.js", esModule = embed "stub.js") ],
  compatibilityDate = "2026-04-20",
);
`);
      const stub = spawnTracked(`${id}-stub`, P.workerd, ["serve", path.join(stateDir, "stub.capnp")], { cwd: stateDir, log: path.join(LOGS, `${id}-stub.log`) });
      extra.push(stub);
      let up = false;
      for (let i = 0; i < 400 && !up; i++) {
        try { up = (await request(`http://127.0.0.1:${stubPort}/__bench/counts`)).status === 200; } catch { await sleep(10); }
      }
      if (!up) throw new Error(`the KV/queue/cache stub did not start; see ${LOGS}/${id}-stub.log`);
    }
    writeFileSync(capnp, `# generated by bench/bench.mjs
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .worker),
    ${gw ? `(name = "stub", external = (address = "127.0.0.1:${stubPort}", http = ())),` : ""}
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:${port}", http = (cfBlobHeader = "MF-CF-Blob"), service = "main"),
  ],
  ${profile ? 'v8Flags = ["--perf-basic-prof"],' : ""}
);
const worker :Workerd.Worker = (
  modules = [
    ${js ? '(name = "relay.js", esModule = embed "relay.js"),' : `(name = "index.js", esModule = embed "index.js"),
    (name = "index_bg.wasm", wasm = embed "index_bg.wasm"),`}
  ],
  compatibilityDate = "2026-04-20",
  bindings = [ ${bindings.join(",\n    ")} ],
  globalOutbound = "internet",
  ${gw ? 'cacheApiOutbound = "stub",' : ""}
);
`);
    proc = spawnTracked(id, P.workerd, ["serve", capnp], { cwd: stateDir, log: logFile });
    rootPid = proc.pid;
  } else if (def.runtime === "wrangler") {
    const wenv = {
      WRANGLER_SEND_METRICS: "false", CI: "true", WRANGLER_REGISTRY_PATH: path.join(stateDir, "registry"),
      WRANGLER_CI_DISABLE_CONFIG_WATCHING: "true", NO_COLOR: "1",
    };
    const common = ["--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--persist-to", stateDir];
    let args;
    if (gw) {
      const migrate = spawnSync(P.wrangler, ["d1", "migrations", "apply", "llm-edge-gateway", "--local", "--env", "test", "--persist-to", stateDir],
        { cwd: ROOT, env: { ...process.env, ...wenv }, encoding: "utf8" });
      if (migrate.status !== 0) throw new Error(`wrangler d1 migrations apply failed: ${migrate.stderr || migrate.stdout}`);
      args = ["dev", path.join(dir, "index.js"), "--config", path.join(ROOT, "wrangler.toml"), "--env", "test", ...common,
        "--var", `GATEWAY_CONFIG:${gatewayConfig()}`, "--var", `BENCH_PROVIDER_KEY:${PROVIDER_KEY}`];
    } else {
      args = ["dev", path.join(dir, "index.js"), "--config", path.join(BENCH, "passthrough/wrangler.toml"), ...common,
        ...Object.entries(upstreamVars).flatMap(([k, v]) => ["--var", `${k}:${v}`])];
    }
    proc = spawnTracked(id, P.wrangler, args, { cwd: ROOT, env: wenv, log: logFile });
    rootPid = proc.pid;
  }
  const inst = {
    proc, port, base, logFile, stateDir,
    url: `${base}/v1/chat/completions`,
    streamUrl: gw ? `${base}/v1/chat/completions` : `${base}/${def.held ? "held" : def.relay ? "relay" : "stream"}/v1/chat/completions`,
    headers: gw ? gatewayHeaders() : workerHeaders(),
    streamHeaders: gw ? gatewayHeaders() : workerHeaders(),
    pids: () => tree(rootPid),
    workerdPid: () => workerdPid(rootPid),
    stubUrl: stubPort ? `http://127.0.0.1:${stubPort}/__bench` : null,
    extra,
  };
  inst.cpuPids = inst.pids;
  return inst;
}

// KV, queue and Cache API for raw workerd, which has no storage of its own: KV reads find
// nothing (so the gateway serves its GATEWAY_CONFIG, as with an empty KV), cache reads
// miss, writes and queue sends are accepted and dropped (the queue answer is the shape
// workerd's Queue binding expects). It counts every call, by kind, for the report: on its
// own loopback socket, GET /__bench/counts and POST /__bench/reset.
const STUB_WORKER = `const metrics = { backlogCount: 0, backlogBytes: 0, oldestMessageTimestamp: 0 };
let counts = {};
const count = (k) => { counts[k] = (counts[k] ?? 0) + 1; };
export default {
  async fetch(req) {
    const url = new URL(req.url);
    if (url.pathname === "/__bench/counts") return Response.json(counts);
    if (url.pathname === "/__bench/reset") { counts = {}; return Response.json({}); }
    if (url.hostname !== "fake-host") {
      count(\`cache \${req.method}\`);
      if (req.method === "GET") return new Response(null, { status: 504, headers: { "cf-cache-status": "MISS" } });
      await req.arrayBuffer();
      return new Response(null, { status: 204 });
    }
    if (req.method === "POST" && (url.pathname === "/message" || url.pathname === "/batch")) {
      count("queue send");
      await req.arrayBuffer();
      return Response.json({ metadata: { metrics } });
    }
    const key = decodeURIComponent(url.pathname.slice(1));
    count(\`KV \${req.method} \${key.includes(":") ? key.slice(0, key.indexOf(":") + 1) + "…" : key}\`);
    if (req.method === "GET") return new Response(null, { status: 404 });
    await req.arrayBuffer();
    return new Response(null, { status: 200 });
  },
};
`;

async function startPortkey(id) {
  const port = await freePort();
  const logFile = path.join(LOGS, `${id}.log`);
  const proc = spawnTracked(id, process.execPath, ["--require", path.join(BENCH, "loopback.cjs"), P.portkey, `--port=${port}`, "--headless"],
    { cwd: BENCH, env: { NODE_ENV: "production" }, log: logFile });
  const base = `http://127.0.0.1:${port}`;
  const h = (host) => ({ Authorization: `Bearer ${PROVIDER_KEY}`, "x-portkey-provider": "openai", "x-portkey-custom-host": host });
  return {
    proc, base, logFile, url: `${base}/v1/chat/completions`, streamUrl: `${base}/v1/chat/completions`,
    headers: h(`${upstream.nonStreamBase}/portkey/v1`), streamHeaders: h(`${upstream.streamBase}/portkey/v1`),
    pids: () => tree(proc.pid), cpuPids: () => tree(proc.pid),
  };
}

async function startLiteLLM(id) {
  const port = await freePort();
  const dir = path.join(OUT, "state", `${id}-${Date.now()}`);
  mkdirSync(dir, { recursive: true });
  const config = path.join(dir, "litellm.yaml");
  writeFileSync(config, `# generated by bench/bench.mjs
model_list:
  - model_name: bench
    litellm_params:
      model: openai/gpt-4.1-mini
      api_base: ${upstream.nonStreamBase}/litellm/v1
      api_key: ${PROVIDER_KEY}
  - model_name: bench-stream
    litellm_params:
      model: openai/gpt-4.1-mini
      api_base: ${upstream.streamBase}/litellm/v1
      api_key: ${PROVIDER_KEY}
general_settings:
  master_key: ${LITELLM_KEY}
litellm_settings:
  telemetry: false
`);
  const logFile = path.join(LOGS, `${id}.log`);
  const proc = spawnTracked(id, P.litellm, ["--config", config, "--host", "127.0.0.1", "--port", String(port), "--num_workers", "1"], {
    cwd: dir, log: logFile,
    env: { LITELLM_LOCAL_MODEL_COST_MAP: "True", LITELLM_TELEMETRY: "False", DO_NOT_TRACK: "1", PYTHONUNBUFFERED: "1" },
  });
  const base = `http://127.0.0.1:${port}`;
  const h = { Authorization: `Bearer ${LITELLM_KEY}` };
  return {
    proc, base, logFile, url: `${base}/v1/chat/completions`, streamUrl: `${base}/v1/chat/completions`,
    headers: h, streamHeaders: h, pids: () => tree(proc.pid), cpuPids: () => tree(proc.pid),
  };
}

/** Starts a contender and waits for its first 200 to a chat completion: the startup time. */
async function start(id, opts = {}) {
  const def = DEFS[id];
  let inst;
  if (def.start) inst = await def.start();
  else if (def.runtime === "portkey") inst = await startPortkey(id);
  else if (def.runtime === "litellm") inst = await startLiteLLM(id);
  else inst = await startWorker(def, id, opts);
  inst.id = id;
  inst.def = def;
  if (!inst.shared) {
    const since = inst.proc.startedAt;
    inst.startupMs = await waitFor200(inst.url, {
      headers: { ...inst.headers, "content-type": "application/json" }, body: BODY, since,
      alive: () => inst.proc.exitCode === null && inst.proc.signalCode === null, log: inst.logFile,
      timeoutMs: def.dev || def.runtime === "litellm" ? 180000 : 60000,
    }).catch(async (e) => {
      await stopProcess(inst.proc);
      for (const p of inst.extra ?? []) await stopProcess(p);
      throw e;
    });
  }
  inst.stop = async () => {
    if (inst.shared) return;
    await stopProcess(inst.proc);
    for (const p of inst.extra ?? []) await stopProcess(p);
  };
  return inst;
}

// ------------------------------------------------------------------ phases

const wanted = (id) => !O.only || O.only.includes(id);
const ids = Object.keys(DEFS).filter(wanted);

async function phaseStartup() {
  const startupIds = ids.filter((id) => id !== "direct" && !DEFS[id].dev && !DEFS[id].streamsOnly && !DEFS[id].loadOnly);
  for (let run = 1; run <= O.runs; run++) {
    for (const id of startupIds) {
      try {
        const inst = await start(id);
        (results.startup[id] ??= []).push(inst.startupMs);
        await inst.stop();
      } catch (e) {
        fail(`startup ${id}`, e);
      }
    }
    log(`startup run ${run}: ${startupIds.map((id) => `${id} ${results.startup[id]?.at(-1)?.toFixed(0)} ms`).join(", ")}`);
  }
}

/** One request each: proves the contender answers a real chat completion, records the receipt. */
async function validate(inst) {
  const r = await request(inst.url, { method: "POST", headers: { ...inst.headers, "content-type": "application/json" }, body: BODY });
  let json = null;
  try { json = JSON.parse(r.body); } catch { /* reported below */ }
  const ok = r.status === 200 && Array.isArray(json?.choices);
  const gatewayHeaders = Object.fromEntries(Object.entries(r.headers).filter(([k]) => k.startsWith("x-gateway-")));
  results.contenders[inst.id] = {
    label: inst.def.label, group: inst.def.group, dev: !!inst.def.dev, startupMs: inst.startupMs ?? null,
    check: { status: r.status, ok, responseBytes: Buffer.byteLength(r.body), gatewayHeaders, body: ok ? undefined : r.body.slice(0, 400) },
  };
  if (!ok) throw new Error(`${inst.id} answered ${r.status}: ${r.body.slice(0, 300)}`);
}

async function measureLoad(inst, c, run) {
  const args = { script: P.wrkScript, url: inst.url, bodyFile: P.body, headers: inst.headers, connections: c };
  await wrk({ ...args, seconds: O.warmup });
  const cpuPids = inst.cpuPids();
  const wd = inst.workerdPid?.();
  if (inst.stubUrl) await request(`${inst.stubUrl}/reset`, { method: "POST" });
  const before = usage(cpuPids);
  const wdBefore = wd ? usage([wd]) : null;
  const r = await wrk({ ...args, seconds: O.duration });
  const after = usage(cpuPids);
  const wdAfter = wd ? usage([wd]) : null;
  const calls = inst.stubUrl ? JSON.parse((await request(`${inst.stubUrl}/counts`)).body) : null;
  const row = {
    id: inst.id, c, run, rps: r.rps, requests: r.requests, errors: r.errorCount, errorDetail: r.errors,
    p50Ms: r.latency_us.p50 / 1000, p90Ms: r.latency_us.p90 / 1000, p99Ms: r.latency_us.p99 / 1000, meanMs: r.latency_us.mean / 1000,
    cpuUsPerReq: r.requests ? ((after.cpuS - before.cpuS) * 1e6) / r.requests : null,
    workerdCpuUsPerReq: wd && r.requests ? ((wdAfter.cpuS - wdBefore.cpuS) * 1e6) / r.requests : null,
    bindingCalls: calls,
  };
  results.load.push(row);
  return row;
}

/**
 * Waits until every contender is idle (below a sixth of a core over 300 ms, for at most
 * 15 s): a contender's work can outlast its measurement (Miniflare's queue consumer writes
 * the events of the last run to D1 for seconds) and would otherwise be charged to the next.
 */
async function settle(insts) {
  const pids = () => insts.filter((i) => !i.shared).flatMap((i) => i.cpuPids());
  const started = Date.now();
  for (;;) {
    const before = usage(pids()).cpuS;
    await sleep(300);
    const busy = (usage(pids()).cpuS - before) / 0.3;
    if (busy < 1 / 6 || Date.now() - started > 15000) return { ms: Date.now() - started, busy };
  }
}

async function phaseLoad(insts) {
  for (let run = 1; run <= O.runs; run++) {
    for (const c of O.concurrency) {
      for (const inst of insts) {
        if (inst.def.dev && !O.devConcurrency.includes(c)) continue;
        if (inst.def.streamsOnly) continue;
        const quiet = await settle(insts);
        if (quiet.ms > 1000) log(`load run ${run} c=${c} ${inst.id}: waited ${(quiet.ms / 1000).toFixed(1)} s for the others to go idle (${(quiet.busy * 100).toFixed(0)}% of a core left)`);
        try {
          const row = await measureLoad(inst, c, run);
          log(`load run ${run} c=${c} ${inst.id}: ${row.rps.toFixed(0)} req/s, p50 ${row.p50Ms.toFixed(2)} ms, p99 ${row.p99Ms.toFixed(2)} ms, ${row.errors} errors, CPU ${row.cpuUsPerReq?.toFixed(0)} µs/req`);
        } catch (e) {
          fail(`load ${inst.id} c=${c} run ${run}`, e);
        }
      }
      save();
    }
  }
}

async function phaseStream(insts) {
  for (let run = 1; run <= O.runs; run++) {
    for (const inst of insts.filter((i) => !i.def.loadOnly)) {
      for (let i = 0; i < O.streams; i++) {
        const r = await measureStream(inst.streamUrl, { headers: inst.streamHeaders, body: STREAM_BODY });
        results.stream.push({ id: inst.id, run, ...r });
        if (r.error && i === 0) log(`stream ${inst.id}: ${r.error}`);
      }
      const mine = results.stream.filter((s) => s.id === inst.id && s.run === run && !s.error);
      if (mine.length) log(`stream run ${run} ${inst.id}: TTFT ${median(mine.map((s) => s.ttftMs)).toFixed(1)} ms, total ${median(mine.map((s) => s.totalMs)).toFixed(0)} ms, ${median(mine.map((s) => s.readsWithContent))}/${median(mine.map((s) => s.contentEvents))} content events in separate reads`);
    }
    save();
  }
}

/** CPU per streamed request (100 chunks, no delay), for the per-chunk cost. */
async function phaseCpuStream(insts) {
  for (const inst of insts.filter((i) => !i.def.dev && !i.def.loadOnly && i.id !== "direct")) {
    const args = { script: P.wrkScript, url: inst.streamUrl, bodyFile: P.fastStreamBody, headers: inst.streamHeaders, connections: 4 };
    try {
      await wrk({ ...args, seconds: O.warmup });
      const pids = inst.cpuPids();
      const wd = inst.workerdPid?.();
      const b = usage(pids);
      const wb = wd ? usage([wd]) : null;
      const r = await wrk({ ...args, seconds: O.duration });
      const a = usage(pids);
      const wa = wd ? usage([wd]) : null;
      const row = {
        id: inst.id, streams: r.requests, rps: r.rps, errors: r.errorCount, errorDetail: r.errors, p50Ms: r.latency_us.p50 / 1000,
        cpuUsPerStream: r.requests ? ((a.cpuS - b.cpuS) * 1e6) / r.requests : null,
        workerdCpuUsPerStream: wd && r.requests ? ((wa.cpuS - wb.cpuS) * 1e6) / r.requests : null,
      };
      results.cpuStream.push(row);
      log(`cpu/stream ${inst.id}: ${row.streams} streams, ${row.errors} errors, CPU ${row.cpuUsPerStream?.toFixed(0)} µs/stream`);
    } catch (e) {
      fail(`cpu stream ${inst.id}`, e);
    }
  }
  save();
}

function recordMemory(insts) {
  for (const inst of insts) {
    if (inst.shared && inst.id !== "direct") continue;
    const u = usage(inst.pids());
    const wd = inst.workerdPid?.();
    results.memory[inst.id] = {
      rssBytes: u.rssBytes, workerdRssBytes: wd ? usage([wd]).rssBytes : null,
      processes: u.parts.map((p) => `${p.comm} ${(p.rssBytes / 2 ** 20).toFixed(1)} MiB`),
      requestsServed: results.load.filter((r) => r.id === inst.id).reduce((s, r) => s + r.requests, 0),
    };
  }
}

/** The gateway's (and, for scale, the pass-through's) RSS across `O.soak` requests on a fresh instance. */
async function phaseSoak() {
  for (const id of ["gw-workerd", "pt-workerd", "gw-miniflare"].filter(wanted)) {
    if (id === "gw-miniflare" && !env.BENCH_SOAK_MINIFLARE) continue;
    let inst;
    try {
      inst = await start(id);
      await validate(inst).catch(() => {});
      const pid = inst.workerdPid();
      const samples = [{ requests: 0, rssBytes: vmRss(pid), at: 0 }];
      let total = 0;
      const t0 = Date.now();
      while (total < O.soak && Date.now() - t0 < O.soakMaxSeconds * 1000) {
        const r = await wrk({ script: P.wrkScript, url: inst.url, bodyFile: P.body, headers: inst.headers, connections: 16, seconds: 1 });
        total += r.requests;
        samples.push({ requests: total, rssBytes: vmRss(pid), errors: r.errorCount, rps: r.rps, at: (Date.now() - t0) / 1000 });
      }
      results.soak[id] = { samples, workerdPid: pid, cappedAtSeconds: total < O.soak ? O.soakMaxSeconds : null };
      const first = samples[1];
      const last = samples.at(-1);
      log(`soak ${id}: RSS ${(samples[0].rssBytes / 2 ** 20).toFixed(1)} -> ${(first.rssBytes / 2 ** 20).toFixed(1)} (after ${first.requests}) -> ${(last.rssBytes / 2 ** 20).toFixed(1)} MiB after ${last.requests} requests`);
    } catch (e) {
      fail(`soak ${id}`, e);
    } finally {
      await inst?.stop();
    }
    save();
  }
}

const cleanSymbol = (s) => s.replace(/\s+-\s+-\s*$/, "").replace(/-\d+-(turbofan|liftoff|maglev|sparkplug)$/, "")
  .replace(/\[[0-9a-f]{16}\]/g, "").replace(/::h[0-9a-f]{16}/g, "");

/** perf record of `pid` while wrk drives `load`; the flat profile, shares by DSO, and inclusive wasm functions. */
async function profileUnder(pid, name, load) {
  const data = path.join(OUT, `perf-${name}.data`);
  const running = wrk({ script: P.wrkScript, ...load, seconds: O.duration + 2 });
  await sleep(1000);
  const rec = spawnSync("perf", ["record", "-F", "997", "-g", "-p", String(pid), "-o", data, "--", "sleep", String(O.duration)], { encoding: "utf8" });
  const r = await running;
  if (rec.status !== 0) throw new Error(`perf record failed: ${rec.stderr}`);
  const report = sh("perf", ["report", "-i", data, "--no-children", "--sort", "dso,symbol", "--stdio", "-g", "none", "--percent-limit", "0.3"], { maxBuffer: 64 << 20 });
  const rows = [];
  for (const line of report.split("\n")) {
    const m = line.match(/^\s*([\d.]+)%\s+(\S+(?:\s\S+)*?)\s+\[[.k]\]\s+(.+?)\s*$/);
    if (m) rows.push({ pct: Number(m[1]), dso: m[2], symbol: cleanSymbol(m[3]) });
  }
  // Shares by DSO over every sample (the symbol list above is cut at 0.3%).
  const byDso = sh("perf", ["report", "-i", data, "--no-children", "--sort", "dso", "--stdio", "-g", "none"], { maxBuffer: 64 << 20 });
  const shares = { wasmAndJit: 0, workerdNative: 0, kernel: 0, libc: 0, other: 0 };
  for (const line of byDso.split("\n")) {
    const m = line.match(/^\s*([\d.]+)%\s+(.+?)\s*$/);
    if (!m) continue;
    const dso = m[2];
    const k = dso.startsWith("[JIT]") || dso.startsWith("perf-") ? "wasmAndJit" : dso === "workerd" ? "workerdNative" : dso.includes("kernel") ? "kernel" : dso.startsWith("libc") ? "libc" : "other";
    shares[k] += Number(m[1]);
  }
  // Inclusive time of the worker's own (wasm) functions, from the call graphs.
  const children = sh("perf", ["report", "-i", data, "--children", "--sort", "symbol", "--stdio", "-g", "none", "--percent-limit", "2"], { maxBuffer: 64 << 20 });
  const inclusive = [];
  for (const line of children.split("\n")) {
    const m = line.match(/^\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.+?)\s*$/);
    if (!m || !/^JS:.*(llm_edge_gateway|bench_passthrough|worker::|js_sys|wasm_bindgen|futures_util)/.test(m[3])) continue;
    const symbol = cleanSymbol(m[3]);
    if (!inclusive.some((x) => x.symbol === symbol)) inclusive.push({ children: Number(m[1]), self: Number(m[2]), symbol });
  }
  writeFileSync(path.join(OUT, `profile-${name}.txt`), report + "\n\n" + children);
  if (!env.BENCH_KEEP_PERF) try { unlinkSync(data); } catch { /* kept */ }
  log(`profile ${name}: top ${rows.slice(0, 5).map((x) => `${x.symbol.slice(0, 60)} ${x.pct}%`).join("; ")}`);
  return { rps: r.rps, top: rows.slice(0, 25), shares, inclusive: inclusive.slice(0, 20) };
}

/** CPU profiles of the gateway (non-streamed and streamed) and the pass-through under raw workerd, with perf. */
async function phaseProfile() {
  if (!sh("sh", ["-c", "command -v perf"])) {
    results.profile.skipped = "perf is not installed";
    return;
  }
  for (const id of ["gw-workerd", "pt-workerd"].filter(wanted)) {
    let inst;
    try {
      inst = await start(id, { profile: true });
      const pid = inst.workerdPid();
      results.profile[id] = await profileUnder(pid, id, { url: inst.url, bodyFile: P.body, headers: inst.headers, connections: 16 });
      if (id === "gw-workerd") {
        results.profile[`${id}-stream`] = await profileUnder(pid, `${id}-stream`,
          { url: inst.streamUrl, bodyFile: P.fastStreamBody, headers: inst.streamHeaders, connections: 4 });
      }
      if (!env.BENCH_KEEP_PERF) try { unlinkSync(`/tmp/perf-${pid}.map`); } catch { /* gone */ }
    } catch (e) {
      fail(`profile ${id}`, e);
    } finally {
      await inst?.stop();
      for (const f of readdirSync(inst?.stateDir ?? OUT)) if (/^isolate-.*-v8\.log$/.test(f)) rmSync(path.join(inst.stateDir, f));
    }
  }
  save();
}

function gz(file) {
  const buf = readFileSync(file);
  return { raw: buf.length, gzip: zlib.gzipSync(buf, { level: 9 }).length };
}

/** Section sizes of a wasm module (code, data, the name section...). */
function wasmSections(file) {
  const b = readFileSync(file);
  const names = ["custom", "type", "import", "function", "table", "memory", "global", "export", "start", "element", "code", "data", "datacount", "tag"];
  let i = 8;
  const out = [];
  const leb = () => { let r = 0; let s = 0; for (;;) { const x = b[i++]; r |= (x & 0x7f) << s; s += 7; if (!(x & 0x80)) return r >>> 0; } };
  while (i < b.length) {
    const id = b[i++];
    const size = leb();
    const start = i;
    let name = names[id] ?? `id${id}`;
    if (id === 0) { const n = leb(); name = `custom "${b.subarray(i, i + n).toString()}"`; }
    out.push({ name, bytes: size });
    i = start + size;
  }
  return out.sort((a, c) => c.bytes - a.bytes);
}

/** twiggy's items (shallow bytes) grouped by where they come from; first matching group wins. */
function sizeBreakdown(csv) {
  const groups = [
    ["name section (function and data names; only in the named twin twiggy reads, not shipped)", /^"?""(function|data|local|global|type|module|table|memory|elem)[a-z ]*names"" subsection/],
    ["the fetch handler's future (one function: everything inlined into it)", /^js_sys::futures::future_to_promise::\{\{closure\}\}::\{\{closure\}\}/],
    ["serde / serde_json (de)serializers", /serde|_::<impl serde/],
    ["Bedrock + AWS SigV4 / event-stream", /providers::bedrock|llm_edge_gateway::aws::/],
    ["Anthropic provider + Anthropic ingress", /providers::anthropic|ingress::anthropic/],
    ["Gemini / Vertex + GCP auth", /providers::(gemini|vertex)|llm_edge_gateway::gcp/],
    ["Azure / Mistral providers", /providers::(azure|mistral)/],
    ["admin API, breakdowns, dashboard, LiteLLM import", /edge::admin|breakdown|dashboard|litellm|llm_edge_gateway::admin/],
    ["url / idna (via the worker crate)", /^"?(url::|idna|<url::|icu_|zerovec|<idna)/],
    ["worker / wasm-bindgen / js-sys / web-sys glue", /worker::|wasm_bindgen|js_sys|web_sys|__wbg|__externref/],
    ["core / alloc / std (fmt, collections, allocator)", /^"?<?(core::|alloc::|std::|dlmalloc|__rust|<core|<alloc|<std|<&)/],
    ["data segments (strings, tables)", /^"?""?data segment/],
    ["the rest of llm_edge_gateway", /llm_edge_gateway/],
  ];
  const totals = new Map(groups.map(([name]) => [name, 0]));
  let other = 0;
  let total = 0;
  for (const line of csv.split("\n").slice(1)) {
    const m = line.match(/^(.*),(\d+),[\d.]+,[^,]*,[^,]*$/);
    if (!m || m[1].startsWith("\"Σ") || m[1].startsWith("...")) continue;
    const bytes = Number(m[2]);
    total += bytes;
    const g = groups.find(([, re]) => re.test(m[1]));
    if (g) totals.set(g[0], totals.get(g[0]) + bytes);
    else other += bytes;
  }
  return { total, groups: [...totals.entries(), ["other", other]].map(([name, bytes]) => ({ name, bytes })).sort((a, b) => b.bytes - a.bytes) };
}

function phaseSize() {
  const sizes = {
    gateway: { wasm: gz(path.join(builds.gateway, "index_bg.wasm")), js: gz(path.join(builds.gateway, "index.js")), sections: wasmSections(path.join(builds.gateway, "index_bg.wasm")) },
    passthrough: { wasm: gz(path.join(builds.passthrough, "index_bg.wasm")), js: gz(path.join(builds.passthrough, "index.js")) },
  };
  if (existsSync(P.portkey)) sizes.portkey = { js: gz(P.portkey) };
  const twiggy = path.join(env.CARGO_HOME || path.join(os.homedir(), ".cargo"), "bin/twiggy");
  if (existsSync(twiggy)) {
    // Names for twiggy: the named build's code is the shipped one's, plus a name section.
    const wasm = path.join(builds.gatewayNamed, "index_bg.wasm");
    sizes.twiggyTop = sh(twiggy, ["top", "-n", "25", wasm]);
    sizes.twiggyVersion = sh(twiggy, ["--version"]);
    sizes.breakdown = sizeBreakdown(sh(twiggy, ["top", "-n", "1000000", "-f", "csv", wasm], { maxBuffer: 256 << 20 }));
  }
  results.size = sizes;
  log(`size: gateway wasm ${sizes.gateway.wasm.raw} B raw, ${sizes.gateway.wasm.gzip} B gzipped; pass-through ${sizes.passthrough.wasm.gzip} B gzipped`);
}

function phaseMicro() {
  const target = env.CARGO_TARGET_DIR ? path.resolve(ROOT, env.CARGO_TARGET_DIR) : path.join(ROOT, "target");
  const critDir = path.join(target, "criterion");
  rmSync(critDir, { recursive: true, force: true });
  const t0 = Date.now();
  const r = spawnSync("cargo", ["bench", "--bench", "hot_paths"], { cwd: ROOT, encoding: "utf8", env: { ...process.env, CARGO_TERM_COLOR: "never" }, maxBuffer: 64 << 20 });
  writeFileSync(path.join(LOGS, "criterion.log"), (r.stdout || "") + (r.stderr || ""));
  if (r.status !== 0) throw new Error(`cargo bench failed (see ${LOGS}/criterion.log): ${(r.stderr || "").split("\n").filter((l) => /error/.test(l)).slice(0, 5).join(" | ")}`);
  const benches = [];
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && e.name === "new" && existsSync(path.join(p, "estimates.json"))) {
        const est = JSON.parse(readFileSync(path.join(p, "estimates.json"), "utf8"));
        const meta = JSON.parse(readFileSync(path.join(p, "benchmark.json"), "utf8"));
        const elements = meta.throughput?.Elements ?? null;
        benches.push({
          id: meta.full_id, medianNs: est.median.point_estimate, lowNs: est.median.confidence_interval.lower_bound,
          highNs: est.median.confidence_interval.upper_bound, elements, bytes: meta.throughput?.Bytes ?? null,
          perElementNs: elements ? est.median.point_estimate / elements : null,
        });
      } else if (e.isDirectory()) walk(p);
    }
  };
  walk(critDir);
  benches.sort((a, b) => a.id.localeCompare(b.id));
  results.micro = { benches, seconds: (Date.now() - t0) / 1000, rustc: results.versions.rustc };
  log(`micro: ${benches.length} benchmarks in ${results.micro.seconds.toFixed(0)} s`);
}

async function ledgerCheck(inst) {
  if (!inst?.proc?.query) return;
  await sleep(2500); // the queue consumer's batch timeout is 1 s in the test env
  const served = results.load.filter((r) => r.id === inst.id).reduce((s, r) => s + r.requests, 0);
  const q = await inst.proc.query("SELECT COUNT(*) AS events, SUM(cost_micros) AS micros FROM cost_events");
  const d = await inst.proc.query("SELECT COALESCE(SUM(requests), 0) AS requests FROM cost_daily");
  results.ledger[inst.id] = { rows: q.results?.[0]?.events ?? null, costMicros: q.results?.[0]?.micros ?? null, rolledUp: d.results?.[0]?.requests ?? null, error: q.error ?? d.error, measuredRequests: served };
  log(`ledger ${inst.id}: ${results.ledger[inst.id].rows} cost events in D1 (${served} requests in measured runs, plus warm-ups)`);
}

// ------------------------------------------------------------------ main

async function main() {
  log(`results in ${OUT}`);
  await describeMachine();
  log(`machine: ${results.machine.nproc} × ${results.machine.cpuModel}, busy ${(results.machine.busyBeforeStart * 100).toFixed(0)}% before the run`);
  builds = { gateway: snapshotBuild(P.gatewayBuild, "gateway"), passthrough: snapshotBuild(P.passthroughBuild, "passthrough") };
  builds.gatewayNamed = P.gatewayNamedBuild && existsSync(path.join(P.gatewayNamedBuild, "index_bg.wasm"))
    ? snapshotBuild(P.gatewayNamedBuild, "gateway-named") : builds.gateway;
  await startUpstreams();
  save();
  if (!O.skip.has("probe")) await probeMockUpstream().catch((e) => fail("upstream probe", e));
  if (!O.skip.has("size")) { try { phaseSize(); } catch (e) { fail("size", e); } }
  if (!O.skip.has("startup")) await phaseStartup();
  save();

  const insts = [];
  for (const id of ids) {
    try {
      const inst = await start(id);
      try {
        await validate(inst);
      } catch (e) {
        await inst.stop();
        throw e;
      }
      insts.push(inst);
      log(`up: ${id} (${DEFS[id].label})${inst.startupMs ? `, first 200 after ${inst.startupMs.toFixed(0)} ms` : ""}`);
    } catch (e) {
      fail(`start ${id}`, e);
    }
  }
  save();
  // What the contenders burn while nobody calls them (it competes with every measurement).
  const idleBefore = insts.map((i) => usage(i.cpuPids()).cpuS);
  results.machine.busyWithContendersIdle = +(await machineBusy(2000)).toFixed(3);
  insts.forEach((inst, k) => {
    results.contenders[inst.id].idleCpuPct = +(((usage(inst.cpuPids()).cpuS - idleBefore[k]) / 2) * 100).toFixed(1);
  });
  if (env.BENCH_HOLD) {
    // For poking at the contenders by hand: `make bench` stops them all on Ctrl-C.
    for (const inst of insts) log(`hold: ${inst.id} ${inst.streamUrl} ${JSON.stringify(inst.streamHeaders)}`);
    await new Promise(() => {});
  }
  if (!O.skip.has("load")) await phaseLoad(insts);
  if (!O.skip.has("stream")) await phaseStream(insts);
  recordMemory(insts);
  if (!O.skip.has("cpu")) await phaseCpuStream(insts);
  await ledgerCheck(insts.find((i) => i.id === "gw-miniflare"));
  for (const inst of insts) await inst.stop();
  save();
  if (!O.skip.has("soak")) await phaseSoak();
  if (!O.skip.has("profile")) await phaseProfile();
  if (!O.skip.has("micro")) { try { phaseMicro(); } catch (e) { fail("microbenchmarks", e); } }

  results.machine.loadavgEnd = readFileSync("/proc/loadavg", "utf8").trim();
  results.machine.otherProcessesAtEnd = otherBusyProcesses();
  results.finished = new Date().toISOString();
  results.seconds = (Date.parse(results.finished) - Date.parse(results.started)) / 1000;
  save();
  let md;
  try {
    md = render(results);
  } catch (e) {
    fail("report", e);
    save();
    md = `The report could not be rendered (${e.message}); the raw results are in ${path.join(OUT, "results.json")}.`;
  }
  writeFileSync(path.join(OUT, "report.md"), md);
  if (path.dirname(OUT) === path.join(BENCH, "results")) {
    const latest = path.join(BENCH, "results", "latest");
    try { rmSync(latest, { force: true }); symlinkSync(path.basename(OUT), latest); } catch { /* not fatal */ }
  }
  if (!env.BENCH_NO_UPDATE) updateBenchmarksMd(path.join(ROOT, "BENCHMARKS.md"), md, results);
  log(`done in ${results.seconds.toFixed(0)} s: ${path.join(OUT, "report.md")}${env.BENCH_NO_UPDATE ? "" : " (and BENCHMARKS.md)"}`);
  await stopProcess(upstream.nginx);
  await stopProcess(upstream.mock);
  killAllNow();
  // The contenders' state (wasm copies, local D1/KV, configs) is not needed after the report.
  rmSync(path.join(OUT, "state"), { recursive: true, force: true });
  // A contender that fails is a result (recorded in the report), not a failed benchmark.
  for (const x of results.failures) log(`recorded failure: ${x.where}: ${x.message.slice(0, 200)}`);
  process.exit(0);
}

main().catch((e) => {
  fail("bench", e);
  save();
  console.error(e?.stack ?? e);
  process.exit(1);
});
