/**
 * The one place the HTTP servers touch node:http. Handlers are plain functions from a request
 * to a response value, so they are tested without a socket; `listenHttp` is the thin wrapper
 * that serves them.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { KubeProxyError } from "../errors.ts";
import type { Clock } from "../proxy/clock.ts";

export interface HttpRequest {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

export type HttpHandler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;

/** Go net/http's `NotFound` reply, which upstream's muxes send for unknown paths. */
export function notFound(): HttpResponse {
  return {
    status: 404,
    headers: { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" },
    body: "404 page not found\n",
  };
}

/** A bind or serve failure; `address` is what was asked for. */
export class ListenError extends KubeProxyError {
  readonly code = "KPT_LISTEN";

  constructor(
    readonly address: string,
    cause: unknown,
  ) {
    super(`failed to listen on ${address}: ${cause instanceof Error ? cause.message : String(cause)}`, {
      cause,
    });
  }
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** `host:port` or `[v6]:port`, as the bind-address flags take it. */
export function parseHostPort(address: string): HostPort {
  const m = /^(?:\[([^\]]*)\]|([^:]*)):(\d+)$/.exec(address);
  const port = Number(m?.[3]);
  if (m === null || !Number.isInteger(port) || port > 65535) {
    throw new ListenError(address, new Error("expected host:port"));
  }
  return { host: m[1] ?? m[2] ?? "", port };
}

export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

export interface HttpListener {
  /** The bound address (the real port when 0 was asked for). */
  readonly address: HostPort;
  close(): Promise<void>;
}

async function respond(
  handler: HttpHandler,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const path = new URL(req.url ?? "/", "http://localhost").pathname;
  let out: HttpResponse;
  try {
    out = await handler({ method: req.method ?? "GET", path });
  } catch (err) {
    out = {
      status: 500,
      headers: { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" },
      body: `${err instanceof Error ? err.message : String(err)}\n`,
    };
  }
  const body = Buffer.from(out.body, "utf8");
  res.writeHead(out.status, { ...out.headers, "Content-Length": String(body.length) });
  res.end(req.method === "HEAD" ? undefined : body);
}

/**
 * Go listens on a dual-stack socket for any wildcard address ("0.0.0.0", "::" or ""), so
 * upstream's 0.0.0.0:10256 also answers over IPv6. Node does that when no host is given
 * (`::` with IPv4-mapped addresses, or 0.0.0.0 where IPv6 is off).
 */
export function listenHost(host: string): string | undefined {
  return host === "" || host === "0.0.0.0" || host === "::" ? undefined : host;
}

/** Serves `handler` on host:port; rejects with ListenError if the address cannot be bound. */
export function listenHttp(host: string, port: number, handler: HttpHandler): Promise<HttpListener> {
  const server = http.createServer((req, res) => {
    void respond(handler, req, res);
  });
  return listenServer(server, host, port, listenHost(host));
}

/**
 * Binds an already built server on `listenOn` (undefined = every address); `host` names the
 * address in a ListenError. `beforeClose` runs first on close, e.g. to end long-lived streams.
 */
export function listenServer(
  server: http.Server,
  host: string,
  port: number,
  listenOn: string | undefined,
  beforeClose: () => void = () => undefined,
): Promise<HttpListener> {
  return new Promise((resolve, reject) => {
    const onError = (err: unknown): void => reject(new ListenError(joinHostPort(host, port), err));
    server.once("error", onError);
    server.listen({ host: listenOn, port }, () => {
      server.off("error", onError);
      const info = server.address() as AddressInfo;
      resolve({
        address: { host: info.address, port: info.port },
        close: () =>
          new Promise<void>((done) => {
            beforeClose();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

export interface KeepServingOptions {
  readonly clock: Clock;
  /** Aborting closes the listener and ends `keepServing`. */
  readonly signal: AbortSignal;
  /** Upstream retries a failed server every 5 s (`wait.Until`). */
  readonly retryInterval?: number;
  /** `--bind-address-hard-fail`: the first failure is fatal instead of retried. */
  readonly hardFail?: boolean;
  readonly onError?: (err: unknown) => void;
  readonly onListening?: (listener: HttpListener) => void;
}

/**
 * Keeps a server up the way upstream runs its healthz and metrics servers: a failed listen is
 * reported and retried after `retryInterval`, unless `hardFail` makes it fatal (rejects).
 */
export async function keepServing(
  listen: () => Promise<HttpListener>,
  options: KeepServingOptions,
): Promise<void> {
  const { clock, signal } = options;
  const untilAbortOr = (delayMs: number | null): Promise<void> =>
    new Promise((resolve) => {
      const timer = delayMs === null ? null : clock.setTimer(delayMs, finish);
      function finish(): void {
        timer?.stop();
        signal.removeEventListener("abort", finish);
        resolve();
      }
      signal.addEventListener("abort", finish);
      if (signal.aborted) finish();
    });
  while (!signal.aborted) {
    let listener: HttpListener;
    try {
      listener = await listen();
    } catch (err) {
      options.onError?.(err);
      if (options.hardFail === true) throw err;
      await untilAbortOr(options.retryInterval ?? 5000);
      continue;
    }
    options.onListening?.(listener);
    await untilAbortOr(null);
    await listener.close();
  }
}
