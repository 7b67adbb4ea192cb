/**
 * A thin Kubernetes REST client on node:http(s): paced requests, Retry-After honoured like
 * client-go, paginated lists, and watch streams that notice a silent connection.
 */
import http from "node:http";
import https from "node:https";
import { KubeProxyError } from "../errors.ts";
import type { Credentials, RestConfig } from "./kubeconfig.ts";
import { systemSleepClock, TokenBucket } from "./ratelimit.ts";
import type { SleepClock } from "./ratelimit.ts";

export interface ResourceRef {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

export const SERVICES: ResourceRef = {
  group: "",
  version: "v1",
  plural: "services",
  kind: "Service",
  namespaced: true,
};
export const NODES: ResourceRef = {
  group: "",
  version: "v1",
  plural: "nodes",
  kind: "Node",
  namespaced: false,
};
export const ENDPOINT_SLICES: ResourceRef = {
  group: "discovery.k8s.io",
  version: "v1",
  plural: "endpointslices",
  kind: "EndpointSlice",
  namespaced: true,
};

/** networking.k8s.io/v1 (Kubernetes v1.33 and later); older API servers answer 404. */
export const SERVICE_CIDRS: ResourceRef = {
  group: "networking.k8s.io",
  version: "v1",
  plural: "servicecidrs",
  kind: "ServiceCIDR",
  namespaced: false,
};

/** A failed API call: an HTTP status with the apiserver's Status reason, or 0 for no answer. */
export class ApiError extends KubeProxyError {
  readonly code = "KPT_K8S_API";

  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly retryAfterSeconds?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** 410 Gone / Expired: the resource version is no longer in the apiserver's window. */
  get isExpired(): boolean {
    return this.status === 410 || this.reason === "Expired" || this.reason === "Gone";
  }
}

/** A watch that received nothing (not even a bookmark) for longer than the silence limit. */
export class WatchStalledError extends KubeProxyError {
  readonly code = "KPT_K8S_WATCH_STALLED";

  constructor(
    readonly path: string,
    readonly silentMs: number,
  ) {
    super(`watch ${path} silent for ${silentMs} ms; assuming the connection is dead`);
  }
}

export interface KubeClientOptions {
  /** --kube-api-qps (upstream default 5); non-positive disables pacing. */
  readonly qps?: number;
  /** --kube-api-burst (upstream default 10). */
  readonly burst?: number;
  readonly userAgent?: string;
  readonly clock?: SleepClock;
  /** Whole-request limit for non-watch requests. */
  readonly requestTimeoutMs?: number;
  /** How often a 429/5xx with Retry-After is retried before giving up (client-go: 10). */
  readonly maxRetries?: number;
}

export interface SelectorOptions {
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** Restrict to one namespace; all namespaces when absent. */
  readonly namespace?: string;
}

export interface ListOptions extends SelectorOptions {
  readonly limit?: number;
  readonly continue?: string;
  readonly resourceVersion?: string;
  readonly signal?: AbortSignal;
}

export interface ListPage {
  readonly items: unknown[];
  readonly resourceVersion: string;
  readonly continue: string | undefined;
}

export interface WatchOptions extends SelectorOptions {
  readonly resourceVersion: string;
  readonly allowWatchBookmarks?: boolean;
  readonly timeoutSeconds?: number;
  /** Give up on a connection that stays silent this long. */
  readonly idleTimeoutMs: number;
  readonly signal?: AbortSignal;
}

export type WatchEvent =
  | { readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK"; readonly object: unknown }
  | { readonly type: "ERROR"; readonly error: ApiError };

/** What an informer needs from a client; the seam unit tests fake. */
export interface ListWatchClient {
  listAll(resource: ResourceRef, opts?: ListOptions): Promise<ListPage>;
  watch(resource: ResourceRef, opts: WatchOptions): AsyncGenerator<WatchEvent>;
}

export interface RequestOptions {
  readonly query?: Record<string, string | undefined>;
  readonly body?: unknown;
  readonly contentType?: string;
  readonly signal?: AbortSignal;
}

const DEFAULT_USER_AGENT = `kube-proxy-ts/0.1.0 (${process.platform}/${process.arch})`;

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** Turns a Status body (or anything else) into an ApiError. */
export function apiErrorFrom(status: number, body: unknown, retryAfter?: number): ApiError {
  if (isObject(body) && body["kind"] === "Status") {
    const code = typeof body["code"] === "number" ? body["code"] : status;
    const reason = typeof body["reason"] === "string" ? body["reason"] : "Unknown";
    const message = typeof body["message"] === "string" ? body["message"] : `HTTP ${code}`;
    return new ApiError(code, reason, message, retryAfter);
  }
  return new ApiError(status, "Unknown", `HTTP ${status}: ${JSON.stringify(body).slice(0, 200)}`, retryAfter);
}

function retryAfterSeconds(res: http.IncomingMessage): number | undefined {
  const header = res.headers["retry-after"];
  if (header === undefined) return undefined;
  const seconds = Number(header);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : undefined;
}

function readAll(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
  });
}

