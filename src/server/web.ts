/**
 * The opt-in read-only web view (`--web-bind-address`). The JSON it serves is built by pure
 * functions from one snapshot of the live ruleset (`iptables-save -c`, read at most once per
 * second whatever the number of viewers), with the same netfilter code the CLI uses; the page
 * (src/server/web/) draws it with textContent/createElementNS only, so nothing taken from the
 * cluster or a foreign rule is ever parsed as markup. There is no write action: only GET.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { ConfigError, InputError, KubeProxyError } from "../errors.ts";
import type { InspectionSource, ModeWebSnapshot } from "../inspect/types.ts";
import { cidrContains, ipVersion, isLoopback, parseIP, type Address, type IPFamily } from "../ip.ts";
import { explainService, explanationToJson, type ServiceExplanation } from "../netfilter/explain.ts";
import { COLUMN_HEADER, formatRuleColumns, humanCount, targetName } from "../netfilter/format.ts";
import { parseIptablesSave } from "../netfilter/iptables-save.ts";
import type { Rule, Ruleset } from "../netfilter/model.ts";
import { formatPercent, packetFromFlags, tracePacket, traceToJson } from "../netfilter/tracer.ts";
import type { Clock } from "../proxy/clock.ts";
import {
  listenServer,
  parseHostPort,
  type HostPort,
  type HttpListener,
  type HttpResponse,
} from "./httpserver.ts";

export interface WebSnapshot {
  readonly rulesets: readonly Ruleset[];
  readonly localAddresses: readonly string[];
  /** Milliseconds since the epoch when the dump was read. */
  readonly takenAt: number;
  /** Changes when any chain or rule changes, not when only counters move: the page reloads on it. */
  readonly version: string;
  /** A mode that builds the view's data itself (nftables); its dumps are not iptables rulesets. */
  readonly mode?: ModeWebSnapshot;
}

export function snapshotOf(
  dumps: readonly string[],
  localAddresses: readonly string[],
  takenAt: number,
  mode?: ModeWebSnapshot,
): WebSnapshot {
  if (mode !== undefined) return { rulesets: [], localAddresses, takenAt, version: mode.version, mode };
  const rulesets = dumps.map((d) => parseIptablesSave(d));
  const hash = createHash("sha256");
  for (const rs of rulesets) {
    for (const table of rs.tables.values()) {
      for (const chain of table.chains.values()) {
        hash.update(`${ipVersion(rs.family)} ${table.name} ${chain.name}\n`);
        for (const rule of chain.rules) hash.update(`${rule.text}\n`);
      }
    }
  }
  return { rulesets, localAddresses, takenAt, version: hash.digest("hex").slice(0, 16) };
}

/** One read of the source per `maxAgeMs`, shared by every request and event stream in that window. */
export class SnapshotCache {
  private pending: Promise<WebSnapshot> | null = null;
  private startedAt = 0;

  constructor(
    private readonly source: InspectionSource,
    private readonly clock: Clock,
    private readonly maxAgeMs = 1000,
  ) {}

  get(): Promise<WebSnapshot> {
    const now = this.clock.now();
    if (this.pending !== null && now - this.startedAt < this.maxAgeMs) return this.pending;
    this.startedAt = now;
    const loading = this.source
      .read()
      .then(({ dumps, localAddresses, web }) => snapshotOf(dumps, localAddresses, now, web));
    // A failed read is not cached: the next request tries again.
    loading.catch(() => {
      if (this.pending === loading) this.pending = null;
    });
    this.pending = loading;
    return loading;
  }
}

/** Identifies a rule across snapshots for live counters: `family/table/chain/number`. */
export function ruleKey(family: IPFamily, rule: Rule): string {
  return `${ipVersion(family)}/${rule.table}/${rule.chain}/${rule.index}`;
}

// --- services -------------------------------------------------------------------------------

export type GraphNodeKind = "service" | "entry" | "chain" | "endpoint";

