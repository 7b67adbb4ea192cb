/*
 * The one long-lived process inside each network namespace of the VM (started with
 * `ip netns exec NS node agent.js NAME`): starting a process costs seconds under emulation, so
 * pods and clients each run one agent and the test runner drives it with JSON lines on stdin.
 *
 * As a pod it serves TCP (greets each connection with `NAME PEER-IP`, then answers every line
 * with `NAME LINE`) and UDP (answers each datagram with `NAME PEER-IP`). As a client it makes
 * single TCP/UDP probes, holds long-lived connections, and runs a load loop of fresh connections.
 * Every wait is bounded by the request's timeout.
 */
import { createSocket } from "node:dgram";
import { createServer, connect } from "node:net";
import type { Socket } from "node:net";
import { createInterface } from "node:readline";

const NAME = process.argv[2] ?? "agent";

interface Request {
  readonly id: number;
  readonly op: string;
  readonly host?: string;
  readonly port?: number;
  readonly tcp?: readonly number[];
  readonly udp?: readonly number[];
  readonly conn?: string;
  readonly text?: string;
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  readonly sourcePort?: number;
}

type Reply = Record<string, unknown>;

function out(message: Reply): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function errorKind(error: unknown): string {
  const code = (error as { code?: string }).code;
  return code ?? (error instanceof Error ? error.message : String(error));
}

/** A connection whose incoming lines are queued until asked for. */
class LineSocket {
  private buffer = "";
  private readonly lines: string[] = [];
  private waiter: ((line: string | Error) => void) | undefined;
  private ended: Error | undefined;

  constructor(readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      let nl;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        this.push(this.buffer.slice(0, nl));
        this.buffer = this.buffer.slice(nl + 1);
      }
    });
    socket.on("error", (error) => this.end(error));
    socket.on("close", () => this.end(new Error("ECLOSED")));
  }

  private push(line: string): void {
    if (this.waiter === undefined) {
      this.lines.push(line);
    } else {
      const w = this.waiter;
      this.waiter = undefined;
      w(line);
    }
  }

  private end(error: Error): void {
    this.ended ??= error;
    const w = this.waiter;
    this.waiter = undefined;
    w?.(error);
  }

  next(timeoutMs: number): Promise<string> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.ended !== undefined) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" }));
      }, timeoutMs);
      this.waiter = (line) => {
        clearTimeout(timer);
        if (line instanceof Error) reject(line);
        else resolve(line);
      };
    });
  }
}

function open(
  host: string,
  port: number,
  timeoutMs: number,
): Promise<{ conn: LineSocket; greeting: string }> {
  const socket = connect({ host, port });
  const conn = new LineSocket(socket);
  return conn.next(timeoutMs).then(
    (greeting) => ({ conn, greeting }),
    (error: unknown) => {
      socket.destroy();
      throw error;
    },
  );
}

/** One datagram and its answer; a fixed `sourcePort` makes every probe the same UDP flow. */
function udpProbe(host: string, port: number, timeoutMs: number, sourcePort?: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createSocket({ type: "udp4", reuseAddr: true });
    const timer = setTimeout(() => {
      socket.close();
      reject(Object.assign(new Error("timeout"), { code: "ETIMEDOUT" }));
    }, timeoutMs);
    socket.on("message", (message) => {
      clearTimeout(timer);
      socket.close();
      resolve(message.toString().trim());
    });
    socket.on("error", (error) => {
      clearTimeout(timer);
      socket.close();
      reject(error);
    });
    const send = (): void => socket.send("ping", port, host);
    if (sourcePort === undefined) send();
    else socket.bind(sourcePort, send);
  });
}