export class KubeClient implements ListWatchClient {
  private readonly base: URL;
  private readonly agent: http.Agent;
  private readonly limiter: TokenBucket;
  private readonly clock: SleepClock;

  constructor(
    readonly config: RestConfig,
    private readonly options: KubeClientOptions = {},
  ) {
    this.base = new URL(config.server);
    this.clock = options.clock ?? systemSleepClock;
    this.limiter = new TokenBucket(options.qps ?? 5, options.burst ?? 10, this.clock);
    // Keep-alive both reuses connections and turns on TCP keep-alive probes for dead peers.
    this.agent =
      this.base.protocol === "https:"
        ? new https.Agent({ keepAlive: true, keepAliveMsecs: 15_000 })
        : new http.Agent({ keepAlive: true, keepAliveMsecs: 15_000 });
  }

  close(): void {
    this.agent.destroy();
  }

  /** The collection path: /api/v1/namespaces/ns/services, /apis/discovery.k8s.io/v1/endpointslices … */
  collectionPath(resource: ResourceRef, namespace?: string): string {
    const prefix = this.base.pathname.replace(/\/+$/, "");
    const gv =
      resource.group === "" ? `/api/${resource.version}` : `/apis/${resource.group}/${resource.version}`;
    const ns =
      resource.namespaced && namespace !== undefined ? `/namespaces/${encodeURIComponent(namespace)}` : "";
    return `${prefix}${gv}${ns}/${resource.plural}`;
  }