export interface GraphNode {
  readonly id: string;
  readonly kind: GraphNodeKind;
  readonly label: string;
  readonly detail: string;
  readonly column: number;
  /** The rule whose counters the node shows (the entry rule, or the endpoint's DNAT rule). */
  readonly counterKey?: string;
}

export interface GraphEdge {
  readonly from: string;
  readonly to: string;
  readonly label: string;
}

export interface ServiceGraph {
  readonly nodes: readonly GraphNode[];
  readonly edges: readonly GraphEdge[];
}

/** "10.1.125.152 port 80 tcp" for a capture rule, from its `-vnL` columns. */
function entryDetail(rule: Rule, family: IPFamily): string {
  const cols = ruleColumns(rule, family, formatRuleColumns(rule, family));
  const port = /dpts?:(\S+)/.exec(cols.extra)?.[1];
  const dst = cols.destination === "0.0.0.0/0" || cols.destination === "::/0" ? "" : cols.destination;
  return [dst, port === undefined ? "" : `port ${port}`, cols.prot === "all" ? "" : cols.prot]
    .filter((p) => p !== "")
    .join(" ");
}

/**
 * Services → capture rules → chains → endpoints (one per KUBE-SEP chain), laid out in columns by
 * the longest jump path from the capture rules; edges into endpoints carry their share.
 */
export function serviceGraph(ex: ServiceExplanation, family: IPFamily): ServiceGraph {
  const nodes: GraphNode[] = [
    {
      id: "service",
      kind: "service",
      label: ex.service,
      detail: `${family} Service · ${ex.endpoints.length} endpoint${ex.endpoints.length === 1 ? "" : "s"}`,
      column: 0,
    },
  ];
  const edges: GraphEdge[] = [];
  const chainNames = new Set(ex.chains.map((c) => c.name));
  const level = new Map<string, number>();
  ex.entries.forEach((e, i) => {
    const id = `entry:${i}`;
    nodes.push({
      id,
      kind: "entry",
      label: e.role,
      detail: entryDetail(e.rule, family),
      column: 1,
      counterKey: ruleKey(family, e.rule),
    });
    edges.push({ from: "service", to: id, label: "" });
    const target = targetName(e.rule);
    if (chainNames.has(target)) {
      edges.push({ from: id, to: `chain:${target}`, label: "" });
      level.set(target, 2);
    }
  });
  // Relaxation bounded by the chain count: a (foreign) jump loop cannot spin forever.
  for (let round = 0; round < ex.chains.length; round++) {
    for (const c of ex.chains) {
      const from = level.get(c.name);
      if (from === undefined) continue;
      for (const r of c.rules) {
        const t = targetName(r.rule);
        if (chainNames.has(t) && t !== c.name && (level.get(t) ?? 0) < from + 1)
          level.set(t, Math.min(from + 1, 2 + ex.chains.length));
      }
    }
  }
  const sepColumn = Math.max(
    2,
    ...ex.chains.filter((c) => c.kind !== "SEP").map((c) => (level.get(c.name) ?? 2) + 1),
  );
  for (const c of ex.chains) {
    const id = `chain:${c.name}`;
    if (c.kind === "SEP") {
      // A KUBE-SEP chain is one endpoint: the node is named by where its DNAT sends packets.
      const dnat = c.rules.find((r) => r.role === "dnat");
      nodes.push({
        id,
        kind: "endpoint",
        label: dnat?.dnat ?? "?",
        detail: c.name,
        column: sepColumn,
        ...(dnat === undefined ? {} : { counterKey: ruleKey(family, dnat.rule) }),
      });
      continue;
    }
    nodes.push({ id, kind: "chain", label: c.name, detail: c.kind, column: level.get(c.name) ?? 2 });
    for (const r of c.rules) {
      const t = targetName(r.rule);
      if (!chainNames.has(t) || t === c.name) continue;
      const label =
        r.role === "endpoint" ? formatPercent(r.probability ?? 0) : r.role === "affinity" ? "affinity" : "";
      // Several rules of a chain may jump to the same chain (e.g. KUBE-EXT): one arrow is enough.
      if (!edges.some((e) => e.from === id && e.to === `chain:${t}` && e.label === label))
        edges.push({ from: id, to: `chain:${t}`, label });
    }
  }
  return { nodes, edges };
}

