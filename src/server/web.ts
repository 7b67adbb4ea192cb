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
import type {
  InspectionSource,
  ModeWebSnapshot,
  WebRuleRow,
  WebServiceEntry,
  WebServiceSummary,
  WebWalkStep,
} from "../inspect/types.ts";
import { cidrContains, ipVersion, isLoopback, parseIP, type Address, type IPFamily } from "../ip.ts";
import { explainService, type ServiceExplanation } from "../netfilter/explain.ts";
import { COLUMN_HEADER, formatRuleColumns, humanCount, targetName } from "../netfilter/format.ts";
import { parseIptablesSave } from "../netfilter/iptables-save.ts";
import type { Rule, Ruleset } from "../netfilter/model.ts";
import { sliceServiceDump } from "../netfilter/slice.ts";
import { formatPercent, packetFromQuery, tracePacket, traceToJson } from "../netfilter/tracer.ts";
import type { Clock } from "../proxy/clock.ts";
import {
  listenServer,
  parseHostPort,
  type HostPort,
  type HttpListener,
  type HttpResponse,
} from "./httpserver.ts";

export interface WebSnapshot {
  readonly localAddresses: readonly string[];
  /** Milliseconds since the epoch when the dump was read. */
  readonly takenAt: number;
  /** Changes when any chain or rule changes, not when only counters move: the page reloads on it. */
  readonly version: string;
  /** What the view shows of this reading: the mode's own, or built here from iptables-save dumps. */
  readonly mode: ModeWebSnapshot;
}

export function snapshotOf(
  dumps: readonly string[],
  localAddresses: readonly string[],
  takenAt: number,
  mode?: ModeWebSnapshot,
): WebSnapshot {
  const m = mode ?? iptablesWebSnapshot(dumps, localAddresses);
  return { localAddresses, takenAt, version: m.version, mode: m };
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

/** Capture chains whose comments name the Services (no-endpoint Services only have filter rules). */
const LISTING_CHAINS = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES"];

const SERVICE_COMMENT = /--comment "?([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*)(?::\S*?)?(?:"| |$)/;

/**
 * Every Service a dump's capture rules name, with where traffic enters, from the text alone (a
 * search over the capture chains' lines, no parse): the list at 10,000 Services.
 */
export function servicesInDump(text: string, family: number): WebServiceSummary[] {
  const found = new Map<string, Set<string>>();
  for (const chain of LISTING_CHAINS) {
    const needle = `-A ${chain} `;
    for (let at = text.indexOf(needle); at >= 0; at = text.indexOf(needle, at + needle.length)) {
      const end = text.indexOf("\n", at);
      const line = text.slice(at, end < 0 ? undefined : end);
      const m = SERVICE_COMMENT.exec(line);
      if (m === null) continue;
      const service = `${m[1]}/${m[2]}`;
      let frontends = found.get(service);
      if (frontends === undefined) found.set(service, (frontends = new Set()));
      const port = /--dports? (\S+)/.exec(line)?.[1];
      const proto = /-p (\S+)/.exec(line)?.[1] ?? "";
      const dst = /-d (\S+?)(?:\/\d+)? /.exec(line)?.[1];
      if (port === undefined) continue;
      if (dst !== undefined) frontends.add(`${dst.includes(":") ? `[${dst}]` : dst}:${port}/${proto}`);
      else if (line.includes("LOCAL")) frontends.add(`node port ${port}/${proto}`);
    }
  }
  return [...found].map(([service, f]) => ({ family, service, frontends: [...f] }));
}

const GENERATED_BY_IP6TABLES = /^# Generated by .*\bip6tables(?:-nft|-legacy)?-save\b/m;

/** A dump's family by its header, else by the first capture rule's destination. */
function dumpFamily(text: string): IPFamily {
  if (GENERATED_BY_IP6TABLES.test(text.slice(0, 4096))) return "IPv6";
  const at = text.indexOf("-A KUBE-SERVICES -d ");
  if (at < 0) return "IPv4";
  const addr = text.slice(at + 20, text.indexOf(" ", at + 20));
  return addr.includes(":") ? "IPv6" : "IPv4";
}

/** The structure of a dump without its counters: `[p:b] ` in front of rules, ` [p:b]` after declarations. */
function structureHash(dumps: readonly string[]): string {
  const hash = createHash("sha256");
  for (const d of dumps) hash.update(d.replace(/^\[\d+:\d+\] /gm, "").replace(/ \[\d+:\d+\]$/gm, ""));
  return hash.digest("hex").slice(0, 16);
}

