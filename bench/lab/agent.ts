/*
 * The scale lab's traffic, run inside a sandbox namespace (bench/lab.ts):
 *   serve --port P                      TCP: accept and close; UDP: echo every datagram
 *   tcp   --host H --port P --count N --rate R   N new connections, R per second, one after another
 *   udp   --host H --port P --count N --rate R   N first packets, each from a new socket (new port)
 *   (tcp and udp: --warmup W first sends W more, at the same rate, and does not count them: the
 *   client's first calls compile its code and fill the neighbour caches, which is no rule's cost)
 * Clients print one JSON line: the latencies' percentiles in milliseconds, the failures, and the
 * node's softirq time over the run read from /proc/stat (jiffies → ms).
 */
import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    host: { type: "string" },
    port: { type: "string" },
    count: { type: "string", default: "500" },
    rate: { type: "string", default: "200" },
    "timeout-ms": { type: "string", default: "1000" },
    warmup: { type: "string", default: "0" },
  },
});

const port = Number(values.port);
const count = Number(values.count);
const warmup = Number(values.warmup);
const intervalMs = 1000 / Number(values.rate);
const timeoutMs = Number(values["timeout-ms"]);
const CLK_TCK = 100;

function softirqMs(): number {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/);
  return (Number(cpu[7]) * 1000) / CLK_TCK;
}

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function tcpOnce(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const socket = createConnection({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("timeout"));
    }, timeoutMs);
    socket.once("connect", () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      clearTimeout(timer);
      socket.destroy();
      resolve(ms);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function udpOnce(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
    const done = (fn: () => void) => {
      clearTimeout(timer);
      socket.close();
      fn();
    };
    const timer = setTimeout(() => done(() => reject(new Error("timeout"))), timeoutMs);
    let t0 = 0n;
    socket.once("message", () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      done(() => resolve(ms));
    });
    socket.once("error", (err) => done(() => reject(err)));
    t0 = process.hrtime.bigint();
    socket.send("x", port, host);
  });
}

async function client(once: (host: string) => Promise<number>): Promise<void> {
  const host = values.host;
  if (host === undefined) throw new Error("--host is required");
  const latencies: number[] = [];
  const failures: string[] = [];
  const warmupStarted = performance.now();
  for (let i = 0; i < warmup; i++) {
    const wait = warmupStarted + i * intervalMs - performance.now();
    if (wait > 0) await sleep(wait);
    await once(host).catch(() => undefined);
  }
  const softirqBefore = softirqMs();
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const due = started + i * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    try {
      latencies.push(await once(host));
    } catch (err) {
      if (failures.length < 20) failures.push((err as Error).message);
      else failures.push("");
    }
  }
  const elapsedMs = performance.now() - started;
  latencies.sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      count: latencies.length,
      failed: failures.length,
      failures: failures.filter((f) => f !== "").slice(0, 5),
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      p999: percentile(latencies, 99.9),
      elapsedMs,
      softirqMs: softirqMs() - softirqBefore,
    }),
  );
}

function serve(): void {
  createServer((socket) => socket.destroy()).listen(port, "0.0.0.0");
  const udp = createSocket("udp4");
  udp.on("message", (msg, rinfo) => udp.send(msg, rinfo.port, rinfo.address));
  udp.bind(port, "0.0.0.0", () => console.log(JSON.stringify({ ready: true })));
}

const mode = positionals[0];
if (mode === "serve") serve();
else if (mode === "tcp") await client(tcpOnce);
else if (mode === "udp") await client(udpOnce);
else throw new Error(`usage: agent.ts serve|tcp|udp …, not ${String(mode)}`);