/** `ns/name` of every Service with a capture rule (comments `ns/name[:port] …` in KUBE-SERVICES/NODEPORTS). */
export function servicesIn(ruleset: Ruleset): { namespace: string; name: string }[] {
  const found = new Map<string, { namespace: string; name: string }>();
  const nat = ruleset.tables.get("nat");
  for (const chain of ["KUBE-SERVICES", "KUBE-NODEPORTS"]) {
    for (const rule of nat?.chains.get(chain)?.rules ?? []) {
      const comment = rule.matches.find((m) => m.kind === "comment");
      if (comment?.kind !== "comment") continue;
      const m = /^([a-z0-9-]+)\/([a-z0-9.-]+)(?::\S*)?(?: |$)/.exec(comment.text);
      if (m === null) continue;
      found.set(`${m[1]}/${m[2]}`, { namespace: m[1] as string, name: m[2] as string });
    }
  }
  return [...found.values()].sort((a, b) =>
    `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`),
  );
}

export function servicesJson(snapshot: WebSnapshot): unknown {
  if (snapshot.mode !== undefined)
    return { version: snapshot.version, takenAt: snapshot.takenAt, services: snapshot.mode.services };
  const services = snapshot.rulesets.flatMap((rs) =>
    servicesIn(rs).map((ref) => {
      const ex = explainService(rs, ref);
      return {
        family: ipVersion(rs.family),
        service: ex.service,
        servicePortNames: ex.servicePortNames,
        endpoints: ex.endpoints.map((e) => {
          const dnat = ex.chains.find((c) => c.name === e.sepChain)?.rules.find((r) => r.role === "dnat");
          return {
            servicePortName: e.servicePortName,
            endpoint: e.endpoint,
            probability: e.probability,
            viaChain: e.viaChain,
            sepChain: e.sepChain,
            packets: e.counters?.packets ?? null,
            bytes: e.counters?.bytes ?? null,
            ...(dnat === undefined ? {} : { counterKey: ruleKey(rs.family, dnat.rule) }),
          };
        }),
        graph: serviceGraph(ex, rs.family),
        explanation: explanationToJson(ex),
      };
    }),
  );
  return { version: snapshot.version, takenAt: snapshot.takenAt, services };
}

// --- rules ----------------------------------------------------------------------------------

export interface RuleRow {
  readonly key: string;
  readonly family: number;
  readonly table: string;
  readonly chain: string;
  readonly num: number;
  readonly pkts: string;
  readonly bytes: string;
  readonly target: string;
  readonly prot: string;
  readonly opt: string;
  readonly in: string;
  readonly out: string;
  readonly source: string;
  readonly destination: string;
  readonly extra: string;
  /** The rule as `iptables-save` writes it. */
  readonly rule: string;
}

/** Column names of {@link RuleRow} in `iptables -vnL --line-numbers` order (from the CLI's header). */
export const RULE_COLUMNS: readonly string[] = [...COLUMN_HEADER.trim().split(/\s+/), "extra"];

type Columns = Pick<RuleRow, "prot" | "opt" | "in" | "out" | "source" | "destination" | "extra">;

/**
 * Splits the CLI's `-vnL` line back into columns. num/pkts/bytes and prot…destination are never
 * empty, so they split on spaces; the target column may be empty and is cut by its known width.
 */
function ruleColumns(rule: Rule, family: IPFamily, line: string): Columns {
  const head = /^\s*\S+\s+\S+\s+\S+ /.exec(line)?.[0] ?? "";
  const rest = line.slice(head.length + Math.max(26, targetName(rule).length) + 1);
  const m = /^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*(.*)$/.exec(rest);
  const any = family === "IPv6" ? "::/0" : "0.0.0.0/0";
  return {
    prot: m?.[1] ?? "all",
    opt: m?.[2] ?? "--",
    in: m?.[3] ?? "*",
    out: m?.[4] ?? "*",
    source: m?.[5] ?? any,
    destination: m?.[6] ?? any,
    extra: m?.[7] ?? "",
  };
}

