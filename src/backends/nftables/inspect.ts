/**
 * nftables mode's see-inside tools: the reader of the live table (over netlink,
 * ./netlink-listing.ts) or of a dump (`nft -f`, `nft list`, `nft -j`), the tracer run over it, and the explainer that turns our table into
 * the mode-neutral ServiceView (src/inspect/model.ts). Only `table ip kube-proxy` and `table ip6
 * kube-proxy` are ours; every other table is reported as foreign and never traced.
 */
import { InputError } from "../../errors.ts";
import type { Runner } from "../../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../../kernel/ip.ts";
import { readEndpointFlows } from "../../kernel/conntrack-count.ts";
import type { EndpointKey, Frontend } from "../../kernel/conntrack-count.ts";
import { createHash } from "node:crypto";
import { formatPercent, packetFromQuery } from "../../netfilter/tracer.ts";
import {
  countersText,
  endpointAndMasqueradeLines,
  flowLines,
  frontendLines,
} from "../../netfilter/view-text.ts";
import type { NftChain, NftElement, NftRuleset, NftTable } from "../../netfilter/nft/model.ts";
import { tableLabel } from "../../netfilter/nft/model.ts";
import { NftDumpParseError, parseNftDump, parseNftJson } from "../../netfilter/nft/parse.ts";
import {
  familyOfPacket,
  formatNftTrace,
  nftTraceToJson,
  traceNftPacket,
} from "../../netfilter/nft/tracer.ts";
import type {
  InspectionSource,
  ModeWebSnapshot,
  WebGraphNode,
  WebRuleRow,
  WebServiceEntry,
  WebServiceSummary,
} from "../../inspect/types.ts";
import {
  whyNoTraffic,
  type EndpointView,
  type FrontendView,
  type MasqueradeView,
  type ServiceView,
} from "../../inspect/model.ts";
import type { IPFamily } from "../../ip.ts";
import type { InspectDump, InspectExplainRequest, InspectTraceRequest, ModeInspector } from "../types.ts";
import {
  DISPATCH_SETS,
  readGeneration,
  readTablesOverNetlink,
  type ListingPart,
  type NetlinkReading,
} from "./netlink-listing.ts";
import {
  BASE_CHAINS,
  CLUSTER_IPS_SET,
  FIREWALL_IPS_MAP,
  KUBE_PROXY_TABLE,
  MARK_MASQ_CHAIN,
  NO_ENDPOINT_NODEPORTS_MAP,
  NO_ENDPOINT_SERVICES_MAP,
  NODEPORT_IPS_SET,
  REJECT_CHAIN,
  SERVICE_IPS_MAP,
  SERVICE_NODEPORTS_MAP,
} from "./names.ts";

/** Our tables (ip first) and the labels of everyone else's. */
export interface NftablesReading {
  readonly tables: readonly NftTable[];
  readonly foreign: readonly string[];
}

const isOurs = (t: { family: string; name: string }): boolean =>
  t.name === KUBE_PROXY_TABLE && (t.family === "ip" || t.family === "ip6");

export function splitTables(ruleset: NftRuleset): NftablesReading {
  return {
    tables: ruleset.tables.filter(isOurs).sort((a, b) => (a.family < b.family ? -1 : 1)),
    foreign: ruleset.tables.filter((t) => !isOurs(t)).map(tableLabel),
  };
}

/** A per-Service chain's name anywhere in a line or element: `service-ULMVA6XW-ns/name/…`. */
const SERVICE_CHAIN = /\b(?:service|local|external|firewall|endpoint)-[A-Z0-9]{8}-([^/\s"]+)\/([^/\s"]+)\//g;

/** True when `text` names some Service's chain, and none of `ref`'s. */
function onlyOthers(text: string, ref: { namespace: string; name: string }): boolean {
  let other = false;
  SERVICE_CHAIN.lastIndex = 0;
  for (let m = SERVICE_CHAIN.exec(text); m !== null; m = SERVICE_CHAIN.exec(text)) {
    if (m[1] === ref.namespace && m[2] === ref.name) return false;
    other = true;
  }
  return other;
}

/**
 * The text of each item of `nft -j`'s top-level `"nftables": [ … ]` array, found by one scan
 * of the text (strings skipped, braces counted) instead of parsing it all; null when the text
 * does not have that shape.
 */
function jsonItems(text: string): string[] | null {
  const key = text.indexOf('"nftables"');
  const open = key < 0 ? -1 : text.indexOf("[", key);
  if (open < 0) return null;
  const items: string[] = [];
  let depth = 0;
  let from = -1;
  for (let i = open + 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      // To the closing quote, past escaped characters.
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 92 /* \ */) i++;
        else if (d === 34) break;
      }
    } else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (depth === 0) from = i;
      depth++;
    } else if (c === 125 /* } */ || c === 93 /* ] */) {
      if (depth === 0) return c === 93 ? items : null;
      depth--;
      if (depth === 0) items.push(text.slice(from, i + 1));
    }
  }
  return null;
}

/** The prefixes of a per-Service chain's name (SERVICE_CHAIN's alternatives). */
const SERVICE_CHAIN_PREFIXES = ["service-", "local-", "external-", "firewall-", "endpoint-"];

/**
 * Whether the chain name at `at` is a per-Service chain (SERVICE_CHAIN's shape: prefix, 8-char
 * hash, `ns/name/`): -1 not one, 0 another Service's, 1 `ref`'s. Reads characters in place.
 */
function serviceChainOwner(text: string, at: number, ref: { namespace: string; name: string }): -1 | 0 | 1 {
  let i = -1;
  for (const prefix of SERVICE_CHAIN_PREFIXES) {
    if (text.startsWith(prefix, at)) {
      i = at + prefix.length;
      break;
    }
  }
  if (i < 0) return -1;
  for (const end = i + 8; i < end; i++) {
    const c = text.charCodeAt(i);
    if (!((c >= 65 && c <= 90) || (c >= 48 && c <= 57))) return -1;
  }
  if (text.charCodeAt(i++) !== 45 /* - */) return -1;
  let ours = true;
  for (const want of [ref.namespace, ref.name]) {
    const from = i;
    for (; ; i++) {
      const c = text.charCodeAt(i);
      if (c === 47 /* / */) break;
      // A quote, white space or the end of the text: not SERVICE_CHAIN's `[^/\s"]+`.
      if (c === 34 || c <= 32 || Number.isNaN(c)) return -1;
    }
    if (i === from) return -1;
    if (ours && (i - from !== want.length || !text.startsWith(want, from))) ours = false;
    i++;
  }
  return ours ? 1 : 0;
}