/** The rules of `chain` in the walk and, indented below, of the Service's chains they jump to (once each). */
function walkChain(
  ex: ServiceExplanation,
  family: IPFamily,
  name: string,
  depth: number,
  shown: Set<string>,
  out: WebWalkStep[],
): void {
  const chain = ex.chains.find((c) => c.name === name);
  if (chain === undefined) return;
  if (shown.has(name)) {
    out.push({ depth, text: `${name}: (shown above)` });
    return;
  }
  shown.add(name);
  for (const r of chain.rules) {
    out.push(walkStep(family, r.rule, depth, `${name} rule ${r.ruleNumber}`));
    if (depth < 8) walkChain(ex, family, targetName(r.rule), depth + 1, shown, out);
  }
}

function walkStep(family: IPFamily, rule: Rule, depth: number, where: string): WebWalkStep {
  return {
    depth,
    text: `${where}: ${rule.text}`,
    counterKey: ruleKey(family, rule),
    ...(rule.counters === undefined ? {} : { packets: rule.counters.packets, bytes: rule.counters.bytes }),
  };
}

/** The seed's walk in iptables mode: capture rules, the chains behind them, the filter rules. */
export function iptablesWalk(ex: ServiceExplanation, family: IPFamily): WebWalkStep[] {
  const out: WebWalkStep[] = [];
  const shown = new Set<string>();
  for (const e of ex.entries) {
    out.push(walkStep(family, e.rule, 0, `${e.table} ${e.chain} rule ${e.ruleNumber}`));
    walkChain(ex, family, targetName(e.rule), 1, shown, out);
  }
  for (const f of ex.filter)
    out.push(walkStep(family, f.rule, 0, `${f.table} ${f.chain} rule ${f.ruleNumber}`));
  return out;
}

/** One Service's entry for the page, from a ruleset holding (at least) its rules. */
export function iptablesServiceEntry(
  ruleset: Ruleset,
  ref: { namespace: string; name: string },
): WebServiceEntry {
  const ex = explainService(ruleset, ref);
  const family = ruleset.family;
  return {
    family: ipVersion(family),
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
        ...(dnat === undefined ? {} : { counterKey: ruleKey(family, dnat.rule) }),
      };
    }),
    graph: serviceGraph(ex, family),
    walk: iptablesWalk(ex, family),
  };
}

type CounterRecord = Record<string, readonly [number, number]>;

function addCounters(rs: Ruleset, into: CounterRecord): void {
  for (const table of rs.tables.values())
    for (const chain of table.chains.values())
      for (const rule of chain.rules)
        if (rule.counters !== undefined)
          into[ruleKey(rs.family, rule)] = [rule.counters.packets, rule.counters.bytes];
}

/**
 * The web view's data from iptables-save dumps (one per family). The list comes from a search
 * of the text; a Service's page parses only its slice of the dump; the rules tab and the trace
 * form parse the whole dump, once per reading, when they are used.
 */
export function iptablesWebSnapshot(
  dumps: readonly string[],
  localAddresses: readonly string[],
): ModeWebSnapshot {
  const families = dumps.map(dumpFamily);
  const services = dumps
    .flatMap((d, i) => servicesInDump(d, ipVersion(families[i] as IPFamily)))
    .sort((a, b) => (a.service === b.service ? a.family - b.family : a.service < b.service ? -1 : 1));
  let whole: Ruleset[] | undefined;
  const rulesets = (): Ruleset[] =>
    (whole ??= dumps.map((d, i) => parseIptablesSave(d, { family: families[i] as IPFamily })));
  const entries = new Map<string, WebServiceEntry | undefined>();
  const known: CounterRecord = {};
  let allCounters: CounterRecord | undefined;
  const every = (): CounterRecord => {
    if (allCounters !== undefined) return allCounters;
    const all: CounterRecord = {};
    for (const rs of rulesets()) addCounters(rs, all);
    return (allCounters = all);
  };
  return {
    version: structureHash(dumps),
    services,
    service(family, namespace, name) {
      const id = `${family}/${namespace}/${name}`;
      if (entries.has(id)) return entries.get(id);
      const i = families.findIndex((f) => ipVersion(f) === family);
      const text = dumps[i];
      let entry: WebServiceEntry | undefined;
      if (
        text !== undefined &&
        services.some((s) => s.family === family && s.service === `${namespace}/${name}`)
      ) {
        const slice = sliceServiceDump(text, namespace, name);
        const rs = parseIptablesSave(slice.text, { ...slice.options, family: families[i] as IPFamily });
        addCounters(rs, known);
        entry = iptablesServiceEntry(rs, { namespace, name });
      }
      entries.set(id, entry);
      return entry;
    },
    columns: RULE_COLUMNS,
    rules(q, max) {
      const query = parseRuleQuery(q);
      const rows: WebRuleRow[] = [];
      let total = 0;
      for (const rs of rulesets()) {
        for (const table of rs.tables.values()) {
          for (const chain of table.chains.values()) {
            for (const rule of chain.rules) {
              if (!ruleMatchesQuery(rule, query)) continue;
              total++;
              if (rows.length < max) rows.push(ruleRow(rs.family, rule) as unknown as WebRuleRow);
            }
          }
        }
      }
      return { total, rows };
    },
    counters(keys) {
      if (keys !== undefined && [...keys].every((k) => k in known)) {
        const out: CounterRecord = {};
        for (const k of keys) out[k] = known[k] as readonly [number, number];
        return out;
      }
      const all = every();
      if (keys === undefined) return all;
      const out: CounterRecord = {};
      for (const k of keys) if (all[k] !== undefined) out[k] = all[k];
      return out;
    },
    trace: (flags) => iptablesTrace(rulesets(), localAddresses, flags),
  };
}

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 500;