export function ruleRow(family: IPFamily, rule: Rule): RuleRow {
  return {
    key: ruleKey(family, rule),
    family: ipVersion(family),
    table: rule.table,
    chain: rule.chain,
    num: rule.index,
    pkts: rule.counters === undefined ? "-" : humanCount(rule.counters.packets),
    bytes: rule.counters === undefined ? "-" : humanCount(rule.counters.bytes),
    target: targetName(rule),
    ...ruleColumns(rule, family, formatRuleColumns(rule, family)),
    rule: `-A ${rule.chain} ${rule.text}`,
  };
}

export type RuleQuery =
  | { readonly kind: "all" }
  | { readonly kind: "address"; readonly address: Address; readonly port?: number }
  | { readonly kind: "port"; readonly port: number }
  | { readonly kind: "text"; readonly text: string };

/** `10.1.2.3`, `10.1.2.3:80`, `[fd00::1]:80`, `80`, or any other text (substring of the rule). */
export function parseRuleQuery(q: string): RuleQuery {
  const text = q.trim();
  if (text === "") return { kind: "all" };
  if (/^\d{1,5}$/.test(text)) return { kind: "port", port: Number(text) };
  const bare = parseIP(text);
  if (bare !== undefined) return { kind: "address", address: bare };
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:]+):(\d{1,5})$/.exec(text);
  const withPort = m === null ? undefined : parseIP(m[1] as string);
  if (withPort !== undefined) return { kind: "address", address: withPort, port: Number(m?.[2]) };
  return { kind: "text", text: text.toLowerCase() };
}

function natTo(rule: Rule): { ip: Address | undefined; port: number | undefined } | undefined {
  const t = rule.target;
  if (t?.kind !== "dnat" && t?.kind !== "snat") return undefined;
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(t.to) ?? /^([^:]+)(?::(\d+))?$/.exec(t.to);
  return { ip: parseIP(m?.[1] ?? t.to), port: m?.[2] === undefined ? undefined : Number(m[2]) };
}

function hasPort(rule: Rule, port: number): boolean {
  if (natTo(rule)?.port === port) return true;
  return rule.matches.some(
    (m) =>
      (m.kind === "sourcePort" || m.kind === "destinationPort") &&
      !m.negated &&
      m.ranges.some(([lo, hi]) => lo <= port && port <= hi),
  );
}

function hasAddress(rule: Rule, address: Address): boolean {
  const to = natTo(rule)?.ip;
  if (to !== undefined && to.family === address.family && to.addr === address.addr) return true;
  // 0.0.0.0/0 is "any": it would make every IP match every rule.
  return rule.matches.some(
    (m) =>
      (m.kind === "source" || m.kind === "destination") &&
      !m.negated &&
      m.cidr.prefix > 0 &&
      cidrContains(m.cidr, address),
  );
}

export function ruleMatchesQuery(rule: Rule, query: RuleQuery): boolean {
  switch (query.kind) {
    case "all":
      return true;
    case "port":
      return hasPort(rule, query.port);
    case "address":
      return hasAddress(rule, query.address) && (query.port === undefined || hasPort(rule, query.port));
    case "text":
      return `${rule.table} ${rule.chain} ${rule.text}`.toLowerCase().includes(query.text);
  }
}

export const MAX_RULE_ROWS = 2000;

export function rulesJson(snapshot: WebSnapshot, q: string): unknown {
  if (snapshot.mode !== undefined) return modeRulesJson(snapshot, snapshot.mode, q);
  const query = parseRuleQuery(q);
  const rows: RuleRow[] = [];
  let total = 0;
  for (const rs of snapshot.rulesets) {
    for (const table of rs.tables.values()) {
      for (const chain of table.chains.values()) {
        for (const rule of chain.rules) {
          if (!ruleMatchesQuery(rule, query)) continue;
          total++;
          if (rows.length < MAX_RULE_ROWS) rows.push(ruleRow(rs.family, rule));
        }
      }
    }
  }
  return {
    version: snapshot.version,
    takenAt: snapshot.takenAt,
    query: q,
    columns: RULE_COLUMNS,
    total,
    truncated: total > rows.length,
    rules: rows,
  };
}