const NFT_JSON_START = '{"nftables": [';
const FAMILY_KEY = '{"family": "';
const TABLE_KEY = '", "table": "';

/**
 * The top-level items of an `nft -j` dump laid out as nft writes it (one line, jansson's `, `
 * and `: ` separators, every object but metainfo opening with its "family"), less the items of
 * other Services' chains (a rule's "chain", a chain's "name"), which are skipped unread. Items
 * are found by native string search for `{"family": "` (an unescaped quote cannot be inside a
 * string, so every hit is structural) instead of a scan of every character: at 10,000 Services
 * 0.13 s of CPU against 0.33 s for jsonItems and the test of every item (bench/README.md). Null
 * for any other layout (pretty-printed by jq, say), which jsonItems reads.
 */
export function nftLayoutItems(text: string, ref: { namespace: string; name: string }): string[] | null {
  if (!text.startsWith(NFT_JSON_START)) return null;
  let last = text.length;
  while (last > 0 && text.charCodeAt(last - 1) <= 32) last--;
  if (text.charCodeAt(last - 1) !== 125 /* } */ || text.charCodeAt(last - 2) !== 93 /* ] */) return null;
  const arrayEnd = last - 2;
  const kept: string[] = [];
  let itemStart = NFT_JSON_START.length;
  let keep = true;
  for (let p = text.indexOf(FAMILY_KEY, itemStart); ; p = text.indexOf(FAMILY_KEY, p + FAMILY_KEY.length)) {
    if (p < 0 || p >= arrayEnd) {
      if (keep) kept.push(text.slice(itemStart, arrayEnd));
      return kept;
    }
    // `{"KIND": {"family": "`: the hit must be the value of an object's first key.
    if (text.charCodeAt(p - 1) !== 32 || text.charCodeAt(p - 2) !== 58 || text.charCodeAt(p - 3) !== 34)
      return null;
    let s = p - 4;
    while (s > itemStart && text.charCodeAt(s) !== 34) s--;
    s--;
    if (text.charCodeAt(s) !== 123 /* { */) return null;
    if (s !== itemStart) {
      // The previous item ends with `}` and `, ` separates them, or this is not nft's layout.
      if (text.charCodeAt(s - 1) !== 32 || text.charCodeAt(s - 2) !== 44 || text.charCodeAt(s - 3) !== 125)
        return null;
      if (keep) kept.push(text.slice(itemStart, s - 2));
      itemStart = s;
    }
    keep = true;
    const kind = text.slice(s + 2, p - 3);
    if (kind !== "rule" && kind !== "chain") continue;
    const family = text.indexOf('"', p + FAMILY_KEY.length);
    if (!text.startsWith(TABLE_KEY, family)) continue;
    const table = text.indexOf('"', family + TABLE_KEY.length);
    const key = kind === "rule" ? '", "chain": "' : '", "name": "';
    if (text.startsWith(key, table) && serviceChainOwner(text, table + key.length, ref) === 0) keep = false;
  }
}

/**
 * What one Service's explanation needs of a dump: everything but the other Services' chains,
 * rules and map elements (at 10,000 Services nearly all of it). The `nft -f` form is cut line by
 * line, `nft -j` item by item (an item is parsed only when it is kept; in nft's own layout found
 * by nftLayoutItems, in any other by jsonItems); `nft list` output (chains as blocks) is read whole.
 */
export function sliceNftDump(text: string, ref: { namespace: string; name: string }): NftRuleset {
  const start = text.trimStart();
  if (start.startsWith("{")) {
    const texts = nftLayoutItems(text, ref) ?? jsonItems(text);
    if (texts === null) return parseNftDump(text);
    const items: Record<string, Record<string, unknown>>[] = [];
    try {
      // Other Services' chains and rules are never parsed: at 10,000 Services nearly all of them.
      for (const t of texts)
        if (!onlyOthers(t, ref)) items.push(JSON.parse(t) as Record<string, Record<string, unknown>>);
    } catch {
      return parseNftDump(text);
    }
    const kept: unknown[] = [];
    for (const item of items) {
      const chain = item["chain"]?.["name"] ?? item["rule"]?.["chain"];
      if (typeof chain === "string" && onlyOthers(`${chain}/`, ref)) continue;
      const set = item["map"] ?? item["set"];
      const elem = set?.["elem"];
      if (set !== undefined && Array.isArray(elem)) {
        kept.push({
          [item["map"] !== undefined ? "map" : "set"]: {
            ...set,
            elem: elem.filter((e) => !onlyOthers(JSON.stringify(e), ref)),
          },
        });
        continue;
      }
      kept.push(item);
    }
    return parseNftJson({ nftables: kept });
  }
  // `nft list` output: `table ip kube-proxy {` with chains as blocks.
  if (/^\s*table\s/m.test(text)) return parseNftDump(text);
  const lines = text.split("\n");
  return parseNftDump(lines.filter((l) => !onlyOthers(l, ref)).join("\n"));
}

/** A dump in any form nft or our renderer writes; a line it cannot read is named with its origin. */
export function readNftablesDump(
  dump: InspectDump,
  service?: { readonly namespace: string; readonly name: string },
): NftablesReading {
  try {
    return splitTables(service === undefined ? parseNftDump(dump.text) : sliceNftDump(dump.text, service));
  } catch (error) {
    if (error instanceof NftDumpParseError)
      throw new InputError(dump.origin, error.message, { cause: error });
    throw error;
  }
}

/** How the live tables are read: over netlink (./netlink-listing.ts); tests give their own. */
export interface NftablesKernelReader {
  generation(netns?: string): Promise<number>;
  tables(options: { readonly netns?: string; readonly what?: ListingPart }): Promise<NetlinkReading>;
}

export const netlinkReader: NftablesKernelReader = {
  generation: readGeneration,
  tables: readTablesOverNetlink,
};

/** The source line of a live reading. */
const LIVE_SOURCE = `live kernel (netlink dump of table ip|ip6 ${KUBE_PROXY_TABLE})`;

/**
 * Our tables as the kernel holds them now, read over netlink (with `service`, only that
 * Service's part of them); other tables by name only.
 */
