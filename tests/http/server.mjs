// Test harness: runs the real moondream-server binary on free ports (gRPC, metrics and
// the OpenAI-compatible HTTP front), parses the logfmt `event=listening` line for the
// bound addresses, waits for `event=serving` and kills the process on stop().
//
// Env: MOONDREAM_SERVER_BINARY (the binary), MOONDREAM_FIXTURES_DIR (moondream-tiny),
// MOONDREAM_TEST_TIME_SCALE (multiplies the SDK's request timeout; scripts/test --asan sets 3).
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import OpenAI from "openai";

export const BINARY = process.env.MOONDREAM_SERVER_BINARY ?? "";
export const FIXTURES_DIR = process.env.MOONDREAM_FIXTURES_DIR ?? "";
const TIME_SCALE = Number(process.env.MOONDREAM_TEST_TIME_SCALE) || 1;
const SETPRIV = "/usr/bin/setpriv";  // util-linux: --pdeathsig, so a killed test run leaves no server

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

// The value of `key=` in a logfmt line ("" when absent); quoted values are unquoted.
export function logField(line, key) {
  const match = new RegExp(`(?:^| )${key}=("(?:[^"\\\\]|\\\\.)*"|\\S*)`).exec(line);
  if (!match) return "";
  const value = match[1];
  return value.startsWith('"') ? JSON.parse(value) : value;
}

export class ServerProcess {
  constructor(child, args) {
    this.child = child;
    this.args = args;
    this.lines = [];
    this.exitCode = undefined;
    this.waiters = new Set();  // () => void, called on every line and at exit
    let partial = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (data) => {
      const parts = (partial + data).split("\n");
      partial = parts.pop();
      for (const line of parts) this.#addLine(line);
    });
    child.on("exit", (code, signal) => {
      if (partial) this.#addLine(partial);
      partial = "";
      this.exitCode = code ?? signal;
      running.delete(child);
      for (const wake of this.waiters) wake();
    });
  }

  #addLine(line) {
    this.lines.push(line);
    if (this.lines.length > 5000) this.lines.splice(0, 1000);
    if (line.includes("event=listening")) {
      this.grpcAddress = logField(line, "address");
      this.metricsAddress = logField(line, "metrics");
      this.httpAddress = logField(line, "http");
    }
    for (const wake of this.waiters) wake();
  }

  get exited() {
    return this.exitCode !== undefined;
  }

  // The last `n` stderr lines, for failure messages.
  logs(n = 40) {
    return this.lines.slice(-n).join("\n");
  }

  // Resolves once a stderr line contains `needle`; rejects (with the log tail) on timeout
  // or when the process exits first.
  waitForLog(needle, timeoutMs = 60_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const line = this.lines.find((l) => l.includes(needle));
        if (line !== undefined) return done(null, line);
        if (this.exited) {
          return done(new Error(`moondream-server exited (${this.exitCode}) before logging "${needle}"; ` +
                                `args: ${this.args.join(" ")}\n--- stderr tail ---\n${this.logs()}`));
        }
      };
      const timer = setTimeout(() => done(new Error(
        `moondream-server did not log "${needle}" within ${timeoutMs} ms; args: ${this.args.join(" ")}\n` +
        `--- stderr tail ---\n${this.logs()}`)), timeoutMs);
      const done = (error, line) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        error ? reject(error) : resolve(line);
      };
      this.waiters.add(check);
      check();
    });
  }

  httpUrl(path) {
    return `http://${this.httpAddress}${path}`;
  }

  metricsUrl(path) {
    return `http://${this.metricsAddress}${path}`;
  }

  get baseURL() {
    return this.httpUrl("/v1");
  }

  // An OpenAI SDK client for this server: no retries (429/5xx must reach the test).
  client({ apiKey = "sk-anything", ...options } = {}) {
    return new OpenAI({ baseURL: this.baseURL, apiKey, maxRetries: 0, timeout: 30_000 * TIME_SCALE,
                       ...options });
  }

  // SIGTERM, then SIGKILL if it has not exited within `graceMs`.
  async stop(graceMs = 3000) {
    if (this.exited) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

// Starts `moondream-server --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
// --http-listen 127.0.0.1:0 ...args` (`env`: extra environment) and waits until it logs
// `readyEvent`; fails with the server's stderr tail if it exits or times out first.
export async function startServer(args, { env = {}, readyEvent = "event=serving", timeoutMs = 60_000 } = {}) {
  if (!BINARY || !existsSync(BINARY)) {
    throw new Error(`MOONDREAM_SERVER_BINARY=${JSON.stringify(BINARY)} is not a file (set it to build/server/moondream-server)`);
  }
  const serverArgs = ["--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0", "--http-listen=127.0.0.1:0", ...args];
  const [command, commandArgs] = existsSync(SETPRIV)
    ? [SETPRIV, ["--pdeathsig", "KILL", "--", BINARY, ...serverArgs]]
    : [BINARY, serverArgs];
  const child = spawn(command, commandArgs, {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? "PASSIVE", ...env },
  });
  running.add(child);
  const server = new ServerProcess(child, [BINARY, ...serverArgs]);
  try {
    await server.waitForLog("event=listening", timeoutMs);
    if (!server.httpAddress) {
      throw new Error(`the event=listening line has no http= field (does the binary have --http-listen?)\n` +
                      `--- stderr tail ---\n${server.logs()}`);
    }
    await server.waitForLog(readyEvent, timeoutMs);
  } catch (error) {
    child.kill("SIGKILL");
    throw error;
  }
  return server;
}

// The weight-free deterministic test model.
export function startTestServer(extraArgs = [], options = {}) {
  return startServer(["--model=test", ...extraArgs], options);
}

// fetch() that returns { status, headers, text, json } (json: parsed body or undefined).
export async function request(url, { method = "GET", headers = {}, body, signal } = {}) {
  const init = { method, headers: { ...headers }, signal };
  if (body !== undefined) {
    init.body = typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
    if (!Object.keys(init.headers).some((h) => h.toLowerCase() === "content-type")) {
      init.headers["Content-Type"] = "application/json";
    }
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

// POST /v1/chat/completions with a raw JSON body.
export function postChat(server, body, headers = {}) {
  return request(server.httpUrl("/v1/chat/completions"), { method: "POST", headers, body });
}

// The sum of every sample of `name` whose labels include all of `labels` ({code: "OK"}) in a
// Prometheus text scrape; -1 when none matches.
export function metricValue(scrape, name, labels = {}) {
  let total = -1;
  for (const line of scrape.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = {};
    for (const [, key, value] of (match[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have[key] = value;
    if (Object.entries(labels).every(([key, value]) => have[key] === String(value))) {
      total = (total < 0 ? 0 : total) + Number(match[4]);
    }
  }
  return total;
}

export async function scrape(server, port = "metrics") {
  const url = port === "metrics" ? server.metricsUrl("/metrics") : server.httpUrl("/metrics");
  const { status, text } = await request(url);
  if (status !== 200) throw new Error(`GET ${url}: ${status} ${text}`);
  return text;
}

// Scrapes until `predicate(value)` holds for metricValue(name, labels); returns the value, or
// throws with the last value seen after `timeoutMs`.
export async function waitForMetric(server, name, labels, predicate, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  let value;
  for (;;) {
    value = metricValue(await scrape(server), name, labels);
    if (predicate(value)) return value;
    if (Date.now() > end) {
      throw new Error(`${name}${JSON.stringify(labels)} = ${value} after ${timeoutMs} ms\n` +
                      `--- stderr tail ---\n${server.logs(15)}`);
    }
    await sleep(50);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