/** A mode's own rules: the query is a case-insensitive substring of the chain or the rule. */
function modeRulesJson(snapshot: WebSnapshot, mode: ModeWebSnapshot, q: string): unknown {
  const needle = q.trim().toLowerCase();
  const hits = mode.rules.filter(
    (r) => needle === "" || Object.values(r).some((v) => String(v).toLowerCase().includes(needle)),
  );
  const rows = hits.slice(0, MAX_RULE_ROWS);
  return {
    version: snapshot.version,
    takenAt: snapshot.takenAt,
    query: q,
    columns: mode.columns,
    total: hits.length,
    truncated: hits.length > rows.length,
    rules: rows,
  };
}

// --- trace and counters ------------------------------------------------------------------------

/** The CLI `trace` path (packetFromFlags → tracePacket → traceToJson) on the live ruleset. */
export function traceJson(snapshot: WebSnapshot, params: URLSearchParams): unknown {
  const flag = (name: string): string | undefined => {
    const v = params.get(name);
    return v === null || v.trim() === "" ? undefined : v.trim();
  };
  const src = flag("src");
  const dst = flag("dst");
  if (src === undefined) throw new InputError("--src", "required");
  if (dst === undefined) throw new InputError("--dst", "required");
  if (snapshot.mode !== undefined) {
    const flags: Record<string, string> = { src, dst };
    for (const name of ["proto", "from", "state"]) {
      const v = flag(name);
      if (v !== undefined) flags[name] = v;
    }
    return snapshot.mode.trace(flags);
  }
  const proto = flag("proto");
  const from = flag("from");
  const state = flag("state");
  const { packet, origin } = packetFromFlags({
    src,
    dst,
    ...(proto === undefined ? {} : { proto }),
    ...(from === undefined ? {} : { from }),
    ...(state === undefined ? {} : { state }),
  });
  const family = parseIP(packet.dst)?.family;
  const ruleset = snapshot.rulesets.find((rs) => rs.family === family);
  if (ruleset === undefined) throw new InputError("--dst", `no ${family ?? "IPv?"} ruleset on this node`);
  return traceToJson(tracePacket(ruleset, packet, { localAddresses: snapshot.localAddresses, origin }));
}

export type CounterMap = Readonly<Record<string, readonly [number, number]>>;

/** Every rule's [packets, bytes] by {@link ruleKey}. */
export function countersOf(snapshot: WebSnapshot): CounterMap {
  if (snapshot.mode !== undefined) return snapshot.mode.counters;
  const counters: Record<string, [number, number]> = {};
  for (const rs of snapshot.rulesets) {
    for (const table of rs.tables.values()) {
      for (const chain of table.chains.values()) {
        for (const rule of chain.rules) {
          if (rule.counters !== undefined)
            counters[ruleKey(rs.family, rule)] = [rule.counters.packets, rule.counters.bytes];
        }
      }
    }
  }
  return counters;
}

export interface CountersEvent {
  readonly version: string;
  readonly takenAt: number;
  /** True when `counters` holds every rule; otherwise only those that moved since the last event. */
  readonly full: boolean;
  readonly counters: CounterMap;
}

/**
 * One event-stream message. After the first one (or a rule change) only the counters that
 * moved are sent: a big node has tens of thousands of rules and most of them stay still.
 */
export function countersEvent(
  snapshot: WebSnapshot,
  previous: { readonly version: string; readonly counters: CounterMap } | undefined,
): CountersEvent {
  const all = countersOf(snapshot);
  if (previous === undefined || previous.version !== snapshot.version)
    return { version: snapshot.version, takenAt: snapshot.takenAt, full: true, counters: all };
  const moved: Record<string, readonly [number, number]> = {};
  for (const [key, value] of Object.entries(all)) {
    const before = previous.counters[key];
    if (before === undefined || before[0] !== value[0] || before[1] !== value[1]) moved[key] = value;
  }
  return { version: snapshot.version, takenAt: snapshot.takenAt, full: false, counters: moved };
}