export async function readLiveNftables(
  netns?: string,
  what: ListingPart = { part: "all" },
  kernel: NftablesKernelReader = netlinkReader,
): Promise<{ reading: NftablesReading; generation: number }> {
  const read = await kernel.tables({ ...(netns === undefined ? {} : { netns }), what });
  return {
    reading: { tables: read.tables, foreign: read.others.map(tableLabel) },
    generation: read.generation,
  };
}

/** A map that notes the names asked of it and not found: what a trace of a partial table lacks. */
class NotingMap<V> extends Map<string, V> {
  readonly missed = new Set<string>();
  override get(name: string): V | undefined {
    const v = super.get(name);
    if (v === undefined) this.missed.add(name);
    return v;
  }
}

/** Rounds of reading what a packet's trace asks for: each one a jump deeper (service, endpoint…). */
const MAX_TRACE_ROUNDS = 16;

/**
 * Our table of `family` read as far as `trace` goes, not whole: the base chains and the
 * dispatch sets first, then, round by round, the chains and sets the trace asked for and the
 * reading lacked (the Service's chains a verdict map sends the packet to, the endpoint chains,
 * an affinity set…), until it asks for nothing new. Each round's result is the same as on the
 * whole table, since a trace reads no chain or set it does not pass. At 10,000 Services a
 * packet's part is a few chains against a whole table's 110,000. A commit between two rounds
 * starts the reading again.
 */
export async function readLiveNftablesForTrace(
  family: "ip" | "ip6",
  trace: (table: NftTable) => unknown,
  netns?: string,
  kernel: NftablesKernelReader = netlinkReader,
): Promise<{ reading: NftablesReading; generation: number; rounds: number }> {
  const base = { chains: BASE_CHAINS.map((c) => c.name), sets: [...DISPATCH_SETS] };
  let table: NftTable | undefined;
  let generation: number | undefined;
  let foreign: string[] = [];
  let next = base;
  const tried = { chains: new Set<string>(), sets: new Set<string>() };
  for (let round = 1; round <= MAX_TRACE_ROUNDS; round++) {
    for (const c of next.chains) tried.chains.add(c);
    for (const x of next.sets) tried.sets.add(x);
    const read = await kernel.tables({
      ...(netns === undefined ? {} : { netns }),
      what: { part: "named", family, ...next },
    });
    foreign = read.others.map(tableLabel);
    const part = read.tables.find((t) => t.family === family);
    if (generation !== undefined && read.generation !== generation) {
      // Someone committed between two rounds: what was read may not fit together.
      table = undefined;
      tried.chains.clear();
      tried.sets.clear();
      generation = undefined;
      next = base;
      continue;
    }
    generation = read.generation;
    if (part === undefined) return { reading: { tables: [], foreign }, generation, rounds: round };
    table =
      table === undefined
        ? part
        : {
            ...table,
            chains: new Map([...table.chains, ...part.chains]),
            sets: new Map([...table.sets, ...part.sets]),
          };
    const chains = new NotingMap([...table.chains]);
    const sets = new NotingMap([...table.sets]);
    trace({ ...table, chains, sets });
    next = {
      chains: [...chains.missed].filter((c) => !tried.chains.has(c)),
      sets: [...sets.missed].filter((x) => !tried.sets.has(x)),
    };
    if (next.chains.length === 0 && next.sets.length === 0)
      return { reading: { tables: [table], foreign }, generation, rounds: round };
  }
  throw new InputError(
    "trace",
    `the packet's path through table ${family} ${KUBE_PROXY_TABLE} still asked for more after ${MAX_TRACE_ROUNDS} rounds of reading (a commit each time?)`,
  );
}

/**
 * The web view's reader. What it read is kept while the ruleset's generation stays the same
 * (every commit, ours or anyone's, moves it; asking for it is one small netlink message): a
 * reading is the dispatch maps only, and the snapshot reads a Service's part or the whole
 * table when a request first needs it (liveNftablesWebSnapshot). The node's addresses are read
 * each time; a change of them starts a new snapshot.
 */
export function nftablesInspectionSource(
  runner: Runner,
  netns?: string,
  kernel: NftablesKernelReader = netlinkReader,
): InspectionSource {
  let kept: { generation: number; local: string; web: ModeWebSnapshot } | undefined;
  return {
    async read() {
      const local = (await readLocalAddresses(runner, netns)).map((a) => a.replace(/\/\d+$/, ""));
      const generation = await kernel.generation(netns);
      if (kept === undefined || kept.generation !== generation || kept.local !== local.join(" ")) {
        const list = await readLiveNftables(netns, { part: "dispatch" }, kernel);
        const part = (what: ListingPart): Promise<NftablesReading> =>
          readLiveNftables(netns, what, kernel).then((r) => r.reading);
        kept = {
          generation: list.generation,
          local: local.join(" "),
          web: liveNftablesWebSnapshot(list.reading, list.generation, local, part, (family, trace) =>
            readLiveNftablesForTrace(family, trace, netns, kernel).then((r) => r.reading),
          ),
        };
      }
      return { mode: "nftables", dumps: [], localAddresses: local, web: kept.web };
    },
  };
}

// --- the explainer ---------------------------------------------------------------------------

interface ChainName {
  readonly prefix: "service" | "local" | "external" | "firewall" | "endpoint";
  readonly namespace: string;
  readonly name: string;
  readonly protocol: string;
  readonly port: string;
}

/** `service-ULMVA6XW-ns1/svc1/tcp/p80`, `endpoint-…-ns1/svc1/tcp/p80__10.180.0.1/80` (docs/nftables.md §A.4). */
export function parseChainName(chain: string): ChainName | null {
  const m =
    /^(service|local|external|firewall|endpoint)-[A-Z0-9]{8}-([^/]+)\/([^/]+)\/([a-z]+)\/([^_/]*)(?:__.*)?$/.exec(
      chain,
    );
  if (m === null) return null;
  return {
    prefix: m[1] as ChainName["prefix"],
    namespace: m[2]!,
    name: m[3]!,
    protocol: m[4]!,
    port: m[5]!,
  };
}

const spnOf = (c: ChainName): string => `${c.namespace}/${c.name}${c.port === "" ? "" : `:${c.port}`}`;

export interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
  readonly port?: string;
}

function belongs(c: ChainName | null, ref: ServiceRef): c is ChainName {
  return (
    c !== null &&
    c.namespace === ref.namespace &&
    c.name === ref.name &&
    (ref.port === undefined || c.port === ref.port)
  );
}

