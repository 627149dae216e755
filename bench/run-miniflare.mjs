// Serves a built worker (worker-build's index.js + index_bg.wasm) through Miniflare's API,
// the runtime `make bench` measures the gateway on: workerd with Miniflare's local
// KV, D1 and Queues, without `wrangler dev`'s Node.js proxy in front.
//
//   node bench/run-miniflare.mjs --dir DIR --port N [--wrangler-config FILE --env NAME]
//        [--migrations DIR] [--persist DIR] [--queue-consumers off] [--var NAME=VALUE]...
//        [--var-file NAME=FILE]...
//
// With --wrangler-config the bindings are wrangler's own reading of that file and
// environment (KV, D1, queue producers and consumers, vars, ...), so they stay what
// `wrangler.toml` says; --migrations applies every .sql file there, in name order, to each
// D1 database through Miniflare's D1 API. Listens on 127.0.0.1 only. Prints one JSON line
// `{"ready": URL, "pid": ...}` once it serves, and shuts Miniflare down on SIGTERM/SIGINT.

import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { Miniflare, Log, LogLevel } from "miniflare";

function parseArgs(argv) {
  const args = { vars: {}, varFiles: {} };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[++i];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    const pair = () => {
      const at = value.indexOf("=");
      if (at < 1) throw new Error(`${flag} needs NAME=VALUE, got ${value}`);
      return [value.slice(0, at), value.slice(at + 1)];
    };
    switch (flag) {
      case "--dir": args.dir = value; break;
      case "--port": args.port = Number(value); break;
      case "--wrangler-config": args.wranglerConfig = value; break;
      case "--env": args.env = value; break;
      case "--migrations": args.migrations = value; break;
      case "--persist": args.persist = value; break;
      case "--queue-consumers": args.queueConsumers = value; break;
      case "--compatibility-date": args.compatibilityDate = value; break;
      case "--var": { const [k, v] = pair(); args.vars[k] = v; break; }
      case "--var-file": { const [k, f] = pair(); args.varFiles[k] = f; break; }
      default: throw new Error(`unknown flag ${flag}`);
    }
  }
  if (!args.dir || !args.port) throw new Error("--dir and --port are required");
  return args;
}

// A caller in Frankfurt: what Cloudflare's edge would put in request.cf. Requests may
// override it with the MF-CF-Blob header (as under `wrangler dev`).
const CF = {
  country: "DE", continent: "EU", isEUCountry: "1", colo: "FRA", region: "Hesse", regionCode: "HE",
  city: "Frankfurt am Main", latitude: "50.11090", longitude: "8.68213", timezone: "Europe/Berlin",
  asn: 3320, asOrganization: "Deutsche Telekom AG", httpProtocol: "HTTP/1.1", tlsVersion: "TLSv1.3",
  clientAcceptEncoding: "identity",
};

async function main() {
  const args = parseArgs(process.argv.slice(2));
  let worker = { compatibilityDate: args.compatibilityDate ?? "2026-04-20" };
  if (args.wranglerConfig) {
    const { unstable_getMiniflareWorkerOptions } = await import("wrangler");
    const { workerOptions } = unstable_getMiniflareWorkerOptions(args.wranglerConfig, args.env);
    worker = { ...workerOptions };
    // `--queue-consumers off`: the events stay queued, as on Cloudflare, where the
    // consumer runs in invocations of its own rather than on the requests' thread.
    if (args.queueConsumers === "off") delete worker.queueConsumers;
  }
  const vars = { ...(worker.bindings ?? {}), ...args.vars };
  for (const [name, file] of Object.entries(args.varFiles)) vars[name] = readFileSync(file, "utf8");

  const dir = path.resolve(args.dir);
  const mf = new Miniflare({
    ...worker,
    name: "bench",
    bindings: vars,
    modules: true,
    scriptPath: path.join(dir, "index.js"),
    modulesRoot: dir,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"] }],
    host: "127.0.0.1",
    port: args.port,
    cf: CF,
    log: new Log(LogLevel.WARN),
    ...(args.persist
      ? { defaultPersistRoot: args.persist }
      : { kvPersist: false, d1Persist: false, cachePersist: false, durableObjectsPersist: false }),
  });
  const url = await mf.ready;

  if (args.migrations) {
    const { unstable_splitSqlQuery } = await import("wrangler");
    const files = readdirSync(args.migrations).filter((f) => f.endsWith(".sql")).sort();
    for (const name of Object.keys(worker.d1Databases ?? {})) {
      const db = await mf.getD1Database(name);
      for (const file of files) {
        const sql = readFileSync(path.join(args.migrations, file), "utf8");
        const statements = unstable_splitSqlQuery(sql).filter((s) => s.trim());
        await db.batch(statements.map((s) => db.prepare(s)));
      }
    }
  }

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    try { await mf.dispose(); } finally { process.exit(0); }
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // A D1 query for the harness, on stdin: one SQL statement per line, one JSON line back.
  process.stdin.setEncoding("utf8");
  let pending = "";
  process.stdin.on("data", async (chunk) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const sql = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (!sql) continue;
      try {
        const name = Object.keys(worker.d1Databases ?? {})[0];
        const db = await mf.getD1Database(name);
        const { results } = await db.prepare(sql).all();
        process.stdout.write(JSON.stringify({ results }) + "\n");
      } catch (e) {
        process.stdout.write(JSON.stringify({ error: String(e) }) + "\n");
      }
    }
  });
  process.stdin.on("end", () => {});
  process.stdout.write(JSON.stringify({ ready: url.href.replace(/\/$/, ""), pid: process.pid }) + "\n");
}

main().catch((e) => {
  console.error(e?.stack ?? String(e));
  process.exit(1);
});
