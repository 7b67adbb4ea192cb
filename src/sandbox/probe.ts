/*
 * Sends traffic from inside a network namespace and prints what came back, one JSON document:
 *   ip netns exec NS node --import tsx src/sandbox/probe.ts \
 *     --protocol tcp|udp --host IP --port N [--count N] [--timeout-ms N]
 * Requests run one after another, each on a new connection (new source port), each bounded by
 * the timeout, so a caller can bound the whole run by count × timeout.
 */
import { createSocket } from "node:dgram";
import { request } from "node:http";
import { isIPv6 } from "node:net";
import { parseArgs } from "node:util";

type ErrorKind = "refused" | "timeout" | "unreachable" | "reset" | "other";
type Outcome =
  | { readonly ok: true; readonly pod: string; readonly client: string }
  | { readonly ok: false; readonly error: ErrorKind; readonly detail: string };

const MAX_COUNT = 1000;
const MAX_TIMEOUT_MS = 30_000;

const { values } = parseArgs({
  options: {
    protocol: { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    count: { type: "string", default: "1" },
    "timeout-ms": { type: "string", default: "1000" },
  },
  strict: true,
});

function fail(message: string): never {
  console.error(`probe: ${message}`);
  process.exit(2);
}

function bounded(text: string, flag: string, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > max) fail(`${flag} must be 1..${max}, got ${text}`);
  return value;
}

const protocol = values.protocol;
if (protocol !== "tcp" && protocol !== "udp") fail("--protocol must be tcp or udp");
const host = values.host ?? fail("--host is required");
const port = bounded(values.port ?? fail("--port is required"), "--port", 65535);
const count = bounded(values.count, "--count", MAX_COUNT);
const timeoutMs = bounded(values["timeout-ms"], "--timeout-ms", MAX_TIMEOUT_MS);

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

function httpOnce(): Promise<Outcome> {
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

function udpOnce(): Promise<Outcome> {
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

const results: Outcome[] = [];
for (let i = 0; i < count; i++) results.push(await (protocol === "tcp" ? httpOnce() : udpOnce()));
console.log(JSON.stringify({ protocol, host, port, results }));