function belongsByComment(comment: string | undefined, ref: ServiceRef): boolean {
  if (comment === undefined) return false;
  const base = `${ref.namespace}/${ref.name}`;
  return ref.port === undefined
    ? comment === base || comment.startsWith(`${base}:`)
    : comment === (ref.port === "" ? base : `${base}:${ref.port}`);
}

function hostPort(ip: string, port: string | number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** The DNAT destination and counters of an endpoint chain. */
function dnatOf(chain: NftChain | undefined): {
  endpoint: string;
  protocol: string;
  rule: number;
  counters?: { packets: number; bytes: number };
} | null {
  for (const r of chain?.rules ?? []) {
    const d = r.statements.find((s) => s.kind === "dnat");
    const p = r.statements.find((s) => s.kind === "l4proto");
    if (d?.kind === "dnat")
      return {
        endpoint: d.port === null ? d.address : hostPort(d.address, d.port),
        protocol: p?.kind === "l4proto" ? p.protocol : "tcp",
        rule: r.index,
        ...(r.counters === undefined ? {} : { counters: r.counters }),
      };
  }
  return null;
}

export interface NftServiceExplanation {
  readonly view: ServiceView;
  readonly table: string;
  /** For conntrack: the DNAT targets and where traffic is captured. */
  readonly endpointKeys: readonly (EndpointKey & { servicePortName: string })[];
  readonly frontends: readonly Frontend[];
  /** The seed's walk in this mode: dispatch rule, map element, then every rule on the way to the DNATs. */
  readonly walk: readonly NftWalkStep[];
  /** The chain each load-balancing frontend's map element sends packets to. */
  readonly entryChains: readonly { readonly frontend: number; readonly chain: string }[];
}

/** One line of the walk: a rule (with its place, for counters), a map element, or a note. */
export interface NftWalkStep {
  readonly depth: number;
  readonly text: string;
  readonly chain?: string;
  readonly rule?: number;
  readonly counters?: { readonly packets: number; readonly bytes: number };
}

/** The rules of `chain` and, indented below, of the chains it sends packets to (each once). */
function walkChain(
  table: NftTable,
  chain: string,
  depth: number,
  shown: Set<string>,
  out: NftWalkStep[],
): void {
  if (shown.has(chain)) {
    out.push({ depth, text: `${chain}: (shown above)` });
    return;
  }
  shown.add(chain);
  const c = table.chains.get(chain);
  if (c === undefined) {
    out.push({ depth, text: `${chain}: MISSING` });
    return;
  }
  for (const r of c.rules) {
    out.push({
      depth,
      text: `${chain} rule ${r.index}: ${r.text}`,
      chain,
      rule: r.index,
      ...(r.counters === undefined ? {} : { counters: r.counters }),
    });
    for (const s of r.statements) {
      const targets =
        s.kind === "numgen" ? s.entries.map((e) => e.verdict) : s.kind === "verdict" ? [s.verdict] : [];
      for (const v of targets) {
        if ((v.kind === "goto" || v.kind === "jump") && v.target !== MARK_MASQ_CHAIN && depth < 8)
          walkChain(table, v.target, depth + 1, shown, out);
      }
    }
  }
}

function serviceWalk(
  table: NftTable,
  frontends: readonly { map: string; key: readonly string[]; target: string }[],
): NftWalkStep[] {
  const out: NftWalkStep[] = [];
  const shown = new Set<string>();
  for (const f of frontends) {
    const dispatch = [...(table.chains.get("services")?.rules ?? [])].find((r) =>
      r.statements.some((s) => s.kind === "vmapLookup" && s.map === f.map),
    );
    out.push(
      dispatch === undefined
        ? { depth: 0, text: `services: no rule looks up @${f.map}` }
        : {
            depth: 0,
            text: `services rule ${dispatch.index}: ${dispatch.text}`,
            chain: "services",
            rule: dispatch.index,
          },
    );
    out.push({ depth: 1, text: `@${f.map} element ${f.key.join(" . ")} : goto ${f.target}` });
    walkChain(table, f.target, 2, shown, out);
  }
  return out;
}

/** One Service (or one of its ports) in our table; null when the table holds nothing of it. */
export function explainNftService(table: NftTable, ref: ServiceRef): NftServiceExplanation | null {
  const clusterIPs = new Set((table.sets.get(CLUSTER_IPS_SET)?.elements ?? []).map((e) => e.key[0]));
  const firewallKeys = new Set(
    (table.sets.get(FIREWALL_IPS_MAP)?.elements ?? []).map((e) => e.key.join(" . ")),
  );
  const nodePortIPs = table.sets.get(NODEPORT_IPS_SET)?.elements.map((e) => e.key[0]!) ?? null;
  const names = new Set<string>();
  const frontends: FrontendView[] = [];
  const conntrackFrontends: Frontend[] = [];
  const walked: { map: string; key: readonly string[]; target: string }[] = [];
  const entryChains: { frontend: number; chain: string }[] = [];
  const elements = (map: string): readonly NftElement[] => table.sets.get(map)?.elements ?? [];
  const addressKind = (ip: string, key: string): FrontendView["kind"] =>
    clusterIPs.has(ip) ? "cluster IP" : firewallKeys.has(key) ? "loadbalancer IP" : "external address";
  const nodePortWhere =
    nodePortIPs === null
      ? "any local address"
      : nodePortIPs.length === 0
        ? "no address (nodeport-ips is empty)"
        : nodePortIPs.join(", ");

  for (const e of elements(SERVICE_IPS_MAP)) {
    const target = e.value?.kind === "goto" || e.value?.kind === "jump" ? e.value.target : "";
    const c = parseChainName(target);
    if (!belongs(c, ref)) continue;
    const [ip = "", proto = "", port = ""] = e.key;
    names.add(spnOf(c));
    frontends.push({
      servicePortName: spnOf(c),
      kind: addressKind(ip, e.key.join(" . ")),
      destination: `${hostPort(ip, port)} (${proto})`,
      action: "load-balance",
      where: `map ${SERVICE_IPS_MAP} element ${e.key.join(" . ")} → ${target}`,
    });
    conntrackFrontends.push({ protocol: proto, ip, port: Number(port) });
    walked.push({ map: SERVICE_IPS_MAP, key: e.key, target });
    entryChains.push({ frontend: frontends.length - 1, chain: target });
  }
  for (const e of elements(SERVICE_NODEPORTS_MAP)) {
    const target = e.value?.kind === "goto" || e.value?.kind === "jump" ? e.value.target : "";
    const c = parseChainName(target);
    if (!belongs(c, ref)) continue;
    const [proto = "", port = ""] = e.key;
    names.add(spnOf(c));
    frontends.push({
      servicePortName: spnOf(c),
      kind: "node port",
      destination: `node port ${port} (${proto}) on ${nodePortWhere}`,
      action: "load-balance",
      where: `map ${SERVICE_NODEPORTS_MAP} element ${e.key.join(" . ")} → ${target}`,
    });
    conntrackFrontends.push({ protocol: proto, port: Number(port) });
    walked.push({ map: SERVICE_NODEPORTS_MAP, key: e.key, target });
    entryChains.push({ frontend: frontends.length - 1, chain: target });
  }
  for (const [map, nodePort] of [
    [NO_ENDPOINT_SERVICES_MAP, false],
    [NO_ENDPOINT_NODEPORTS_MAP, true],
  ] as const) {
    for (const e of elements(map)) {
      if (!belongsByComment(e.comment, ref)) continue;
      const spn = e.comment!;
      names.add(spn);
      const reject = e.value?.kind === "goto" && e.value.target === REJECT_CHAIN;
      const [a = "", b = "", c = ""] = e.key;
      frontends.push({
        servicePortName: spn,
        kind: nodePort ? "node port" : addressKind(a, e.key.join(" . ")),
        destination: nodePort ? `node port ${b} (${a}) on ${nodePortWhere}` : `${hostPort(a, c)} (${b})`,
        action: reject ? "reject" : "drop",
        reason: reject ? "no endpoints" : "no local endpoints",
        where: `map ${map} element ${e.key.join(" . ")}`,
      });
    }
  }
  for (const e of elements(FIREWALL_IPS_MAP)) {
    const target = e.value?.kind === "goto" || e.value?.kind === "jump" ? e.value.target : "";
    const c = parseChainName(target);
    if (!belongs(c, ref)) continue;
    const rule = table.chains
      .get(target)
      ?.rules.find((r) => r.statements.some((s) => s.kind === "address" && s.negate));
    const match = rule?.statements.find((s) => s.kind === "address");
    const allowed =
      match?.kind === "address"
        ? match.value.kind === "anonymous"
          ? match.value.items
          : match.value.kind === "address"
            ? [match.value.text]
            : []
        : [];
    const [ip = "", proto = "", port = ""] = e.key;
    frontends.push({
      servicePortName: spnOf(c),
      kind: "loadbalancer IP",
      destination: `${hostPort(ip, port)} (${proto})`,
      action: "drop",
      reason: "source not allowed",
      allowedSources: allowed,
      allowedSourcesWhere: `chain ${target}`,
      where: `map ${FIREWALL_IPS_MAP} element ${e.key.join(" . ")} → ${target}${rule === undefined ? "" : ` rule ${rule.index}`}`,
      ...(rule?.counters === undefined ? {} : { counters: rule.counters }),
    });
  }

  const endpoints: EndpointView[] = [];
  const masquerade: MasqueradeView[] = [];
  const keys: (EndpointKey & { servicePortName: string })[] = [];
  const seenKeys = new Set<string>();
  for (const chain of table.chains.values()) {
    const c = parseChainName(chain.name);
    if (!belongs(c, ref)) continue;
    names.add(spnOf(c));
    for (const r of chain.rules) {
      if (
        r.statements.some(
          (s) => s.kind === "verdict" && s.verdict.kind === "jump" && s.verdict.target === MARK_MASQ_CHAIN,
        )
      )
        masquerade.push({
          where: `chain ${chain.name} rule ${r.index}: ${r.text}`,
          ...(r.counters === undefined ? {} : { counters: r.counters }),
        });
      for (const s of r.statements) {
        if (s.kind !== "numgen" || (c.prefix !== "service" && c.prefix !== "local")) continue;
        for (const entry of s.entries) {
          if (entry.verdict.kind !== "goto" && entry.verdict.kind !== "jump") continue;
          const target = entry.verdict.target;
          const d = dnatOf(table.chains.get(target));
          if (d === null) continue;
          endpoints.push({
            servicePortName: spnOf(c),
            endpoint: d.endpoint,
            share: 1 / s.mod,
            via: [
              `chain ${chain.name} rule ${r.index} (numgen ${entry.index} of ${s.mod})`,
              `chain ${target} rule ${d.rule}`,
            ],
            ...(d.counters === undefined ? {} : { counters: d.counters }),
          });
          const k = `${d.protocol} ${d.endpoint}`;
          if (!seenKeys.has(k)) {
            seenKeys.add(k);
            keys.push({ protocol: d.protocol, endpoint: d.endpoint, servicePortName: spnOf(c) });
          }
        }
      }
    }
  }
  if (names.size === 0) return null;
  return {
    table: tableLabel(table),
    view: {
      mode: "nftables",
      service: `${ref.namespace}/${ref.name}`,
      servicePortNames: [...names].sort(),
      frontends,
      endpoints,
      masquerade,
    },
    endpointKeys: keys,
    frontends: conntrackFrontends,
    walk: serviceWalk(table, walked),
    entryChains,
  };
}

/** The explanation in words: frontends, endpoints with shares, masquerade, why no traffic. */
export function formatNftExplanation(ex: NftServiceExplanation): string {
  const v = ex.view;
  const lines = [
    `service ${v.service} (nftables, ${ex.table}): ${v.servicePortNames.join(", ")}`,
    "",
    ...frontendLines(v),
  ];
  lines.push("", "the walk (nat-prerouting / nat-output jump to services):");
  if (ex.walk.length === 0) lines.push("  (no frontend load-balances)");
  for (const w of ex.walk) lines.push(`  ${"  ".repeat(w.depth)}${w.text}${countersText(w.counters)}`);
  lines.push("", ...endpointAndMasqueradeLines(v));
  return lines.join("\n");
}

// --- the commands -------------------------------------------------------------------------------

function familyName(t: NftTable): IPFamily {
  return t.family === "ip6" ? "IPv6" : "IPv4";
}

async function trace(req: InspectTraceRequest): Promise<string> {
  const family = familyOfPacket(req.packet);
  const local =
    req.localAddresses ??
    (req.dump === undefined
      ? (await readLocalAddresses(req.runner)).map((a) => a.replace(/\/\d+$/, ""))
      : []);
  const options = {
    localAddresses: local,
    origin: req.origin,
    ...(req.affinity === undefined ? {} : { affinity: req.affinity }),
  };
  let reading: NftablesReading;
  let source: string;
  if (req.dump !== undefined) {
    reading = readNftablesDump(req.dump);
    source = req.dump.origin;
  } else {
    const live = await readLiveNftablesForTrace(family, (t) => traceNftPacket(t, req.packet, options));
    reading = live.reading;
    source = `live kernel (netlink, table ${family} ${KUBE_PROXY_TABLE}: the chains and sets the packet passes, in ${live.rounds} reads)`;
  }
  const table = reading.tables.find((t) => t.family === family);
  if (table === undefined)
    throw new InputError(
      source,
      `there is no table ${family} ${KUBE_PROXY_TABLE} to trace a ${family === "ip" ? "IPv4" : "IPv6"} packet through`,
    );
  const result = traceNftPacket(table, req.packet, options);
  if (req.format === "json")
    return (
      JSON.stringify(
        {
          source,
          localAddresses: local,
          foreignTables: reading.foreign,
          ...(nftTraceToJson(result) as object),
        },
        null,
        2,
      ) + "\n"
    );
  const foreign =
    reading.foreign.length === 0
      ? ""
      : `\nforeign tables (not ours, not traced): ${reading.foreign.join(", ")}`;
  const localText = local.length === 0 ? "loopback only (pass --local-addresses)" : local.join(", ");
  return `ruleset: ${source}, local addresses: ${localText}${foreign}\n${formatNftTrace(result)}`;
}

async function explain(req: InspectExplainRequest): Promise<string> {
  const given = req.dumps ?? req.rendered;
  const live = given === undefined;
  let reading: NftablesReading;
  let source: string;
  if (given !== undefined) {
    const all = given.map((d) => readNftablesDump(d, req.service));
    reading = { tables: all.flatMap((r) => r.tables), foreign: all.flatMap((r) => r.foreign) };
    source = given.map((d) => d.origin).join(", ");
  } else {
    reading = (await readLiveNftables(undefined, { part: "service", service: req.service })).reading;
    source = LIVE_SOURCE;
  }
  let found: { table: NftTable; ex: NftServiceExplanation } | undefined;
  for (const table of reading.tables) {
    const ex = explainNftService(table, req.service);
    if (ex !== null) {
      found = { table, ex };
      break;
    }
  }
  const ref = `${req.service.namespace}/${req.service.name}${req.service.port === undefined ? "" : `:${req.service.port}`}`;
  if (found === undefined)
    throw new InputError(
      "explain",
      `${ref} is not in ${reading.tables.map(tableLabel).join(" or ") || `any table ${KUBE_PROXY_TABLE}`} (${source})`,
    );
  const { table, ex } = found;
  const flows =
    live && req.conntrack
      ? await readEndpointFlows(req.runner, familyName(table), ex.endpointKeys, ex.frontends)
      : undefined;
  const reasons = whyNoTraffic(ex.view);
  if (req.format === "json")
    return (
      JSON.stringify(
        {
          source,
          table: ex.table,
          view: ex.view,
          whyNoTraffic: reasons,
          ...(flows === undefined ? {} : { conntrack: flows }),
        },
        null,
        2,
      ) + "\n"
    );
  const lines = [
    `source: ${source}${live ? "" : " (no kernel: counters and flows unknown)"}`,
    "",
    formatNftExplanation(ex),
  ];
  if (flows !== undefined) lines.push("", ...flowLines(flows));
  lines.push("", "why no traffic:");
  if (reasons.length === 0) lines.push("  nothing in this table stops traffic to this Service");
  for (const r of reasons) lines.push(`  ${r}`);
  return lines.join("\n") + "\n";
}

export const nftablesInspector: ModeInspector = { trace, explain };

// --- the web view -------------------------------------------------------------------------------

/** `ns/name` of every Service with objects in the table (chain names, map targets, no-endpoint comments). */
export function servicesInTable(table: NftTable): ServiceRef[] {
  const found = new Map<string, ServiceRef>();
  const targets = [SERVICE_IPS_MAP, SERVICE_NODEPORTS_MAP, FIREWALL_IPS_MAP].flatMap((m) =>
    (table.sets.get(m)?.elements ?? []).map((e) =>
      e.value?.kind === "goto" || e.value?.kind === "jump" ? e.value.target : "",
    ),
  );
  // The chains, and the chains the dispatch maps send packets to (a reading of the maps only).
  for (const name of [...table.chains.keys(), ...targets]) {
    const c = parseChainName(name);
    if (c !== null) found.set(`${c.namespace}/${c.name}`, { namespace: c.namespace, name: c.name });
  }
  for (const map of [NO_ENDPOINT_SERVICES_MAP, NO_ENDPOINT_NODEPORTS_MAP]) {
    for (const e of table.sets.get(map)?.elements ?? []) {
      const m = /^([^/\s]+)\/([^:\s]+)/.exec(e.comment ?? "");
      if (m !== null) found.set(`${m[1]}/${m[2]}`, { namespace: m[1]!, name: m[2]! });
    }
  }
  return [...found.values()].sort((a, b) =>
    `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`),
  );
}

