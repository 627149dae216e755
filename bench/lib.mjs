// Helpers for bench/bench.mjs: processes (each in its own process group, all killed on
// exit), free loopback ports, /proc accounting, HTTP, wrk, statistics.

import { spawn, execFileSync } from "node:child_process";
import { openSync, readFileSync, readdirSync, writeFileSync, appendFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";

export const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
export const PAGE = Number(execFileSync("getconf", ["PAGESIZE"]).toString().trim()) || 4096;

// ---------------------------------------------------------------- processes

const groups = new Map(); // pid -> name
let pidFile = null;

export function trackPidsIn(file) {
  pidFile = file;
  writeFileSync(file, "");
}

/** Spawns `cmd` in its own process group, output to `log`; killed by stopAll() or on exit. */
export function spawnTracked(name, cmd, args, { cwd, env, log, stdin = "ignore" } = {}) {
  const out = log ? openSync(log, "a") : "ignore";
  const child = spawn(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    detached: true,
    stdio: [stdin, stdin === "pipe" ? "pipe" : out, out],
  });
  child.startedAt = process.hrtime.bigint();
  groups.set(child.pid, name);
  if (pidFile) appendFileSync(pidFile, `${child.pid}\n`);
  child.on("exit", () => groups.delete(child.pid));
  child.on("error", () => groups.delete(child.pid));
  return child;
}

function killGroup(pid, signal) {
  try { process.kill(-pid, signal); } catch { /* already gone */ }
}

/** SIGTERM the group, SIGKILL it after `graceMs` if anything is left. */
export async function stopProcess(child, graceMs = 3000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) {
    if (child) killGroup(child.pid, "SIGKILL"); // stragglers of an exited leader
    return;
  }
  const exited = new Promise((r) => child.once("exit", r));
  killGroup(child.pid, "SIGTERM");
  const timer = new Promise((r) => setTimeout(r, graceMs, "timeout"));
  if ((await Promise.race([exited, timer])) === "timeout") killGroup(child.pid, "SIGKILL");
  killGroup(child.pid, "SIGKILL");
}

/** Process groups started here and still running. */
export function trackedGroups() {
  return new Set(groups.keys());
}

export function killAllNow() {
  for (const pid of groups.keys()) {
    killGroup(pid, "SIGTERM");
    killGroup(pid, "SIGKILL");
  }
  groups.clear();
}

process.on("exit", killAllNow);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    console.error(`\nbench: ${sig}, stopping every process it started`);
    killAllNow();
    process.exit(130);
  });
}

// ---------------------------------------------------------------- ports

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen({ port: 0, host: "127.0.0.1" }, () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- /proc

function stat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    // f[0] is field 3 (state): utime = field 14, stime = 15, rss = 24.
    return { ppid: Number(f[1]), cpuTicks: Number(f[11]) + Number(f[12]), rssBytes: Number(f[21]) * PAGE };
  } catch {
    return null;
  }
}

export function comm(pid) {
  try { return readFileSync(`/proc/${pid}/comm`, "utf8").trim(); } catch { return "?"; }
}

/** `pid` and all its descendants. */
export function tree(pid) {
  const children = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const s = stat(d);
    if (!s) continue;
    if (!children.has(s.ppid)) children.set(s.ppid, []);
    children.get(s.ppid).push(Number(d));
  }
  const out = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop();
    if (!stat(p)) continue;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** CPU seconds (user + system) and resident bytes of the processes `pids`. */
export function usage(pids) {
  let cpuTicks = 0;
  let rssBytes = 0;
  const parts = [];
  for (const p of pids) {
    const s = stat(p);
    if (!s) continue;
    cpuTicks += s.cpuTicks;
    rssBytes += s.rssBytes;
    parts.push({ pid: p, comm: comm(p), rssBytes: s.rssBytes, cpuS: s.cpuTicks / CLK_TCK });
  }
  return { cpuS: cpuTicks / CLK_TCK, rssBytes, parts };
}

