/**
 * A small Kubernetes-compatible API server for tests: discovery, core/v1 services and nodes,
 * discovery.k8s.io/v1 endpointslices, networking.k8s.io/v1 servicecidrs (cluster-scoped; left out
 * with `serviceCIDRs: false`, as on an API server older than v1.33); list (selectors, limit/continue), watch (bookmarks,
 * timeoutSeconds, 410 for compacted resource versions), get, create, update, patch, delete.
 * Speaks the wire protocol closely enough for kubectl. Faults are injected through methods.
 *
 * Known differences from the real apiserver: JSON only (no protobuf); lists always serve the
 * latest state (resourceVersion/resourceVersionMatch on lists are ignored) and continue pages
 * read the current state after the last key, not a snapshot; server-side apply is a strategic
 * merge without managedFields or conflict detection; field validation checks field names only;
 * no namespaces resource (any namespace name is accepted); no admission or object validation
 * beyond the name; sendInitialEvents (watch-list) is not supported.
 */
import { randomUUID } from "node:crypto";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { parse as parseYaml } from "yaml";
import { jsonPatch, mergePatch, PatchError, strategicMerge } from "./apiserver-patch.ts";
import type { Json, JsonObject } from "./apiserver-patch.ts";
import { parseFieldSelector, parseLabelSelector, SelectorError } from "./apiserver-selectors.ts";
import type { Matcher } from "./apiserver-selectors.ts";
import { unknownFields } from "./apiserver-schema.ts";
import { toTable, wantsTable } from "./apiserver-table.ts";

interface ResourceDef {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly singular: string;
  readonly kind: string;
  readonly namespaced: boolean;
  readonly shortNames: readonly string[];
}

const RESOURCES: readonly ResourceDef[] = [
  {
    group: "",
    version: "v1",
    plural: "services",
    singular: "service",
    kind: "Service",
    namespaced: true,
    shortNames: ["svc"],
  },
  {
    group: "",
    version: "v1",
    plural: "nodes",
    singular: "node",
    kind: "Node",
    namespaced: false,
    shortNames: ["no"],
  },
  {
    group: "discovery.k8s.io",
    version: "v1",
    plural: "endpointslices",
    singular: "endpointslice",
    kind: "EndpointSlice",
    namespaced: true,
    shortNames: [],
  },
  {
    group: "networking.k8s.io",
    version: "v1",
    plural: "servicecidrs",
    singular: "servicecidr",
    kind: "ServiceCIDR",
    namespaced: false,
    shortNames: [],
  },
  {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    shortNames: ["ev"],
  },
];

const VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"];

function apiVersionOf(def: ResourceDef): string {
  return def.group === "" ? def.version : `${def.group}/${def.version}`;
}

type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

interface LoggedEvent {
  readonly rv: number;
  readonly plural: string;
  readonly type: WatchEventType;
  readonly object: JsonObject;
  readonly previous: JsonObject | null;
}

interface Watcher {
  readonly def: ResourceDef;
  readonly namespace: string | undefined;
  readonly matches: Matcher;
  readonly res: http.ServerResponse;
  readonly bookmarks: boolean;
  /** kubectl get -w: rows of a Table instead of objects; columns only in the first event. */
  readonly table: { readonly includeObject: string | null; columnsSent: boolean } | null;
  stalled: boolean;
  lastRv: number;
}

interface InjectedFailure {
  remaining: number;
  readonly status: InjectableStatus;
  readonly retryAfterSeconds: number | undefined;
  readonly appliesTo: (request: RecordedRequest) => boolean;
}

/** 410 answers with reason Expired, as for a compacted continue token. */
export type InjectableStatus = 410 | 429 | 500 | 503 | 504;

const FAILURE_REASONS: Readonly<Record<InjectableStatus, string>> = {
  410: "Expired",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly user: string | null;
  readonly accept: string;
  readonly contentType: string;
  readonly userAgent: string;
}

export interface TestApiServerOptions {
  /** Serve HTTPS with this certificate; client certificates signed by `clientCa` authenticate. */
  readonly tls?: { readonly cert: string; readonly key: string; readonly clientCa?: string };
  /** Bearer token → user name. */
  readonly tokens?: Readonly<Record<string, string>>;
  /** Answer unauthenticated requests instead of 401 (plain --master setups). */
  readonly allowAnonymous?: boolean;
  /** How many watch events are kept for resuming watches; older versions answer 410 Gone. */
  readonly retainedEvents?: number;
  /** Bookmark period for watches that allow bookmarks (the real apiserver: about a minute). */
  readonly bookmarkIntervalMs?: number;
  /** false: no ServiceCIDR resource (404 and absent from discovery), as before Kubernetes v1.33. */
  readonly serviceCIDRs?: boolean;
}