/** Service → frontends → our chains (by goto depth) → endpoints. */
function serviceGraph(table: NftTable, ex: NftServiceExplanation, family: number): WebServiceEntry["graph"] {
  const nodes: WebGraphNode[] = [
    {
      id: "service",
      kind: "service",
      label: ex.view.service,
      detail: `IPv${family} Service · ${ex.view.endpoints.length} endpoint${ex.view.endpoints.length === 1 ? "" : "s"}`,
      column: 0,
    },
  ];
  const edges: { from: string; to: string; label: string }[] = [];
  ex.view.frontends.forEach((f, i) => {
    nodes.push({
      id: `entry:${i}`,
      kind: "entry",
      label: f.kind,
      detail: `${f.destination} · ${f.action}${f.reason === undefined ? "" : ` (${f.reason})`}`,
      column: 1,
    });
    edges.push({ from: "service", to: `entry:${i}`, label: "" });
  });
  const column = new Map<string, number>();
  const visit = (chain: string, col: number, from: string, label: string): void => {
    edges.push({ from, to: `chain:${chain}`, label });
    if ((column.get(chain) ?? -1) >= col) return;
    column.set(chain, col);
    for (const r of table.chains.get(chain)?.rules ?? []) {
      for (const s of r.statements) {
        if (s.kind === "verdict" && (s.verdict.kind === "goto" || s.verdict.kind === "jump")) {
          const t = parseChainName(s.verdict.target);
          if (t !== null && (t.prefix === "service" || t.prefix === "local") && col < 6)
            visit(s.verdict.target, col + 1, `chain:${chain}`, s.verdict.kind);
        }
      }
    }
  };
  for (const e of ex.entryChains) visit(e.chain, 2, `entry:${e.frontend}`, "map element");
  for (const [chain, col] of column)
    nodes.push({
      id: `chain:${chain}`,
      kind: "chain",
      label: chain,
      detail: `${table.chains.get(chain)?.rules.length ?? 0} rules`,
      column: col,
    });
  const last = Math.max(2, ...column.values()) + 1;
  const seen = new Set<string>();
  for (const e of ex.view.endpoints) {
    const id = `endpoint:${e.endpoint}`;
    if (!seen.has(id)) {
      seen.add(id);
      const epChain = /chain (\S+) rule/.exec(e.via[1] ?? "")?.[1] ?? "";
      nodes.push({ id, kind: "endpoint", label: e.endpoint, detail: epChain, column: last });
    }
    const policy = /chain (\S+) rule/.exec(e.via[0] ?? "")?.[1];
    if (policy !== undefined) edges.push({ from: `chain:${policy}`, to: id, label: formatPercent(e.share) });
  }
  return { nodes, edges };
}