/** Resident memory from /proc/PID/status (VmRSS), in bytes. */
export function vmRss(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- HTTP

export function request(url, { method = "GET", headers = {}, body, timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent: false },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on("error", reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls until a POST answers 200; returns ms since `since` (hrtime bigint) or throws.
 * `alive()` lets it give up at once when the process died.
 */
export async function waitFor200(url, { headers, body, since, timeoutMs = 120000, alive = () => true, log }) {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer";
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`process exited before answering (${last})${log ? `; see ${log}` : ""}`);
    try {
      const r = await request(url, { method: "POST", headers, body, timeoutMs: 5000 });
      if (r.status === 200) return Number(process.hrtime.bigint() - since) / 1e6;
      last = `${r.status} ${r.body.slice(0, 300)}`;
    } catch (e) {
      last = e.message;
    }
    await sleep(10);
  }
  throw new Error(`no 200 within ${timeoutMs} ms: ${last}${log ? `; see ${log}` : ""}`);
}

// ---------------------------------------------------------------- wrk

/** One wrk run; returns its JSON summary plus derived req/s. */
export function wrk({ wrkBin = "wrk", script, url, bodyFile, headers = {}, connections, seconds, timeoutS = 10 }) {
  const threads = Math.min(2, connections);
  const headerText = Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\n");
  return new Promise((resolve, reject) => {
    const child = spawn(wrkBin, ["-t", String(threads), "-c", String(connections), "-d", `${seconds}s`,
      "--timeout", `${timeoutS}s`, "-s", script, url], {
      env: { ...process.env, BENCH_BODY: bodyFile, BENCH_HEADERS: headerText },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (err += c));
    child.on("exit", (code) => {
      const line = out.trim().split("\n").reverse().find((l) => l.startsWith("{"));
      if (!line) return reject(new Error(`wrk failed (${code}): ${err || out}`));
      const r = JSON.parse(line);
      const e = r.errors;
      r.rps = r.requests / (r.duration_us / 1e6);
      r.errorCount = e.connect + e.read + e.write + e.status + e.timeout;
      resolve(r);
    });
  });
}

// ---------------------------------------------------------------- statistics

export function median(xs) {
  const v = xs.filter((x) => typeof x === "number" && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function quantile(xs, q) {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const i = Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1));
  return v[i];
}

// ---------------------------------------------------------------- streaming client

/**
 * One streamed chat completion, timed at the client: when the head arrived, when each
 * content-bearing event arrived (by network read), the end. Never throws.
 */
export function measureStream(url, { headers = {}, body, timeoutMs = 30000 }) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - t0) / 1e6;
    const u = new URL(url);
    let settled = false;
    const finish = (r) => { if (!settled) { settled = true; resolve(r); } };
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname, method: "POST", agent: false,
        headers: { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(body) } },
      (res) => {
        const headMs = ms();
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          let text = "";
          res.on("data", (c) => (text += c));
          res.on("end", () => finish({ error: `HTTP ${res.statusCode}: ${text.slice(0, 400)}` }));
          return;
        }
        let buf = "";
        let reads = 0;
        let readsWithContent = 0;
        let events = 0;
        let done = false;
        let errorEvent = null;
        const contentTimes = [];
        res.on("data", (chunk) => {
          const t = ms();
          reads++;
          buf += chunk;
          let had = false;
          for (;;) {
            const m = /\r?\n\r?\n/.exec(buf);
            if (!m) break;
            const raw = buf.slice(0, m.index);
            buf = buf.slice(m.index + m[0].length);
            const data = raw.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
            if (!data) continue;
            events++;
            if (data === "[DONE]") { done = true; continue; }
            try {
              const obj = JSON.parse(data);
              if (obj.error) errorEvent = JSON.stringify(obj.error).slice(0, 400);
              const content = obj.choices?.[0]?.delta?.content;
              if (typeof content === "string" && content.length > 0) { contentTimes.push(t); had = true; }
            } catch { /* not JSON: counted, ignored */ }
          }
          if (had) readsWithContent++;
        });
        res.on("end", () => {
          const gaps = contentTimes.slice(1).map((t, i) => t - contentTimes[i]);
          finish({
            headMs, ttftMs: contentTimes[0] ?? null, totalMs: ms(), events, contentEvents: contentTimes.length,
            reads, readsWithContent, done, errorEvent,
            spreadMs: contentTimes.length > 1 ? contentTimes.at(-1) - contentTimes[0] : 0,
            gapP50Ms: median(gaps), gapP90Ms: quantile(gaps, 0.9),
            error: errorEvent ? `error event in stream: ${errorEvent}` : (!done ? "stream ended without [DONE]" : undefined),
          });
        });
        res.on("error", (e) => finish({ error: `stream failed: ${e.message}` }));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on("error", (e) => finish({ error: e.message }));
    req.end(body);
  });
}
