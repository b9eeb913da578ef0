// pgkeeper client: sign (Standard Webhooks) and send requests to pgkeeper's function URLs.
// Dependency-free: Node >= 18 (node:crypto and the global fetch). Copy this file into a Vercel
// project (route handler) or a Fly machine image; see docs/TRIGGERS.md.
//
//   import { trigger, getRun, waitForRun } from "./pgkeeper.mjs";
//   const { status, body } = await trigger(process.env.PGKEEPER_REFRESH_URL, { job: "refresh" });
//
// As a command:  node pgkeeper.mjs trigger URL --job refresh [--options JSON] [--async] [--wait]
//                node pgkeeper.mjs run URL RUN_ID | health URL | sign --job refresh [--options JSON]
// The secret comes from PGKEEPER_WEBHOOK_SECRET (whsec_...), never from an argument.

import { createHmac, randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

const FINAL = new Set(["succeeded", "partial", "failed", "skipped"]);

/** What the signature covers: the raw body, or for a body-less request its request line. */
export function signedPayload(method, path, query, body) {
  if (body) return body;
  const line = `${method.toUpperCase()} ${path || "/"}`;
  return query ? `${line}?${query}` : line;
}

/** The three Standard Webhooks headers for one request. */
export function sign({ secret, method = "POST", path = "/", query = "", body = "", id, timestamp } = {}) {
  if (typeof secret !== "string" || !secret.startsWith("whsec_")) {
    throw new Error("pgkeeper: the secret must look like whsec_<base64> (set PGKEEPER_WEBHOOK_SECRET)");
  }
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const msgId = id ?? `msg_${randomUUID().replaceAll("-", "")}`;
  const ts = String(timestamp ?? Math.floor(Date.now() / 1000));
  const payload = signedPayload(method, path, query, body);
  const mac = createHmac("sha256", key).update(`${msgId}.${ts}.${payload}`, "utf8").digest("base64");
  return { "webhook-id": msgId, "webhook-timestamp": ts, "webhook-signature": `v1,${mac}` };
}

/** The body of `POST /`: it names the job, so the signature authorises exactly this run. */
export function jobBody(job, options = {}, runAsync) {
  const body = { job, options };
  if (runAsync !== undefined) body.async = runAsync;
  return JSON.stringify(body);
}

async function send(url, { method, path, query = "", body = "", secret, fetchImpl = fetch, timeoutMs = 900_000 }) {
  const headers = sign({ secret, method, path, query, body });
  if (body) headers["content-type"] = "application/json";
  const target = url.replace(/\/+$/, "") + path + (query ? `?${query}` : "");
  const res = await fetchImpl(target, {
    method,
    headers,
    body: body || undefined,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, body: parsed };
}

const secretFromEnv = () => process.env.PGKEEPER_WEBHOOK_SECRET;

/** Run `job` (200 with the report; 202 {run_id} for a long job or `async: true`). */
export function trigger(url, { job, options = {}, async: runAsync, secret = secretFromEnv(), ...rest } = {}) {
  if (!job) throw new Error("pgkeeper: trigger needs { job }");
  return send(url, { method: "POST", path: "/", body: jobBody(job, options, runAsync), secret, ...rest });
}

/** One run's status and report. */
export function getRun(url, runId, { secret = secretFromEnv(), ...rest } = {}) {
  return send(url, { method: "GET", path: `/runs/${encodeURIComponent(runId)}`, secret, ...rest });
}

/** Database reachability and the last run per job (`detail: true` adds the health report). */
export function health(url, { secret = secretFromEnv(), detail = false, ...rest } = {}) {
  return send(url, { method: "GET", path: "/health", query: detail ? "detail=1" : "", secret, ...rest });
}

/** Poll a 202's run until it ends (or `timeoutMs` passes); returns the last answer. */
export async function waitForRun(url, runId, { timeoutMs = 900_000, intervalMs = 1000, ...rest } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answer = await getRun(url, runId, rest);
    if (answer.status >= 400 || FINAL.has(answer.body.status) || Date.now() > deadline) return answer;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ----------------------------------------------------------------------------- command line

function parseArgs(argv) {
  const positional = [];
  const flags = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--async" || arg === "--wait" || arg === "--detail") flags[arg.slice(2)] = true;
    else if (arg === "--job" || arg === "--options") flags[arg.slice(2)] = argv[++i];
    else if (arg.startsWith("--")) throw new Error(`unknown option ${arg}`);
    else positional.push(arg);
  }
  return { positional, flags };
}

async function main(argv) {
  const { positional, flags } = parseArgs(argv);
  const [command, url, runId] = positional;
  const options = flags.options ? JSON.parse(flags.options) : {};
  const runAsync = flags.async ? true : undefined;
  let answer;
  if (command === "sign") {
    const body = jobBody(flags.job, options, runAsync);
    const headers = { ...sign({ secret: secretFromEnv(), body }), "content-type": "application/json" };
    console.log(JSON.stringify({ method: "POST", path: "/", headers, body }));
    return 0;
  } else if (command === "trigger" && url) {
    answer = await trigger(url, { job: flags.job, options, async: runAsync });
    if (answer.status === 202 && flags.wait) {
      console.error(`HTTP 202 ${JSON.stringify(answer.body)}`);
      answer = await waitForRun(url, answer.body.run_id);
    }
  } else if (command === "run" && url && runId) {
    answer = await getRun(url, runId);
  } else if (command === "health" && url) {
    answer = await health(url, { detail: Boolean(flags.detail) });
  } else {
    console.error("usage: node pgkeeper.mjs trigger URL --job JOB [--options JSON] [--async] [--wait]\n" +
      "       node pgkeeper.mjs run URL RUN_ID | health URL [--detail] | sign --job JOB [--options JSON]\n" +
      "       (secret: PGKEEPER_WEBHOOK_SECRET=whsec_...)");
    return 2;
  }
  console.error(`HTTP ${answer.status}`);
  console.log(JSON.stringify(answer.body, null, 2));
  return answer.status < 400 && answer.body.status !== "failed" ? 0 : 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`pgkeeper: ${err.message}`);
      process.exit(2);
    },
  );
}