function positiveInt(params: URLSearchParams, name: string, fallback: number, max: number): number {
  const text = params.get(name);
  if (text === null || text.trim() === "") return fallback;
  if (!/^\d{1,9}$/.test(text.trim()) || Number(text) < 1)
    throw new InputError(name, `must be a positive integer, got ${JSON.stringify(text)}`);
  return Math.min(Number(text), max);
}

/**
 * `/api/services?q=&page=&limit=`: one page of the Services whose name or frontends contain `q`
 * (case-insensitive). Only names and frontends: a Service's graph and walk are `/api/service`.
 */
export function servicesJson(snapshot: WebSnapshot, params = new URLSearchParams()): unknown {
  const q = (params.get("q") ?? "").trim().toLowerCase();
  const limit = positiveInt(params, "limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
  const all = snapshot.mode.services;
  const hits =
    q === ""
      ? all
      : all.filter((s) => s.service.includes(q) || s.frontends.some((f) => f.toLowerCase().includes(q)));
  const pages = Math.max(1, Math.ceil(hits.length / limit));
  const page = Math.min(positiveInt(params, "page", 1, Number.MAX_SAFE_INTEGER), pages);
  return {
    version: snapshot.version,
    takenAt: snapshot.takenAt,
    query: params.get("q") ?? "",
    total: hits.length,
    page,
    pages,
    limit,
    services: hits.slice((page - 1) * limit, page * limit),
  };
}

/** `4/ns/name` (or `ns/name`: the first family that has it) → where to find the Service. */
function serviceParam(
  snapshot: WebSnapshot,
  value: string,
): { family: number; namespace: string; name: string } {
  const m = /^(?:([46])\/)?([a-z0-9][-a-z0-9]*)\/([a-z0-9][-a-z0-9.]*)$/.exec(value.trim());
  if (m === null)
    throw new InputError("service", `expected [4|6/]NAMESPACE/NAME, got ${JSON.stringify(value)}`);
  const [, fam, namespace = "", name = ""] = m;
  const family =
    fam === undefined
      ? (snapshot.mode.services.find((s) => s.service === `${namespace}/${name}`)?.family ?? 4)
      : Number(fam);
  return { family, namespace, name };
}

class NoSuchService extends Error {}

/** Lets a mode that reads lazily read what the request's `?service=` names. */
async function prepareService(snapshot: WebSnapshot, value: string | null): Promise<void> {
  if (snapshot.mode.prepare === undefined || value === null || value.trim() === "") return;
  await snapshot.mode.prepare({ kind: "service", ...serviceParam(snapshot, value) });
}

/** Lets a mode that reads lazily read what an event stream's counters come from. */
async function prepareWatched(snapshot: WebSnapshot, params: URLSearchParams): Promise<void> {
  await prepareService(snapshot, params.get("service"));
  if (params.get("rules") !== null || params.get("service") === null)
    await snapshot.mode.prepare?.({ kind: "table" });
}

/** `/api/service?service=4/ns/name`: that Service's graph, endpoints and walk, with counters. */
export function serviceJson(snapshot: WebSnapshot, params: URLSearchParams): unknown {
  const { family, namespace, name } = serviceParam(snapshot, params.get("service") ?? "");
  const entry = snapshot.mode.service(family, namespace, name);
  if (entry === undefined)
    throw new NoSuchService(`no IPv${family} Service ${namespace}/${name} on this node`);
  return { version: snapshot.version, takenAt: snapshot.takenAt, ...entry };
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

/** `/api/rules?q=`: the rules the query finds, the first {@link MAX_RULE_ROWS} of them. */
export function rulesJson(snapshot: WebSnapshot, q: string): unknown {
  const { total, rows } = snapshot.mode.rules(q, MAX_RULE_ROWS);
  return {
    version: snapshot.version,
    takenAt: snapshot.takenAt,
    query: q,
    columns: snapshot.mode.columns,
    total,
    truncated: total > rows.length,
    rules: rows,
  };
}

// --- trace and counters ------------------------------------------------------------------------

/** The CLI `trace` path (packetFromQuery → tracePacket → traceToJson) on iptables rulesets. */
function iptablesTrace(
  rulesets: readonly Ruleset[],
  localAddresses: readonly string[],
  flags: Readonly<Record<string, string>>,
): unknown {
  const { packet, origin } = packetFromQuery(flags);
  const family = parseIP(packet.dst)?.family;
  const ruleset = rulesets.find((rs) => rs.family === family);
  if (ruleset === undefined) throw new InputError("--dst", `no ${family ?? "IPv?"} ruleset on this node`);
  return traceToJson(tracePacket(ruleset, packet, { localAddresses, origin }));
}

/** The trace form's query as the `trace` command's flags. */
export function traceFlags(params: URLSearchParams): Record<string, string> {
  const flag = (name: string): string | undefined => {
    const v = params.get(name);
    return v === null || v.trim() === "" ? undefined : v.trim();
  };
  const src = flag("src");
  const dst = flag("dst");
  if (src === undefined) throw new InputError("--src", "required");
  if (dst === undefined) throw new InputError("--dst", "required");
  const flags: Record<string, string> = { src, dst };
  for (const name of ["proto", "from", "state"]) {
    const v = flag(name);
    if (v !== undefined) flags[name] = v;
  }
  return flags;
}

/** `/api/trace?src=&dst=&proto=&from=&state=`: the `trace` command's JSON for that packet. */
export function traceJson(snapshot: WebSnapshot, params: URLSearchParams): unknown {
  return snapshot.mode.trace(traceFlags(params));
}

export type CounterMap = Readonly<Record<string, readonly [number, number]>>;

/** Every rule's [packets, bytes] by {@link ruleKey}, or only those of `keys`. */
export function countersOf(snapshot: WebSnapshot, keys?: ReadonlySet<string>): CounterMap {
  return snapshot.mode.counters(keys);
}

/**
 * The counters an event stream carries: `?service=4/ns/name` (its page) and `?rules=Q` (a rules
 * search on screen) name what the page shows; with neither, every rule's.
 */
export function watchedKeys(snapshot: WebSnapshot, params: URLSearchParams): ReadonlySet<string> | undefined {
  const service = params.get("service");
  const rules = params.get("rules");
  if (service === null && rules === null) return undefined;
  const keys = new Set<string>();
  if (service !== null && service.trim() !== "") {
    const { family, namespace, name } = serviceParam(snapshot, service);
    const entry = snapshot.mode.service(family, namespace, name);
    for (const n of entry?.graph.nodes ?? []) if (n.counterKey !== undefined) keys.add(n.counterKey);
    for (const e of entry?.endpoints ?? []) if (e.counterKey !== undefined) keys.add(e.counterKey);
    for (const w of entry?.walk ?? []) if (w.counterKey !== undefined) keys.add(w.counterKey);
  }
  if (rules !== null) for (const r of snapshot.mode.rules(rules, MAX_RULE_ROWS).rows) keys.add(r.key);
  return keys;
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
  keys?: ReadonlySet<string>,
): CountersEvent {
  const all = countersOf(snapshot, keys);
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
          return json(200, servicesJson(await cache.get(), req.query));
        case "/api/service": {
          const snapshot = await cache.get();
          await prepareService(snapshot, req.query.get("service") ?? "");
          return json(200, serviceJson(snapshot, req.query));
        }
        case "/api/rules": {
          const snapshot = await cache.get();
          await snapshot.mode.prepare?.({ kind: "table" });
          return json(200, rulesJson(snapshot, req.query.get("q") ?? ""));
        }
        case "/api/trace": {
          const snapshot = await cache.get();
          await snapshot.mode.prepare?.({ kind: "trace", flags: traceFlags(req.query) });
          return json(200, traceJson(snapshot, req.query));
        }
        default:
          return reply(404, "text/plain; charset=utf-8", "404 page not found\n");
      }
    } catch (err) {
      if (err instanceof InputError) return json(400, { error: err.message });
      if (err instanceof NoSuchService) return json(404, { error: err.message });
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

  const stream = (req: http.IncomingMessage, res: http.ServerResponse, params: URLSearchParams): void => {
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
        await prepareWatched(snapshot, params);
        const event = countersEvent(snapshot, last, watchedKeys(snapshot, params));
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
      stream(req, res, url.searchParams);
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