function serve(tcp: readonly number[], udp: readonly number[]): Promise<void> {
  const ready: Promise<void>[] = [];
  for (const port of tcp) {
    const server = createServer((socket) => {
      const peer = socket.remoteAddress?.replace(/^::ffff:/, "") ?? "?";
      socket.write(`${NAME} ${peer}\n`);
      const lines = new LineSocket(socket);
      const loop = (): void => {
        lines.next(24 * 3600_000).then(
          (line) => {
            socket.write(`${NAME} ${line}\n`);
            loop();
          },
          () => socket.destroy(),
        );
      };
      loop();
    });
    ready.push(new Promise((resolve, reject) => server.listen(port, "0.0.0.0", resolve).on("error", reject)));
  }
  for (const port of udp) {
    const socket = createSocket("udp4");
    socket.on("message", (_message, rinfo) =>
      socket.send(`${NAME} ${rinfo.address}\n`, rinfo.port, rinfo.address),
    );
    ready.push(new Promise((resolve, reject) => socket.bind(port, "0.0.0.0", resolve).on("error", reject)));
  }
  return Promise.all(ready).then(() => undefined);
}

interface Load {
  running: boolean;
  readonly counts: Record<string, number>;
  readonly failures: string[];
  done: Promise<void>;
}

const conns = new Map<string, LineSocket>();
const loads = new Map<string, Load>();

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Fresh connections one after another until stopped (at most an hour), counted per answering pod. */
function startLoad(host: string, port: number, intervalMs: number, timeoutMs: number): Load {
  const load: Load = { running: true, counts: {}, failures: [], done: Promise.resolve() };
  const deadline = Date.now() + 3600_000;
  load.done = (async () => {
    while (load.running && Date.now() < deadline) {
      try {
        const { conn, greeting } = await open(host, port, timeoutMs);
        conn.socket.destroy();
        const pod = greeting.split(" ")[0] ?? "?";
        load.counts[pod] = (load.counts[pod] ?? 0) + 1;
      } catch (error) {
        load.failures.push(`${new Date().toISOString()} ${errorKind(error)}`);
      }
      await sleep(intervalMs);
    }
  })();
  return load;
}

async function handle(r: Request): Promise<Reply> {
  const timeoutMs = r.timeoutMs ?? 3000;
  switch (r.op) {
    case "serve":
      await serve(r.tcp ?? [], r.udp ?? []);
      return {};
    case "tcp": {
      const { conn, greeting } = await open(r.host!, r.port!, timeoutMs);
      conn.socket.destroy();
      return { reply: greeting };
    }
    case "udp":
      return { reply: await udpProbe(r.host!, r.port!, timeoutMs, r.sourcePort) };
    case "open": {
      const { conn, greeting } = await open(r.host!, r.port!, timeoutMs);
      conns.set(r.conn!, conn);
      return { reply: greeting };
    }
    case "send": {
      const conn = conns.get(r.conn!);
      if (conn === undefined) throw new Error(`no connection ${r.conn}`);
      conn.socket.write(`${r.text}\n`);
      return { reply: await conn.next(timeoutMs) };
    }
    case "close":
      conns.get(r.conn!)?.socket.destroy();
      conns.delete(r.conn!);
      return {};
    case "reset":
      // An RST instead of a FIN: IPVS keeps the entry 10 s (CLOSE) instead of 2 min (TIME_WAIT).
      conns.get(r.conn!)?.socket.resetAndDestroy();
      conns.delete(r.conn!);
      return {};
    case "load-start":
      loads.set(r.conn!, startLoad(r.host!, r.port!, r.intervalMs ?? 50, timeoutMs));
      return {};
    case "load-stop": {
      const load = loads.get(r.conn!);
      if (load === undefined) throw new Error(`no load ${r.conn}`);
      load.running = false;
      await load.done;
      loads.delete(r.conn!);
      return { counts: load.counts, failures: load.failures };
    }
    default:
      throw new Error(`unknown op ${r.op}`);
  }
}

createInterface({ input: process.stdin })
  .on("line", (line) => {
    let request: Request;
    try {
      request = JSON.parse(line) as Request;
    } catch {
      out({ id: -1, error: `bad request ${line}` });
      return;
    }
    handle(request).then(
      (reply) => out({ id: request.id, ok: true, ...reply }),
      (error: unknown) => out({ id: request.id, ok: false, error: errorKind(error) }),
    );
  })
  .on("close", () => process.exit(0));
out({ id: 0, ok: true, ready: NAME });