export class TestApiServer {
  readonly requests: RecordedRequest[] = [];
  private readonly server: http.Server;
  private readonly store = new Map<string, Map<string, JsonObject>>();
  private readonly log: LoggedEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly failures: InjectedFailure[] = [];
  private rv = 1;
  /** Watches and continue tokens from resource versions below this answer 410 Gone. */
  private compactedRv = 0;
  private nextClusterIp = 10;
  private nextNodePort = 30000;
  private bookmarkTimer: NodeJS.Timeout | undefined;
  private readonly tokens: Map<string, string>;
  private readonly resources: readonly ResourceDef[];
  /** The named API groups served (everything but the core group), in RESOURCES order. */
  private readonly groups: readonly string[];

  private constructor(private readonly options: TestApiServerOptions) {
    this.resources =
      options.serviceCIDRs === false ? RESOURCES.filter((d) => d.kind !== "ServiceCIDR") : RESOURCES;
    this.groups = [...new Set(this.resources.filter((d) => d.group !== "").map((d) => d.group))];
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) this.sendStatus(res, 500, "InternalError", String((err as Error).stack ?? err));
        else res.destroy();
      });
    };
    this.server = options.tls
      ? https.createServer(
          {
            cert: options.tls.cert,
            key: options.tls.key,
            ca: options.tls.clientCa,
            requestCert: options.tls.clientCa !== undefined,
            rejectUnauthorized: false,
          },
          handler,
        )
      : http.createServer(handler);
    for (const def of this.resources) this.store.set(def.plural, new Map());
    this.tokens = new Map(Object.entries(options.tokens ?? {}));
  }

  static async start(options: TestApiServerOptions = {}): Promise<TestApiServer> {
    const s = new TestApiServer(options);
    await new Promise<void>((resolve, reject) => {
      s.server.once("error", reject);
      s.server.listen(0, "127.0.0.1", () => resolve());
    });
    s.bookmarkTimer = setInterval(() => s.sendBookmarks(), options.bookmarkIntervalMs ?? 60_000);
    s.bookmarkTimer.unref();
    return s;
  }

  get url(): string {
    const { port } = this.server.address() as AddressInfo;
    return `${this.options.tls ? "https" : "http"}://127.0.0.1:${port}`;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  get activeWatches(): number {
    return this.watchers.size;
  }

  async stop(): Promise<void> {
    clearInterval(this.bookmarkTimer);
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- fault injection ----------------------------------------------------------------------

  /** Cuts every open watch connection mid-stream (no final chunk, like a dead proxy). */
  dropWatches(): number {
    const n = this.watchers.size;
    for (const w of this.watchers) w.res.socket?.destroy();
    this.watchers.clear();
    return n;
  }

  /** Open watches stop receiving anything (not even bookmarks) while the connection stays up. */
  stallWatches(): number {
    for (const w of this.watchers) w.stalled = true;
    return this.watchers.size;
  }

  /** The next `count` matching requests fail with `status` (and Retry-After when given). */
  failRequests(
    count: number,
    status: InjectableStatus,
    opts: {
      retryAfterSeconds?: number;
      method?: string;
      pathIncludes?: string;
      when?: (r: RecordedRequest) => boolean;
    } = {},
  ): void {
    this.failures.push({
      remaining: count,
      status,
      retryAfterSeconds: opts.retryAfterSeconds,
      appliesTo: (r) =>
        (opts.method === undefined || opts.method === r.method) &&
        (opts.pathIncludes === undefined || r.path.includes(opts.pathIncludes)) &&
        (opts.when === undefined || opts.when(r)),
    });
  }

  /** Compacts history: every resource version before now is too old (watch → 410, continue → 410). */
  expireResourceVersions(): void {
    this.compactedRv = this.rv;
    this.log.length = 0;
  }

  /** Accepts a new bearer token (rotation). */
  addToken(token: string, user: string): void {
    this.tokens.set(token, user);
  }

  /** Stops accepting a bearer token: requests with it get 401. */
  revokeToken(token: string): void {
    this.tokens.delete(token);
  }

  /** Sends a BOOKMARK with the current resource version on every watch that allows them. */
  sendBookmarks(): void {
    for (const w of this.watchers) {
      if (w.bookmarks) this.writeEvent(w, "BOOKMARK", this.bookmarkObject(w.def));
    }
  }

  // ---- direct store access for tests --------------------------------------------------------

  /** Creates or replaces an object as if a client had, with the same defaults and watch events. */
  put(object: unknown): JsonObject {
    const obj = structuredClone(object) as JsonObject;
    const def = this.defForObject(obj);
    const meta = (obj["metadata"] ?? {}) as JsonObject;
    const ns = def.namespaced ? String(meta["namespace"] ?? "default") : undefined;
    const key = this.key(ns, String(meta["name"]));
    const existing = this.store.get(def.plural)?.get(key);
    delete meta["resourceVersion"];
    return existing ? this.commitUpdate(def, existing, obj) : this.commitCreate(def, ns, obj);
  }

  remove(kind: string, namespace: string | undefined, name: string): boolean {
    const def = this.resources.find((d) => d.kind === kind);
    if (!def) throw new Error(`unknown kind ${kind}`);
    const existing = this.store.get(def.plural)?.get(this.key(namespace, name));
    if (!existing) return false;
    this.commitDelete(def, existing);
    return true;
  }

  get(kind: string, namespace: string | undefined, name: string): JsonObject | undefined {
    const def = this.resources.find((d) => d.kind === kind);
    if (!def) throw new Error(`unknown kind ${kind}`);
    const obj = this.store.get(def.plural)?.get(this.key(namespace, name));
    return obj && structuredClone(obj);
  }

  // ---- HTTP ---------------------------------------------------------------------------------

  private authenticate(req: http.IncomingMessage): string | null {
    const auth = req.headers.authorization ?? "";
    if (auth.startsWith("Bearer ")) {
      return this.tokens.get(auth.slice("Bearer ".length).trim()) ?? null;
    }
    const socket = req.socket as TLSSocket;
    if (this.options.tls?.clientCa !== undefined && socket.authorized) {
      const cn = socket.getPeerCertificate().subject?.CN;
      return typeof cn === "string" ? cn : "unknown";
    }
    return this.options.allowAnonymous ? "system:anonymous" : null;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://local");
    const method = req.method ?? "GET";
    const user = this.authenticate(req);
    const recorded: RecordedRequest = {
      method,
      path: url.pathname,
      query: url.searchParams,
      user,
      accept: req.headers.accept ?? "",
      contentType: req.headers["content-type"] ?? "",
      userAgent: req.headers["user-agent"] ?? "",
    };
    this.requests.push(recorded);
    const body = await readBody(req);
    if (user === null) {
      // A bad bearer token is rejected even when anonymous access would be allowed.
      return this.sendStatus(res, 401, "Unauthorized", "Unauthorized");
    }
    const failure = this.failures.find((f) => f.remaining > 0 && f.appliesTo(recorded));
    if (failure) {
      failure.remaining--;
      if (failure.retryAfterSeconds !== undefined)
        res.setHeader("Retry-After", String(failure.retryAfterSeconds));
      return this.sendStatus(res, failure.status, FAILURE_REASONS[failure.status], "injected failure");
    }
    const parts = url.pathname.split("/").filter((p) => p !== "");
    const discovery = this.discovery(parts);
    if (discovery !== undefined) {
      if (method !== "GET") return this.sendStatus(res, 405, "MethodNotAllowed", "method not allowed");
      return sendJson(res, 200, discovery);
    }
    let rest: string[];
    let group: string;
    if (parts[0] === "api" && parts[1] === "v1") {
      group = "";
      rest = parts.slice(2);
    } else if (parts[0] === "apis" && parts.length >= 3) {
      group = parts[1] ?? "";
      if (parts[2] !== "v1")
        return this.sendStatus(res, 404, "NotFound", "the server could not find the requested resource");
      rest = parts.slice(3);
    } else {
      return this.sendStatus(res, 404, "NotFound", "the server could not find the requested resource");
    }
    let watchPath = false;
    if (rest[0] === "watch") {
      watchPath = true;
      rest = rest.slice(1);
    }
    let namespace: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [plural, name, ...extra] = rest;
    const def = this.resources.find((d) => d.group === group && d.plural === plural);
    if (!def || extra.length > 0 || (namespace !== undefined && !def.namespaced)) {
      return this.sendStatus(res, 404, "NotFound", "the server could not find the requested resource");
    }
    if (def.namespaced && name !== undefined && namespace === undefined) {
      return this.sendStatus(res, 404, "NotFound", "the server could not find the requested resource");
    }
    const q = url.searchParams;
    try {
      if (name === undefined) {
        if (method === "GET" && (watchPath || q.get("watch") === "true" || q.get("watch") === "1")) {
          return this.watch(def, namespace, q, res, recorded.accept);
        }
        if (method === "GET") return sendJson(res, 200, this.list(def, namespace, q, recorded.accept));
        if (method === "POST") return this.create(def, namespace, body, req, res);
      } else {
        if (method === "GET" && watchPath) {
          q.set("fieldSelector", [q.get("fieldSelector"), `metadata.name=${name}`].filter(Boolean).join(","));
          return this.watch(def, namespace, q, res, recorded.accept);
        }
        if (method === "GET") {
          const found = this.mustGet(def, namespace, name);
          if (wantsTable(recorded.accept)) {
            const meta = { resourceVersion: String((found["metadata"] as JsonObject)["resourceVersion"]) };
            return sendJson(
              res,
              200,
              toTable(def.plural, [withType(def, found)], meta, q.get("includeObject")),
            );
          }
          return sendJson(res, 200, withType(def, found));
        }
        if (method === "PUT") return this.update(def, namespace, name, body, req, res);
        if (method === "PATCH") return this.patch(def, namespace, name, body, req, res);
        if (method === "DELETE") {
          const existing = this.mustGet(def, namespace, name);
          return sendJson(res, 200, withType(def, this.commitDelete(def, existing)));
        }
      }
      return this.sendStatus(res, 405, "MethodNotAllowed", `${method} is not supported here`);
    } catch (err) {
      if (err instanceof ApiStatus)
        return this.sendStatus(res, err.code, err.reason, err.message, err.details);
      if (err instanceof SelectorError || err instanceof PatchError) {
        return this.sendStatus(res, 400, "BadRequest", err.message);
      }
      throw err;
    }
  }

  private discovery(parts: string[]): unknown {
    const path = parts.join("/");
    const resourceList = (groupVersion: string, defs: readonly ResourceDef[]): unknown => ({
      kind: "APIResourceList",
      apiVersion: "v1",
      groupVersion,
      resources: defs.map((d) => ({
        name: d.plural,
        singularName: d.singular,
        namespaced: d.namespaced,
        kind: d.kind,
        verbs: VERBS,
        ...(d.shortNames.length > 0 ? { shortNames: d.shortNames } : {}),
        ...(d.group === "" && d.plural === "services" ? { categories: ["all"] } : {}),
      })),
    });
    const groupInfo = (name: string) => ({
      name,
      versions: [{ groupVersion: `${name}/v1`, version: "v1" }],
      preferredVersion: { groupVersion: `${name}/v1`, version: "v1" },
    });
    switch (path) {
      case "version":
        return {
          major: "1",
          minor: "32",
          gitVersion: "v1.32.0-kpt-test",
          gitCommit: "0000000000000000000000000000000000000000",
          gitTreeState: "clean",
          buildDate: "2026-01-01T00:00:00Z",
          goVersion: "go1.23",
          compiler: "gc",
          platform: "linux/amd64",
        };
      case "api":
        return {
          kind: "APIVersions",
          versions: ["v1"],
          serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: new URL(this.url).host }],
        };
      case "api/v1":
        return resourceList(
          "v1",
          this.resources.filter((d) => d.group === ""),
        );
      case "apis":
        return { kind: "APIGroupList", apiVersion: "v1", groups: this.groups.map(groupInfo) };
      case "openapi/v3":
        return {
          paths: Object.fromEntries([
            ["api/v1", { serverRelativeURL: "/openapi/v3/api/v1?hash=kpt" }],
            ...this.groups.map((g) => [
              `apis/${g}/v1`,
              { serverRelativeURL: `/openapi/v3/apis/${g}/v1?hash=kpt` },
            ]),
          ]),
        };
      case "openapi/v3/api/v1":
        return openApiV3(this.resources.filter((d) => d.group === ""));
      default: {
        const group = this.groups.find(
          (g) => path === `apis/${g}` || path === `apis/${g}/v1` || path === `openapi/v3/apis/${g}/v1`,
        );
        if (group === undefined) return undefined;
        const defs = this.resources.filter((d) => d.group === group);
        if (path === `apis/${group}`) return { kind: "APIGroup", apiVersion: "v1", ...groupInfo(group) };
        if (path === `apis/${group}/v1`) return resourceList(`${group}/v1`, defs);
        return openApiV3(defs);
      }
    }
  }

  private sendStatus(
    res: http.ServerResponse,
    code: number,
    reason: string,
    message: string,
    details?: Record<string, unknown>,
  ): void {
    sendJson(res, code, {
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message,
      reason,
      ...(details ? { details } : {}),
      code,
    });
  }

  // ---- store --------------------------------------------------------------------------------

  private key(namespace: string | undefined, name: string): string {
    return namespace === undefined ? name : `${namespace}/${name}`;
  }

  private defForObject(obj: JsonObject): ResourceDef {
    const def = this.resources.find((d) => d.kind === obj["kind"] && apiVersionOf(d) === obj["apiVersion"]);
    if (!def) throw new Error(`unsupported object ${String(obj["apiVersion"])}/${String(obj["kind"])}`);
    return def;
  }

  private mustGet(def: ResourceDef, namespace: string | undefined, name: string): JsonObject {
    const obj = this.store.get(def.plural)?.get(this.key(namespace, name));
    if (!obj) throw notFound(def, name);
    return obj;
  }

  private bump(): number {
    this.rv += 1;
    return this.rv;
  }

  private record(
    def: ResourceDef,
    type: WatchEventType,
    object: JsonObject,
    previous: JsonObject | null,
  ): void {
    const rv = this.rv;
    const event: LoggedEvent = { rv, plural: def.plural, type, object: structuredClone(object), previous };
    this.log.push(event);
    const limit = this.options.retainedEvents ?? 1000;
    while (this.log.length > limit) {
      const dropped = this.log.shift();
      if (dropped) this.compactedRv = dropped.rv;
    }
    for (const w of this.watchers) this.deliver(w, event);
  }

  private commitCreate(def: ResourceDef, namespace: string | undefined, obj: JsonObject): JsonObject {
    const meta = ensureObject(obj, "metadata");
    let name = meta["name"];
    if ((name === undefined || name === "") && typeof meta["generateName"] === "string") {
      name = `${meta["generateName"]}${randomUUID().slice(0, 5)}`;
      meta["name"] = name;
    }
    if (typeof name !== "string" || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) {
      throw invalid(def, String(name), "metadata.name", "a lowercase RFC 1123 subdomain is required");
    }
    const key = this.key(namespace, name);
    const bucket = this.store.get(def.plural) ?? new Map<string, JsonObject>();
    if (bucket.has(key)) {
      throw new ApiStatus(409, "AlreadyExists", `${def.plural} "${name}" already exists`, {
        name,
        kind: def.plural,
      });
    }
    if (namespace !== undefined) meta["namespace"] = namespace;
    else delete meta["namespace"];
    meta["uid"] = randomUUID();
    meta["creationTimestamp"] = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    meta["generation"] = 1;
    delete obj["kind"];
    delete obj["apiVersion"];
    this.applyDefaults(def, obj, null);
    meta["resourceVersion"] = String(this.bump());
    bucket.set(key, obj);
    this.record(def, "ADDED", obj, null);
    return structuredClone(obj);
  }

  private commitUpdate(def: ResourceDef, existing: JsonObject, incoming: JsonObject): JsonObject {
    const oldMeta = existing["metadata"] as JsonObject;
    const meta = ensureObject(incoming, "metadata");
    const name = String(oldMeta["name"]);
    const sentRv = meta["resourceVersion"];
    if (sentRv !== undefined && sentRv !== "" && sentRv !== oldMeta["resourceVersion"]) {
      throw new ApiStatus(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${def.plural}${def.group === "" ? "" : `.${def.group}`} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, kind: def.plural, ...(def.group === "" ? {} : { group: def.group }) },
      );
    }
    for (const field of ["name", "namespace", "uid", "creationTimestamp"]) {
      if (oldMeta[field] === undefined) delete meta[field];
      else meta[field] = oldMeta[field] ?? null;
    }
    delete incoming["kind"];
    delete incoming["apiVersion"];
    this.applyDefaults(def, incoming, existing);
    const specChanged = JSON.stringify(incoming["spec"]) !== JSON.stringify(existing["spec"]);
    meta["generation"] = Number(oldMeta["generation"] ?? 1) + (specChanged ? 1 : 0);
    meta["resourceVersion"] = oldMeta["resourceVersion"] ?? null;
    if (JSON.stringify(incoming) === JSON.stringify(existing)) return structuredClone(existing);
    meta["resourceVersion"] = String(this.bump());
    this.store.get(def.plural)?.set(this.key(oldMeta["namespace"] as string | undefined, name), incoming);
    this.record(def, "MODIFIED", incoming, existing);
    return structuredClone(incoming);
  }

  private commitDelete(def: ResourceDef, existing: JsonObject): JsonObject {
    const meta = existing["metadata"] as JsonObject;
    this.store
      .get(def.plural)
      ?.delete(this.key(meta["namespace"] as string | undefined, String(meta["name"])));
    const gone = structuredClone(existing);
    (gone["metadata"] as JsonObject)["resourceVersion"] = String(this.bump());
    this.record(def, "DELETED", gone, existing);
    return gone;
  }

  /** The defaults and allocations the real apiserver adds, so kubectl output looks familiar. */
  private applyDefaults(def: ResourceDef, obj: JsonObject, previous: JsonObject | null): void {
    if (def.plural !== "services") return;
    const spec = ensureObject(obj, "spec");
    const prevSpec = (previous?.["spec"] ?? {}) as JsonObject;
    spec["type"] ??= "ClusterIP";
    spec["sessionAffinity"] ??= "None";
    if (spec["type"] !== "ExternalName") {
      spec["clusterIP"] ??=
        prevSpec["clusterIP"] ??
        `10.96.${Math.floor(this.nextClusterIp / 256)}.${this.nextClusterIp++ % 256}`;
      spec["clusterIPs"] ??= [spec["clusterIP"]];
      spec["ipFamilies"] ??= ["IPv4"];
      spec["ipFamilyPolicy"] ??= "SingleStack";
      spec["internalTrafficPolicy"] ??= "Cluster";
    }
    const ports = Array.isArray(spec["ports"]) ? spec["ports"] : [];
    const prevPorts = Array.isArray(prevSpec["ports"]) ? prevSpec["ports"] : [];
    for (const p of ports) {
      if (p === null || typeof p !== "object" || Array.isArray(p)) continue;
      p["protocol"] ??= "TCP";
      p["targetPort"] ??= p["port"] ?? null;
      if (spec["type"] === "NodePort" || spec["type"] === "LoadBalancer") {
        const prev = prevPorts.find(
          (q) => q !== null && typeof q === "object" && !Array.isArray(q) && q["port"] === p["port"],
        );
        const prevNodePort =
          prev !== null && typeof prev === "object" && !Array.isArray(prev) ? prev["nodePort"] : undefined;
        p["nodePort"] ??= prevNodePort ?? this.nextNodePort++;
      }
    }
    if (spec["type"] === "NodePort" || spec["type"] === "LoadBalancer")
      spec["externalTrafficPolicy"] ??= "Cluster";
    obj["status"] ??= { loadBalancer: {} };
  }

  // ---- verbs --------------------------------------------------------------------------------

  private matcher(def: ResourceDef, namespace: string | undefined, q: URLSearchParams): Matcher {
    const label = q.get("labelSelector");
    const field = q.get("fieldSelector");
    const byLabel = label ? parseLabelSelector(label) : () => true;
    const byField = field ? parseFieldSelector(def.plural, field) : () => true;
    return (obj) => {
      const ns = (obj["metadata"] as JsonObject | undefined)?.["namespace"];
      return (namespace === undefined || ns === namespace) && byLabel(obj) && byField(obj);
    };
  }

  private list(def: ResourceDef, namespace: string | undefined, q: URLSearchParams, accept: string): unknown {
    const matches = this.matcher(def, namespace, q);
    let listRv = this.rv;
    let after = "";
    const cont = q.get("continue");
    if (cont) {
      let token: { rv?: unknown; start?: unknown };
      try {
        token = JSON.parse(Buffer.from(cont, "base64").toString("utf8")) as typeof token;
      } catch {
        throw new ApiStatus(400, "BadRequest", "continue key is not valid");
      }
      if (typeof token.rv !== "number" || typeof token.start !== "string") {
        throw new ApiStatus(400, "BadRequest", "continue key is not valid");
      }
      if (token.rv < this.compactedRv) {
        throw new ApiStatus(
          410,
          "Expired",
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
      }
      listRv = token.rv;
      after = token.start;
    }
    const all = [...(this.store.get(def.plural) ?? new Map<string, JsonObject>()).entries()]
      .filter(([key, obj]) => key > after && matches(obj))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const limit = Number(q.get("limit") ?? "0");
    const page = limit > 0 ? all.slice(0, limit) : all;
    const more = limit > 0 && all.length > limit;
    const lastKey = page.at(-1)?.[0] ?? "";
    const listMeta: JsonObject = {
      resourceVersion: String(listRv),
      ...(more
        ? {
            continue: Buffer.from(JSON.stringify({ rv: listRv, start: lastKey })).toString("base64"),
            remainingItemCount: all.length - page.length,
          }
        : {}),
    };
    if (wantsTable(accept)) {
      return toTable(
        def.plural,
        page.map(([, obj]) => withType(def, obj)),
        listMeta,
        q.get("includeObject"),
      );
    }
    return {
      kind: `${def.kind}List`,
      apiVersion: apiVersionOf(def),
      metadata: listMeta,
      items: page.map(([, obj]) => structuredClone(obj)),
    };
  }

  private watch(
    def: ResourceDef,
    namespace: string | undefined,
    q: URLSearchParams,
    res: http.ServerResponse,
    accept: string,
  ): void {
    const matches = this.matcher(def, namespace, q);
    const rvParam = q.get("resourceVersion") ?? "";
    const timeoutSeconds = Number(q.get("timeoutSeconds") ?? goDurationSeconds(q.get("timeout")) ?? "1800");
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" });
    res.flushHeaders();
    const watcher: Watcher = {
      def,
      namespace,
      matches,
      res,
      bookmarks: q.get("allowWatchBookmarks") === "true",
      table: wantsTable(accept) ? { includeObject: q.get("includeObject"), columnsSent: false } : null,
      stalled: false,
      lastRv: 0,
    };
    if (rvParam === "" || rvParam === "0") {
      const bucket = [...(this.store.get(def.plural) ?? new Map<string, JsonObject>()).entries()].sort(
        ([a], [b]) => (a < b ? -1 : 1),
      );
      for (const [, obj] of bucket) if (matches(obj)) this.writeEvent(watcher, "ADDED", withType(def, obj));
      watcher.lastRv = this.rv;
    } else {
      const from = Number(rvParam);
      if (!Number.isInteger(from) || from < 0) {
        res.end(
          eventLine(
            "ERROR",
            statusObject(400, "BadRequest", `invalid resource version ${JSON.stringify(rvParam)}`),
          ),
        );
        return;
      }
      if (from < this.compactedRv) {
        res.end(
          eventLine(
            "ERROR",
            statusObject(410, "Expired", `too old resource version: ${from} (${this.compactedRv})`),
          ),
        );
        return;
      }
      watcher.lastRv = from;
      for (const event of this.log)
        if (event.plural === def.plural && event.rv > from) this.deliver(watcher, event);
    }
    this.watchers.add(watcher);
    const timer = setTimeout(() => {
      this.watchers.delete(watcher);
      res.end();
    }, timeoutSeconds * 1000);
    res.on("close", () => {
      clearTimeout(timer);
      this.watchers.delete(watcher);
    });
  }

  private deliver(w: Watcher, event: LoggedEvent): void {
    if (event.plural !== w.def.plural || event.rv <= w.lastRv) return;
    w.lastRv = event.rv;
    const now = w.matches(event.object);
    const before = event.previous !== null && w.matches(event.previous);
    // Like the watch cache: an object moving into or out of the selector is seen as added or deleted.
    let type: WatchEventType | null = null;
    if (event.type === "ADDED") type = now ? "ADDED" : null;
    else if (event.type === "DELETED") type = before ? "DELETED" : null;
    else if (now && before) type = "MODIFIED";
    else if (now) type = "ADDED";
    else if (before) type = "DELETED";
    if (type !== null) this.writeEvent(w, type, withType(w.def, event.object));
  }

  private bookmarkObject(def: ResourceDef): JsonObject {
    return { kind: def.kind, apiVersion: apiVersionOf(def), metadata: { resourceVersion: String(this.rv) } };
  }

  private writeEvent(w: Watcher, type: string, object: JsonObject): void {
    if (w.stalled || w.res.writableEnded || w.res.destroyed) return;
    if (w.table !== null && type !== "BOOKMARK") {
      const meta = { resourceVersion: String((object["metadata"] as JsonObject)["resourceVersion"]) };
      const table = toTable(w.def.plural, [object], meta, w.table.includeObject, !w.table.columnsSent);
      w.table.columnsSent = true;
      w.res.write(eventLine(type, table));
      return;
    }
    w.res.write(eventLine(type, object));
  }

  private parseBody(def: ResourceDef, body: string, contentType: string): JsonObject {
    let parsed: unknown;
    try {
      parsed = contentType.includes("yaml") ? parseYaml(body) : JSON.parse(body);
    } catch (err) {
      throw new ApiStatus(400, "BadRequest", `the body of the request could not be decoded: ${String(err)}`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ApiStatus(400, "BadRequest", "the body of the request must be an object");
    }
    const obj = parsed as JsonObject;
    if (obj["kind"] !== undefined && obj["kind"] !== def.kind) {
      throw new ApiStatus(400, "BadRequest", `the kind ${String(obj["kind"])} does not match ${def.kind}`);
    }
    return obj;
  }

  private checkNamespace(def: ResourceDef, namespace: string | undefined, obj: JsonObject): void {
    const meta = ensureObject(obj, "metadata");
    if (def.namespaced && meta["namespace"] !== undefined && meta["namespace"] !== namespace) {
      throw new ApiStatus(
        400,
        "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
      );
    }
  }

  /**
   * Server-side field validation: Strict rejects unknown fields, Warn (the default) answers
   * with Warning headers that kubectl prints, Ignore says nothing.
   */
  private validateFields(
    def: ResourceDef,
    obj: JsonObject,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): void {
    const mode = new URL(req.url ?? "/", "http://local").searchParams.get("fieldValidation") ?? "Warn";
    const unknown = unknownFields(def.kind, obj);
    if (unknown.length === 0 || mode === "Ignore") return;
    if (mode === "Strict") {
      const list = unknown.map((f) => `unknown field "${f}"`).join(", ");
      throw new ApiStatus(
        400,
        "BadRequest",
        `${def.kind} in version "${def.version}" cannot be handled as a ${def.kind}: strict decoding error: ${list}`,
      );
    }
    res.setHeader(
      "Warning",
      unknown.map((f) => `299 - ${JSON.stringify(`unknown field "${f}"`)}`),
    );
  }

  private create(
    def: ResourceDef,
    namespace: string | undefined,
    body: string,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): void {
    if (def.namespaced && namespace === undefined) {
      throw new ApiStatus(404, "NotFound", "the server could not find the requested resource");
    }
    const obj = this.parseBody(def, body, req.headers["content-type"] ?? "");
    this.checkNamespace(def, namespace, obj);
    this.validateFields(def, obj, req, res);
    if (new URL(req.url ?? "/", "http://local").searchParams.get("dryRun") === "All") {
      return sendJson(res, 201, withType(def, obj));
    }
    sendJson(res, 201, withType(def, this.commitCreate(def, namespace, obj)));
  }

  private update(
    def: ResourceDef,
    namespace: string | undefined,
    name: string,
    body: string,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): void {
    const obj = this.parseBody(def, body, req.headers["content-type"] ?? "");
    this.checkNamespace(def, namespace, obj);
    if ((obj["metadata"] as JsonObject)["name"] !== name) {
      throw new ApiStatus(400, "BadRequest", "the name of the object does not match the name on the URL");
    }
    this.validateFields(def, obj, req, res);
    sendJson(res, 200, withType(def, this.commitUpdate(def, this.mustGet(def, namespace, name), obj)));
  }

  private patch(
    def: ResourceDef,
    namespace: string | undefined,
    name: string,
    body: string,
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): void {
    const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim() ?? "";
    const existing = this.store.get(def.plural)?.get(this.key(namespace, name));
    if (type === "application/apply-patch+yaml") {
      // Server-side apply, approximated: no managedFields; the applied fields win, others stay.
      const applied = this.parseBody(def, body, "yaml");
      this.checkNamespace(def, namespace, applied);
      this.validateFields(def, applied, req, res);
      if (!existing) return sendJson(res, 201, withType(def, this.commitCreate(def, namespace, applied)));
      const merged = strategicMerge("", existing as Json, applied) as JsonObject;
      return sendJson(res, 200, withType(def, this.commitUpdate(def, existing, merged)));
    }
    if (!existing) throw notFound(def, name);
    let patchBody: Json;
    try {
      patchBody = JSON.parse(body) as Json;
    } catch (err) {
      throw new ApiStatus(400, "BadRequest", `the body of the request could not be decoded: ${String(err)}`);
    }
    let patched: Json;
    if (type === "application/merge-patch+json") patched = mergePatch(existing, patchBody);
    else if (type === "application/strategic-merge-patch+json")
      patched = strategicMerge("", existing, patchBody);
    else if (type === "application/json-patch+json") patched = jsonPatch(existing, patchBody);
    else
      throw new ApiStatus(
        415,
        "UnsupportedMediaType",
        `the body of the request was in an unknown format: ${type}`,
      );
    if (patched === null || typeof patched !== "object" || Array.isArray(patched)) {
      throw new ApiStatus(422, "Invalid", "the patch produced a non-object");
    }
    this.validateFields(def, patched, req, res);
    sendJson(res, 200, withType(def, this.commitUpdate(def, existing, patched)));
  }
}

class ApiStatus extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

function notFound(def: ResourceDef, name: string): ApiStatus {
  const kind = def.group === "" ? def.plural : `${def.plural}.${def.group}`;
  return new ApiStatus(404, "NotFound", `${kind} "${name}" not found`, {
    name,
    kind: def.plural,
    ...(def.group === "" ? {} : { group: def.group }),
  });
}

function invalid(def: ResourceDef, name: string, field: string, message: string): ApiStatus {
  return new ApiStatus(
    422,
    "Invalid",
    `${def.kind} "${name}" is invalid: ${field}: Invalid value: ${message}`,
    {
      name,
      kind: def.kind,
      causes: [{ reason: "FieldValueInvalid", message, field }],
    },
  );
}

/**
 * A skeletal OpenAPI v3 document: item paths whose PATCH operation lists the fieldValidation
 * parameter. That is what kubectl checks before it leaves validation to the server
 * (fieldValidation=Strict); schemas are left out, so kubectl does no client-side schema checks.
 */
function openApiV3(defs: readonly ResourceDef[]): unknown {
  const paths: Record<string, unknown> = {};
  for (const d of defs) {
    const base = d.group === "" ? `/api/${d.version}` : `/apis/${d.group}/${d.version}`;
    const item = `${base}${d.namespaced ? "/namespaces/{namespace}" : ""}/${d.plural}/{name}`;
    paths[item] = {
      patch: {
        operationId: `patch${d.kind}`,
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": { group: d.group, version: d.version, kind: d.kind },
        parameters: ["dryRun", "fieldManager", "fieldValidation", "force"].map((name) => ({
          name,
          in: "query",
          schema: { type: name === "force" ? "boolean" : "string", uniqueItems: true },
        })),
        responses: { "200": { description: "OK" } },
      },
    };
  }
  return {
    openapi: "3.0.0",
    info: { title: "Kubernetes", version: "v1.32.0" },
    paths,
    components: { schemas: {} },
  };
}

/** The `timeout` query parameter is a Go duration; kubectl sends whole seconds or minutes. */
function goDurationSeconds(text: string | null): number | undefined {
  const m = /^(\d+)(ms|s|m|h)$/.exec(text ?? "");
  if (!m) return undefined;
  const scale = { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] as "ms" | "s" | "m" | "h"];
  return Number(m[1]) * scale;
}

function statusObject(code: number, reason: string, message: string): unknown {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
}

function ensureObject(obj: JsonObject, field: string): JsonObject {
  const v = obj[field];
  if (v !== null && typeof v === "object" && !Array.isArray(v)) return v;
  const fresh: JsonObject = {};
  obj[field] = fresh;
  return fresh;
}

function withType(def: ResourceDef, obj: JsonObject): JsonObject {
  return { kind: def.kind, apiVersion: apiVersionOf(def), ...structuredClone(obj) };
}

function eventLine(type: string, object: unknown): string {
  return `${JSON.stringify({ type, object })}\n`;
}

function sendJson(res: http.ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}