function traceForWeb(
  reading: NftablesReading,
  localAddresses: readonly string[],
  flags: Readonly<Record<string, string>>,
): unknown {
  const { packet, origin } = packetFromQuery(flags);
  const family = familyOfPacket(packet);
  const table = reading.tables.find((t) => t.family === family);
  if (table === undefined)
    throw new InputError("--dst", `no table ${family} ${KUBE_PROXY_TABLE} on this node`);
  const result = traceNftPacket(table, packet, { localAddresses, origin });
  return {
    packet,
    origin,
    table: result.table,
    truncated: false,
    outcomes: result.outcomes.map((o) => ({
      ...o,
      destination: o.dnat ?? hostPort(packet.dst, packet.dstPort),
      path: o.path.map((s) => ({
        ...s,
        kind: s.ruleNumber === undefined ? "chain" : "rule",
        table: KUBE_PROXY_TABLE,
      })),
    })),
  };
}

/** Each Service's frontends in words, from the dispatch maps (one pass over their elements). */
function frontendsByService(table: NftTable): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const add = (service: string, text: string): void => {
    const list = out.get(service);
    if (list === undefined) out.set(service, [text]);
    else list.push(text);
  };
  for (const [map, nodePort] of [
    [SERVICE_IPS_MAP, false],
    [SERVICE_NODEPORTS_MAP, true],
  ] as const) {
    for (const e of table.sets.get(map)?.elements ?? []) {
      const target = e.value?.kind === "goto" || e.value?.kind === "jump" ? e.value.target : "";
      const c = parseChainName(target);
      if (c === null) continue;
      const [a = "", b = "", port = ""] = e.key;
      add(`${c.namespace}/${c.name}`, nodePort ? `node port ${b}/${a}` : `${hostPort(a, port)}/${b}`);
    }
  }
  for (const [map, nodePort] of [
    [NO_ENDPOINT_SERVICES_MAP, false],
    [NO_ENDPOINT_NODEPORTS_MAP, true],
  ] as const) {
    for (const e of table.sets.get(map)?.elements ?? []) {
      const m = /^([^/\s]+)\/([^:\s]+)/.exec(e.comment ?? "");
      if (m === null) continue;
      const [a = "", b = "", port = ""] = e.key;
      add(`${m[1]}/${m[2]}`, nodePort ? `node port ${b}/${a}` : `${hostPort(a, port)}/${b}`);
    }
  }
  return out;
}

