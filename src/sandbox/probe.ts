/*
 * Sends traffic from inside a network namespace and prints what came back, one JSON document:
 *   ip netns exec NS node --import tsx src/sandbox/probe.ts --plan JSON
 * where JSON is a list of {protocol: "tcp"|"udp", host, port, count, timeoutMs}. One process runs
 * the whole plan because Node start-up costs far more than the probes. Requests run one after
 * another, each on a new connection (new source port) and each bounded by its timeout, so the
 * whole run is bounded by the sum of count × timeout.
 */
import { createSocket } from "node:dgram";
import { request } from "node:http";
import { isIP, isIPv6 } from "node:net";
import { parseArgs } from "node:util";

type ErrorKind = "refused" | "timeout" | "unreachable" | "reset" | "other";
type Outcome =
  | { readonly ok: true; readonly pod: string; readonly client: string }
  | { readonly ok: false; readonly error: ErrorKind; readonly detail: string };

interface Step {
  readonly protocol: "tcp" | "udp";
  readonly host: string;
  readonly port: number;
  readonly count: number;
  readonly timeoutMs: number;
}

const MAX_COUNT = 1000;
const MAX_TIMEOUT_MS = 30_000;
const MAX_STEPS = 100;

function fail(message: string): never {
  console.error(`probe: ${message}`);
  process.exit(2);
}

function bounded(value: unknown, what: string, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > max) {
    fail(`${what} must be an integer 1..${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function parsePlan(text: string): Step[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    fail("--plan is not JSON");
  }
  if (!Array.isArray(raw) || raw.length < 1 || raw.length > MAX_STEPS)
    fail(`--plan must list 1..${MAX_STEPS} steps`);
  return raw.map((entry: unknown, index): Step => {
    const step = (typeof entry === "object" && entry !== null ? entry : {}) as Record<string, unknown>;
    const { protocol, host } = step;
    if (protocol !== "tcp" && protocol !== "udp") fail(`step ${index}: protocol must be tcp or udp`);
    if (typeof host !== "string" || isIP(host) === 0) fail(`step ${index}: host must be an IP address`);
    return {
      protocol,
      host,
      port: bounded(step.port, `step ${index}: port`, 65535),
      count: bounded(step.count, `step ${index}: count`, MAX_COUNT),
      timeoutMs: bounded(step.timeoutMs, `step ${index}: timeoutMs`, MAX_TIMEOUT_MS),
    };
  });
}

const { values } = parseArgs({ options: { plan: { type: "string" } }, strict: true });
const plan = parsePlan(values.plan ?? fail("--plan is required"));

function classify(error: NodeJS.ErrnoException): ErrorKind {
  switch (error.code) {
    case "ECONNREFUSED":
      return "refused";
    case "ETIMEDOUT":
      return "timeout";
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "unreachable";
    case "ECONNRESET":
    case "EPIPE":
      return "reset";
    default:
      return "other";
  }
}

function parseReply(text: string): Outcome {
  try {
    const reply = JSON.parse(text) as { pod?: unknown; client?: unknown };
    if (typeof reply.pod === "string" && typeof reply.client === "string") {
      return { ok: true, pod: reply.pod, client: reply.client };
    }
  } catch {
    // Falls through: anything but the pod server's JSON is reported as an unexpected answer.
  }
  return { ok: false, error: "other", detail: `unexpected reply ${JSON.stringify(text.slice(0, 200))}` };
}

function httpOnce({ host, port, timeoutMs }: Step): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      resolve(outcome);
    };
    const req = request(
      { host, port, path: "/", agent: false, headers: { connection: "close" } },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => settle(parseReply(Buffer.concat(chunks).toString("utf8"))));
        response.on("error", (error: NodeJS.ErrnoException) =>
          settle({ ok: false, error: classify(error), detail: error.message }),
        );
      },
    );
    const timer = setTimeout(
      () => settle({ ok: false, error: "timeout", detail: `no answer within ${timeoutMs} ms` }),
      timeoutMs,
    );
    req.on("error", (error: NodeJS.ErrnoException) =>
      settle({ ok: false, error: classify(error), detail: error.message }),
    );
    req.end();
  });
}

function udpOnce({ host, port, timeoutMs }: Step): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = createSocket(isIPv6(host) ? "udp6" : "udp4");
    let settled = false;
    const settle = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.close();
      resolve(outcome);
    };
    const timer = setTimeout(
      () => settle({ ok: false, error: "timeout", detail: `no answer within ${timeoutMs} ms` }),
      timeoutMs,
    );
    // A connected socket is what receives ICMP port-unreachable as ECONNREFUSED.
    socket.on("error", (error: NodeJS.ErrnoException) =>
      settle({ ok: false, error: classify(error), detail: error.message }),
    );
    socket.on("message", (message) => settle(parseReply(message.toString("utf8"))));
    socket.connect(port, host, () => socket.send("ping"));
  });
}

const reports = [];
for (const step of plan) {
  const results: Outcome[] = [];
  for (let i = 0; i < step.count; i++)
    results.push(await (step.protocol === "tcp" ? httpOnce(step) : udpOnce(step)));
  reports.push({ protocol: step.protocol, host: step.host, port: step.port, results });
}
console.log(JSON.stringify({ reports }));