// --- HTTP -------------------------------------------------------------------------------------

export interface WebRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
}

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "X-Frame-Options": "DENY",
  // Same-origin script and style files only: no inline script can run even if markup slipped in.
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "Cache-Control": "no-store",
};

function reply(
  status: number,
  contentType: string,
  body: string,
  extra: Record<string, string> = {},
): HttpResponse {
  return { status, headers: { ...SECURITY_HEADERS, "Content-Type": contentType, ...extra }, body };
}

/** JSON with markup characters as \u escapes: even a client that mistook it for HTML finds no tag. */
export function safeJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function json(status: number, value: unknown): HttpResponse {
  return reply(status, "application/json; charset=utf-8", `${safeJson(value)}\n`);
}

const ASSETS: Readonly<Record<string, { file: string; type: string }>> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/app.css": { file: "app.css", type: "text/css; charset=utf-8" },
};

const assetCache = new Map<string, string>();

function asset(file: string): string {
  let text = assetCache.get(file);
  if (text === undefined) {
    text = readFileSync(new URL(`./web/${file}`, import.meta.url), "utf8");
    assetCache.set(file, text);
  }
  return text;
}

/** The web view's request handler (everything but the event stream), testable without a socket. */
export function createWebHandler(cache: SnapshotCache): (req: WebRequest) => Promise<HttpResponse> {
  return async (req) => {
    if (req.method !== "GET")
      return reply(405, "text/plain; charset=utf-8", "405 method not allowed: this view is read-only\n", {
        Allow: "GET",
      });
    const file = ASSETS[req.path];
    if (file !== undefined) return reply(200, file.type, asset(file.file));
    try {
      switch (req.path) {
        case "/api/services":
          return json(200, servicesJson(await cache.get()));
        case "/api/rules":
          return json(200, rulesJson(await cache.get(), req.query.get("q") ?? ""));
        case "/api/trace":
          return json(200, traceJson(await cache.get(), req.query));
        default:
          return reply(404, "text/plain; charset=utf-8", "404 page not found\n");
      }
    } catch (err) {
      if (err instanceof InputError) return json(400, { error: err.message });
      throw err;
    }
  };
}

/** Host headers the view answers: IP literals and localhost; anything else is a DNS-rebinding attempt. */
export function allowedHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::\d+)?$/.exec(host);
  const name = m?.[1] ?? m?.[2];
  return name !== undefined && (name === "localhost" || parseIP(name) !== undefined);
}

/** `--web-bind-address`: `host:port`, `:port` or `port`; without a host the view binds 127.0.0.1 only. */
export function webBindAddress(flag: string): HostPort {
  const text = /^\d+$/.test(flag) ? `:${flag}` : flag;
  const hp = parseHostPort(text);
  return { host: hp.host === "" ? "127.0.0.1" : hp.host, port: hp.port };
}

/** Hosts a local user only can reach; the view has no authentication, so these are the default. */
function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  const addr = parseIP(host);
  return addr !== undefined && isLoopback(addr);
}

/**
 * Checks `--web-bind-address` at start-up (not at the first bind): the address must parse, its
 * host must be an IP literal or localhost, and a non-loopback host needs `--web-allow-remote`
 * because the view has no authentication and shows every rule, address and counter of the node.
 */
export function checkWebBindAddress(flag: string, allowRemote: boolean): HostPort {
  let hp: HostPort;
  try {
    hp = webBindAddress(flag);
  } catch {
    throw new ConfigError([`--web-bind-address: must be [IP]:port or port, got ${JSON.stringify(flag)}`]);
  }
  if (hp.host !== "localhost" && parseIP(hp.host) === undefined)
    throw new ConfigError([
      `--web-bind-address: host must be an IP address or localhost, got ${JSON.stringify(hp.host)}`,
    ]);
  if (!allowRemote && !isLoopbackHost(hp.host))
    throw new ConfigError([
      `--web-bind-address: ${JSON.stringify(flag)} is not a loopback address; the web view has no authentication, pass --web-allow-remote to serve it to the network anyway`,
    ]);
  return hp;
}