function webEntry(table: NftTable, ex: NftServiceExplanation, family: number): WebServiceEntry {
  const key = (chain: string, rule: number): string => `${family}/${table.name}/${chain}/${rule}`;
  return {
    family,
    service: ex.view.service,
    servicePortNames: ex.view.servicePortNames,
    endpoints: ex.view.endpoints.map((e) => ({
      servicePortName: e.servicePortName,
      endpoint: e.endpoint,
      probability: e.share,
      viaChain: /chain (\S+) rule/.exec(e.via[0] ?? "")?.[1] ?? "",
      sepChain: /chain (\S+) rule/.exec(e.via[1] ?? "")?.[1] ?? "",
      packets: e.counters?.packets ?? null,
      bytes: e.counters?.bytes ?? null,
      ...(() => {
        const m = /chain (\S+) rule (\d+)/.exec(e.via[1] ?? "");
        return m === null ? {} : { counterKey: key(m[1]!, Number(m[2])) };
      })(),
    })),
    graph: serviceGraph(table, ex, family),
    view: ex.view,
    walk: ex.walk.map((w) => ({
      depth: w.depth,
      text: w.text,
      ...(w.chain === undefined || w.rule === undefined ? {} : { counterKey: key(w.chain, w.rule) }),
      ...(w.counters === undefined ? {} : { packets: w.counters.packets, bytes: w.counters.bytes }),
    })),
  };
}

const COUNTER_TEXT = /counter packets \d+ bytes \d+/g;

/** Every Service of the tables with its frontends, sorted by name, then family. */
function serviceSummaries(reading: NftablesReading): WebServiceSummary[] {
  const services: WebServiceSummary[] = [];
  for (const table of reading.tables) {
    const family = table.family === "ip6" ? 6 : 4;
    const frontends = frontendsByService(table);
    for (const ref of servicesInTable(table)) {
      const service = `${ref.namespace}/${ref.name}`;
      services.push({ family, service, frontends: frontends.get(service) ?? [] });
    }
  }
  return services.sort((a, b) =>
    a.service === b.service ? a.family - b.family : a.service < b.service ? -1 : 1,
  );
}

/** Parts of the table one snapshot keeps (one per Service page asked for). */
const MAX_SERVICE_PARTS = 256;

/**
 * The web view's snapshot of the live tables at one generation, read only as far as asked: the
 * list comes from the dispatch maps (`list`), a Service's page from that Service's part of the
 * table, read when first asked for, and the rules, the trace and every counter from the whole
 * table, read once when first asked for. At 10,000 Services the whole table costs the kernel
 * itself tens of seconds to dump, a Service's part milliseconds.
 */
