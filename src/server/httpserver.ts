/**
 * The one place the HTTP servers touch node:http. Handlers are plain functions from a request
 * to a response value, so they are tested without a socket; `listenHttp` is the thin wrapper
 * that serves them.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { KubeProxyError } from "../errors.ts";

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

/** Serves `handler` on host:port; rejects with ListenError if the address cannot be bound. */
export function listenHttp(host: string, port: number, handler: HttpHandler): Promise<HttpListener> {
  const server = http.createServer((req, res) => {
    void respond(handler, req, res);
  });
  return new Promise((resolve, reject) => {
    const onError = (err: unknown): void => reject(new ListenError(joinHostPort(host, port), err));
    server.once("error", onError);
    server.listen({ host, port }, () => {
      server.off("error", onError);
      const info = server.address() as AddressInfo;
      resolve({
        address: { host: info.address, port: info.port },
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