  private async send(
    method: string,
    path: string,
    opts: RequestOptions,
    creds: Credentials,
    timeoutMs: number | undefined,
  ): Promise<http.IncomingMessage> {
    const url = new URL(path, this.base);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined && v !== "") url.searchParams.set(k, v);
    const body =
      opts.body === undefined
        ? undefined
        : typeof opts.body === "string"
          ? opts.body
          : JSON.stringify(opts.body);
    const headers: http.OutgoingHttpHeaders = {
      Accept: "application/json",
      "User-Agent": this.options.userAgent ?? DEFAULT_USER_AGENT,
    };
    if (creds.token !== undefined) headers["Authorization"] = `Bearer ${creds.token}`;
    if (body !== undefined) {
      headers["Content-Type"] = opts.contentType ?? "application/json";
      headers["Content-Length"] = Buffer.byteLength(body);
    }
    const tls = this.config.tls;
    const requestOptions: https.RequestOptions = {
      method,
      headers,
      agent: this.agent,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(url.protocol === "https:"
        ? {
            ca: tls.ca,
            cert: creds.cert ?? tls.cert,
            key: creds.key ?? tls.key,
            rejectUnauthorized: !tls.insecureSkipTlsVerify,
            ...(tls.serverName ? { servername: tls.serverName } : {}),
          }
        : {}),
    };
    const transport = url.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
      const req = transport.request(url, requestOptions, resolve);
      req.on("error", (cause) =>
        reject(
          cause instanceof KubeProxyError || (cause as Error).name === "AbortError"
            ? cause
            : new ApiError(0, "ConnectionFailed", `${method} ${url.href}: ${cause.message}`, undefined, {
                cause,
              }),
        ),
      );
      if (timeoutMs !== undefined) {
        req.setTimeout(timeoutMs, () =>
          req.destroy(new ApiError(0, "Timeout", `${method} ${url.href}: no answer within ${timeoutMs} ms`)),
        );
      }
      req.end(body);
    });
  }

  /**
   * Paced request with client-go's retry rules: a 429 or 5xx carrying Retry-After is retried
   * after that delay (bounded count); a 401 refreshes rotating credentials once.
   */
  private async open(
    method: string,
    path: string,
    opts: RequestOptions,
    timeoutMs: number | undefined,
  ): Promise<http.IncomingMessage> {
    const maxRetries = this.options.maxRetries ?? 10;
    let refreshed = false;
    for (let attempt = 0; ; attempt++) {
      await this.limiter.wait(opts.signal);
      const creds = await this.config.credentials.get();
      const res = await this.send(method, path, opts, creds, timeoutMs);
      const status = res.statusCode ?? 0;
      if (status < 400) return res;
      const text = await readAll(res);
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // Proxies in front of the apiserver answer errors in HTML or plain text.
      }
      const retryAfter = retryAfterSeconds(res);
      const error = apiErrorFrom(status, parsed, retryAfter);
      if (status === 401 && !refreshed) {
        refreshed = true;
        this.config.credentials.invalidate();
        continue;
      }
      if ((status === 429 || status >= 500) && retryAfter !== undefined && attempt < maxRetries) {
        await this.clock.sleep(retryAfter * 1000, opts.signal);
        continue;
      }
      throw error;
    }
  }

  async request(method: string, path: string, opts: RequestOptions = {}): Promise<unknown> {
    const res = await this.open(method, path, opts, this.options.requestTimeoutMs ?? 60_000);
    const text = await readAll(res);
    if (text === "") return undefined;
    try {
      return JSON.parse(text);
    } catch (cause) {
      throw new ApiError(
        res.statusCode ?? 0,
        "BadResponse",
        `${method} ${path}: answer is not JSON`,
        undefined,
        {
          cause,
        },
      );
    }
  }

  async list(resource: ResourceRef, opts: ListOptions = {}): Promise<ListPage> {
    const body = await this.request("GET", this.collectionPath(resource, opts.namespace), {
      query: {
        labelSelector: opts.labelSelector,
        fieldSelector: opts.fieldSelector,
        limit: opts.limit === undefined ? undefined : String(opts.limit),
        continue: opts.continue,
        resourceVersion: opts.resourceVersion,
      },
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (!isObject(body) || !Array.isArray(body["items"]) || !isObject(body["metadata"])) {
      throw new ApiError(0, "BadResponse", `list ${resource.plural}: answer is not a list`);
    }
    const meta = body["metadata"];
    const cont =
      typeof meta["continue"] === "string" && meta["continue"] !== "" ? meta["continue"] : undefined;
    return {
      items: body["items"],
      resourceVersion: typeof meta["resourceVersion"] === "string" ? meta["resourceVersion"] : "",
      continue: cont,
    };
  }

  /**
   * Lists every page (limit/continue). If a continue token expires midway, lists again in one
   * unpaginated request, as client-go's pager does, so the result is always one consistent view.
   */
  async listAll(resource: ResourceRef, opts: ListOptions = {}): Promise<ListPage> {
    const items: unknown[] = [];
    let cont: string | undefined;
    for (;;) {
      let page: ListPage;
      try {
        page = await this.list(resource, { ...opts, ...(cont !== undefined ? { continue: cont } : {}) });
      } catch (err) {
        if (cont === undefined || !(err instanceof ApiError) || !err.isExpired) throw err;
        const { limit: _limit, ...rest } = opts;
        return this.list(resource, rest);
      }
      items.push(...page.items);
      if (page.continue === undefined)
        return { items, resourceVersion: page.resourceVersion, continue: undefined };
      cont = page.continue;
    }
  }

  /** Streams watch events until the server ends the watch, the signal aborts, or it goes silent. */
  async *watch(resource: ResourceRef, opts: WatchOptions): AsyncGenerator<WatchEvent> {
    const path = this.collectionPath(resource, opts.namespace);
    const res = await this.open(
      "GET",
      path,
      {
        query: {
          watch: "true",
          resourceVersion: opts.resourceVersion,
          allowWatchBookmarks: opts.allowWatchBookmarks === false ? undefined : "true",
          timeoutSeconds: opts.timeoutSeconds === undefined ? undefined : String(opts.timeoutSeconds),
          labelSelector: opts.labelSelector,
          fieldSelector: opts.fieldSelector,
        },
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      undefined,
    );
    let idle: NodeJS.Timeout | undefined;
    const arm = (): void => {
      clearTimeout(idle);
      idle = setTimeout(
        () => res.destroy(new WatchStalledError(path, opts.idleTimeoutMs)),
        opts.idleTimeoutMs,
      );
    };
    arm();
    res.setEncoding("utf8");
    let buffer = "";
    try {
      for await (const chunk of res as AsyncIterable<string>) {
        arm();
        buffer += chunk;
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (line !== "") yield parseWatchLine(path, line);
        }
      }
      if (buffer.trim() !== "") yield parseWatchLine(path, buffer.trim());
    } catch (err) {
      if (err instanceof KubeProxyError || (err as Error).name === "AbortError") throw err;
      throw new ApiError(0, "WatchBroken", `watch ${path}: ${(err as Error).message}`, undefined, {
        cause: err,
      });
    } finally {
      clearTimeout(idle);
      res.destroy();
    }
  }
}

function parseWatchLine(path: string, line: string): WatchEvent {
  let event: unknown;
  try {
    event = JSON.parse(line);
  } catch (cause) {
    throw new ApiError(
      0,
      "BadResponse",
      `watch ${path}: event is not JSON: ${line.slice(0, 200)}`,
      undefined,
      {
        cause,
      },
    );
  }
  if (!isObject(event) || typeof event["type"] !== "string") {
    throw new ApiError(0, "BadResponse", `watch ${path}: event without type`);
  }
  const type = event["type"];
  if (type === "ERROR") return { type, error: apiErrorFrom(500, event["object"]) };
  if (type === "ADDED" || type === "MODIFIED" || type === "DELETED" || type === "BOOKMARK") {
    return { type, object: event["object"] };
  }
  throw new ApiError(0, "BadResponse", `watch ${path}: unknown event type ${JSON.stringify(type)}`);
}