export function liveNftablesWebSnapshot(
  list: NftablesReading,
  generation: number,
  localAddresses: readonly string[],
  read: (what: ListingPart) => Promise<NftablesReading>,
  readForTrace?: (family: "ip" | "ip6", trace: (table: NftTable) => unknown) => Promise<NftablesReading>,
): ModeWebSnapshot {
  const parts = new Map<string, Promise<NftablesReading>>();
  /** The trace form's packets, each with the part of the table it passes (readLiveNftablesForTrace). */
  const traced = new Map<string, NftablesReading>();
  const traceKey = (flags: Readonly<Record<string, string>>): string =>
    JSON.stringify(Object.entries(flags).sort());
  let whole: Promise<ModeWebSnapshot> | undefined;
  let wholeDone: ModeWebSnapshot | undefined;
  const done = new Map<string, NftablesReading>();
  const needWhole = (): ModeWebSnapshot => {
    if (wholeDone === undefined) throw new Error("the whole table was not read for this request");
    return wholeDone;
  };
  return {
    version: `generation ${generation}`,
    services: serviceSummaries(list),
    service(family, namespace, name) {
      if (wholeDone !== undefined) return wholeDone.service(family, namespace, name);
      const table = done
        .get(`${namespace}/${name}`)
        ?.tables.find((t) => (t.family === "ip6" ? 6 : 4) === family);
      const ex = table === undefined ? null : explainNftService(table, { namespace, name });
      return table === undefined || ex === null ? undefined : webEntry(table, ex, family);
    },
    columns: ["num", "pkts", "bytes", "rule"],
    rules: (q, max) => needWhole().rules(q, max),
    counters(keys) {
      if (wholeDone !== undefined || keys === undefined) return needWhole().counters(keys);
      const out: Record<string, readonly [number, number]> = {};
      for (const part of done.values())
        for (const table of part.tables) {
          const family = table.family === "ip6" ? 6 : 4;
          for (const chain of table.chains.values())
            for (const r of chain.rules) {
              const key = `${family}/${table.name}/${chain.name}/${r.index}`;
              if (r.counters !== undefined && keys.has(key))
                out[key] = [r.counters.packets, r.counters.bytes];
            }
        }
      return out;
    },
    trace(flags) {
      const part = wholeDone === undefined ? traced.get(traceKey(flags)) : undefined;
      return part === undefined ? needWhole().trace(flags) : traceForWeb(part, localAddresses, flags);
    },
    async prepare(need) {
      if (need.kind === "trace") {
        if (wholeDone !== undefined) return;
        if (readForTrace === undefined) return this.prepare!({ kind: "table" });
        const { packet, origin } = packetFromQuery(need.flags);
        const options = { localAddresses, origin };
        const part = await readForTrace(familyOfPacket(packet), (t) => traceNftPacket(t, packet, options));
        if (traced.size >= MAX_SERVICE_PARTS) traced.clear();
        traced.set(traceKey(need.flags), part);
        return;
      }
      if (need.kind === "table") {
        whole ??= read({ part: "all" }).then((r) => nftablesWebSnapshot(r, localAddresses));
        wholeDone = await whole;
        return;
      }
      if (wholeDone !== undefined) return;
      const key = `${need.namespace}/${need.name}`;
      let part = parts.get(key);
      if (part === undefined) {
        if (parts.size >= MAX_SERVICE_PARTS) {
          parts.clear();
          done.clear();
        }
        part = read({ part: "service", service: { namespace: need.namespace, name: need.name } });
        parts.set(key, part);
        part.catch(() => parts.delete(key));
      }
      done.set(key, await part);
    },
  };
}

/**
 * What the web view shows of our tables. The Service list and the version are built once per
 * reading; a Service's entry, the rule rows and the counters only when asked for.
 */
export function nftablesWebSnapshot(
  reading: NftablesReading,
  localAddresses: readonly string[],
): ModeWebSnapshot {
  const hash = createHash("sha256");
  for (const table of reading.tables) {
    const family = table.family === "ip6" ? 6 : 4;
    for (const chain of table.chains.values()) {
      hash.update(`${family} chain ${chain.name}\n`);
      // The rule's text without its counters: moving counters are no change of the rules.
      for (const r of chain.rules) hash.update(`${r.text.replace(COUNTER_TEXT, "counter")}\n`);
    }
    for (const set of table.sets.values())
      for (const e of set.elements) hash.update(`${family} ${set.name} ${JSON.stringify(e)}\n`);
  }
  const services = serviceSummaries(reading);
  let rows: WebRuleRow[] | undefined;
  let counters: Record<string, readonly [number, number]> | undefined;
  const allRows = (): WebRuleRow[] => {
    if (rows !== undefined) return rows;
    rows = [];
    counters = {};
    for (const table of reading.tables) {
      const family = table.family === "ip6" ? 6 : 4;
      for (const chain of table.chains.values()) {
        for (const r of chain.rules) {
          const key = `${family}/${table.name}/${chain.name}/${r.index}`;
          rows.push({
            key,
            family,
            table: `${table.family} ${table.name}`,
            chain: chain.name,
            num: r.index,
            pkts: r.counters === undefined ? "" : String(r.counters.packets),
            bytes: r.counters === undefined ? "" : String(r.counters.bytes),
            rule: r.text,
          });
          if (r.counters !== undefined) counters[key] = [r.counters.packets, r.counters.bytes];
        }
      }
    }
    return rows;
  };
  return {
    version: hash.digest("hex").slice(0, 16),
    services,
    service(family, namespace, name) {
      const table = reading.tables.find((t) => (t.family === "ip6" ? 6 : 4) === family);
      const ex = table === undefined ? null : explainNftService(table, { namespace, name });
      return table === undefined || ex === null ? undefined : webEntry(table, ex, family);
    },
    columns: ["num", "pkts", "bytes", "rule"],
    rules(q, max) {
      const needle = q.trim().toLowerCase();
      const hits = allRows().filter(
        (r) => needle === "" || Object.values(r).some((v) => String(v).toLowerCase().includes(needle)),
      );
      return { total: hits.length, rows: hits.slice(0, max) };
    },
    counters(keys) {
      allRows();
      const all = counters ?? {};
      if (keys === undefined) return all;
      const out: Record<string, readonly [number, number]> = {};
      for (const k of keys) {
        const c = all[k];
        if (c !== undefined) out[k] = c;
      }
      return out;
    },
    trace: (flags) => traceForWeb(reading, localAddresses, flags),
  };
}