export interface WebServerOptions {
  readonly source: InspectionSource;
  readonly clock: Clock;
  /** How often the event stream pushes counters (default 1000 ms). */
  readonly eventIntervalMs?: number;
  /**
   * An event stream whose client has not taken what was sent for this long is closed (default
   * 30 s), so a client that never reads holds neither memory nor one of the stream slots.
   */
  readonly stalledStreamMs?: number;
  readonly onError?: (err: unknown) => void;
}

/** Open event streams are bounded: each one polls the cache every interval. */
export const MAX_EVENT_STREAMS = 32;

class WebServeError extends KubeProxyError {
  readonly code = "KPT_WEB";
}

/** Serves the web view on `address` (see {@link webBindAddress}); resolves once listening. */
export function serveWeb(address: string, options: WebServerOptions): Promise<HttpListener> {
  const { host, port } = webBindAddress(address);
  const cache = new SnapshotCache(options.source, options.clock);
  const handle = createWebHandler(cache);
  const interval = options.eventIntervalMs ?? 1000;
  const stalledMs = options.stalledStreamMs ?? 30_000;
  const streams = new Set<http.ServerResponse>();

  const stream = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (streams.size >= MAX_EVENT_STREAMS) {
      res.writeHead(503, { ...SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8" });
      res.end("too many event streams\n");
      return;
    }
    streams.add(res);
    res.writeHead(200, { ...SECURITY_HEADERS, "Content-Type": "text/event-stream; charset=utf-8" });
    let timer: ReturnType<Clock["setTimer"]> | null = null;
    let closed = false;
    let last: { version: string; counters: CounterMap } | undefined;
    let stalledSince: number | null = null;
    const push = async (): Promise<void> => {
      // A client that does not read: nothing more is queued for it (Node would buffer every
      // event in memory), and after `stalledMs` the stream is closed.
      if (res.writableNeedDrain) {
        stalledSince ??= options.clock.now();
        if (options.clock.now() - stalledSince >= stalledMs) {
          res.destroy();
          return;
        }
        last = undefined; // events were skipped: the next one carries every counter
        if (!closed) timer = options.clock.setTimer(interval, () => void push());
        return;
      }
      stalledSince = null;
      try {
        const snapshot = await cache.get();
        const event = countersEvent(snapshot, last);
        res.write(`event: counters\ndata: ${safeJson(event)}\n\n`);
        last = {
          version: event.version,
          counters: event.full ? event.counters : { ...last?.counters, ...event.counters },
        };
      } catch (err) {
        res.write(
          `event: failure\ndata: ${safeJson({ error: err instanceof Error ? err.message : String(err) })}\n\n`,
        );
      }
      if (!closed) timer = options.clock.setTimer(interval, () => void push());
    };
    req.on("close", () => {
      closed = true;
      timer?.stop();
      streams.delete(res);
    });
    void push();
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (!allowedHost(req.headers.host)) {
      res.writeHead(403, { ...SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8" });
      res.end("403 forbidden: unexpected Host header\n");
      return;
    }
    if (req.method === "GET" && url.pathname === "/api/events") {
      stream(req, res);
      return;
    }
    handle({ method: req.method ?? "GET", path: url.pathname, query: url.searchParams }).then(
      (out) => {
        const body = Buffer.from(out.body, "utf8");
        res.writeHead(out.status, { ...out.headers, "Content-Length": String(body.length) });
        res.end(body);
      },
      (err: unknown) => {
        options.onError?.(new WebServeError(`web view request ${url.pathname} failed`, { cause: err }));
        res.writeHead(500, { ...SECURITY_HEADERS, "Content-Type": "text/plain; charset=utf-8" });
        res.end(`${err instanceof Error ? err.message : String(err)}\n`);
      },
    );
  });
  return listenServer(server, host, port, host, () => {
    for (const res of streams) res.end();
  });
}
