/*
 * Long-running traffic inside a sandbox namespace, for what one-shot probes cannot show:
 *   echo-server --pod NAME --port P      TCP: answers each line with {"pod"} on the same connection
 *   hold        --host H --port P        one TCP connection, one line every --interval-ms
 *   udp-stream  --host H --port P --sport S   one UDP socket (fixed source port), one datagram per interval
 *   load        --host H --port P        HTTP requests back to back, each a new connection
 * Clients print {"ready":…} at their first answer, {"answeredBy":…} whenever the answering pod
 * changes, and, on SIGTERM (or after --max-ms), one
 * {"summary":…} line: answers per pod, and every failure with its time.
 */
import { createSocket } from "node:dgram";
import { request } from "node:http";
import { createConnection, createServer } from "node:net";
import { isIPv6 } from "node:net";
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    pod: { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    sport: { type: "string" },
    "interval-ms": { type: "string", default: "100" },
    "timeout-ms": { type: "string", default: "1000" },
    "max-ms": { type: "string", default: "120000" },
  },
});

interface Failure {
  readonly atMs: number;
  readonly error: string;
}

const started = Date.now();
const byPod: Record<string, number> = {};
const failures: Failure[] = [];
let ready = false;
let lastPod: string | undefined;
const interval = Number(values["interval-ms"]);
const timeoutMs = Number(values["timeout-ms"]);
const host = values.host ?? "";
const port = Number(values.port);

function answered(pod: string): void {
  byPod[pod] = (byPod[pod] ?? 0) + 1;
  if (!ready) {
    ready = true;
    console.log(JSON.stringify({ ready: pod }));
  }
  if (pod !== lastPod) {
    lastPod = pod;
    console.log(JSON.stringify({ answeredBy: pod, atMs: Date.now() - started }));
  }
}

function failed(error: string): void {
  failures.push({ atMs: Date.now() - started, error });
}

function finish(): never {
  const answers = Object.values(byPod).reduce((a, b) => a + b, 0);
  console.log(JSON.stringify({ summary: { answers, byPod, failures: failures.slice(0, 200) } }));
  process.exit(0);
}

process.on("SIGTERM", finish);
process.on("SIGINT", finish);
setTimeout(finish, Number(values["max-ms"])).unref();

function podOf(text: string): string | undefined {
  try {
    const reply = JSON.parse(text) as { pod?: unknown };
    return typeof reply.pod === "string" ? reply.pod : undefined;
  } catch {
    return undefined;
  }
}

function echoServer(): void {
  const pod = values.pod ?? "";
  const server = createServer((socket) => {
    let buffered = "";
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      for (let i = buffered.indexOf("\n"); i >= 0; i = buffered.indexOf("\n")) {
        buffered = buffered.slice(i + 1);
        socket.write(`${JSON.stringify({ pod })}\n`);
      }
    });
    socket.on("error", () => socket.destroy());
  });
  server.listen({ port, host: "::", ipv6Only: false }, () => console.log(JSON.stringify({ listening: pod })));
}

/** One connection for the whole run: a failure ends it, since the point is that it survives. */
function hold(): void {
  const socket = createConnection({ host, port });
  let buffered = "";
  let outstanding: NodeJS.Timeout | null = null;
  const send = (): void => {
    outstanding = setTimeout(() => {
      failed(`no echo within ${timeoutMs} ms`);
      socket.destroy();
    }, timeoutMs);
    socket.write("ping\n");
  };
  socket.on("connect", send);
  socket.on("data", (chunk: Buffer) => {
    buffered += chunk.toString("utf8");
    for (let i = buffered.indexOf("\n"); i >= 0; i = buffered.indexOf("\n")) {
      const pod = podOf(buffered.slice(0, i));
      buffered = buffered.slice(i + 1);
      if (outstanding !== null) clearTimeout(outstanding);
      outstanding = null;
      if (pod === undefined) failed("unexpected reply");
      else answered(pod);
      setTimeout(send, interval);
    }
  });
  socket.on("error", (error) => failed(error.message));
  socket.on("close", () => failed("connection closed"));
}

function udpStream(): void {
  const socket = createSocket(isIPv6(host) ? "udp6" : "udp4");
  let pendingSince: number | null = null;
  socket.on("message", (message) => {
    const pod = podOf(message.toString("utf8"));
    pendingSince = null;
    if (pod === undefined) failed("unexpected reply");
    else answered(pod);
  });
  // Unconnected on purpose: ICMP errors must not close the stream, only answers count.
  socket.on("error", (error) => failed(error.message));
  socket.bind(Number(values.sport), () => {
    setInterval(() => {
      if (pendingSince !== null && Date.now() - pendingSince > timeoutMs) {
        failed("no answer");
        pendingSince = null;
      }
      pendingSince ??= Date.now();
      socket.send("ping", port, host);
    }, interval);
  });
}

function httpOnce(): Promise<void> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (pod: string | undefined, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.destroy();
      if (pod !== undefined) answered(pod);
      else failed(error ?? "unexpected reply");
      resolve();
    };
    const req = request({ host, port, path: "/", agent: false }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString("utf8")));
      response.on("end", () => settle(podOf(body)));
      response.on("error", (error) => settle(undefined, error.message));
    });
    const timer = setTimeout(() => settle(undefined, `timeout after ${timeoutMs} ms`), timeoutMs);
    req.on("error", (error) => settle(undefined, error.message));
    req.end();
  });
}

async function load(): Promise<void> {
  for (;;) {
    await httpOnce();
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

switch (positionals[0]) {
  case "echo-server":
    echoServer();
    break;
  case "hold":
    hold();
    break;
  case "udp-stream":
    udpStream();
    break;
  case "load":
    void load();
    break;
  default:
    console.error(`traffic-agent: unknown mode ${JSON.stringify(positionals[0])}`);
    process.exit(2);
}
