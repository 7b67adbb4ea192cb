/**
 * What a read of the kernel's table (./netlink/decode.ts) means to the writer and to the drift
 * check (pure). Against the table the proxy would write now (./render.ts) it gives
 * - what the table holds in the writer's own terms (`KernelTable`: chains, affinity sets, the
 *   elements of the fixed sets and maps), so that a full sync over a table the writer does not
 *   know (a restart, a failure, the hourly resync) changes only what differs, in bounded chunks;
 * - the endpoint chains that already hold exactly their rules (a start-up sync skips them, as
 *   upstream's does for the endpoint chains it finds);
 * - the drift, per Service: chains, sets and maps missing, extra or changed (rules or elements).
 *
 * Rules are compared by meaning: the proxy's rule text goes through the same compiler the
 * netlink writer uses, and both sides become `ruleKey` lines. Ours are the table's fixed
 * objects and the per-Service chains and sets (by name); any other chain or set in our table,
 * and every other table of the family, is foreign: reported, never drift, never touched.
 */
import type { IPFamily } from "../../ip.ts";
import { formatIP, parseIPSloppy } from "../../ip.ts";
import {
  objectDifferences,
  type DriftReport,
  type ForeignObject,
  type ObjectDrift,
  type ServiceDrift,
} from "../../inspect/drift.ts";
import {
  BASE_CHAINS,
  isAffinitySetName,
  isServiceChainName,
  KUBE_PROXY_TABLE,
  NODEPORT_IPS_SET,
  PREFIX_ENDPOINT,
  TABLE_COMMENT,
} from "./names.ts";
import { ruleKey, type TableDump } from "./netlink/decode.ts";
import { compileRule, type IfIndexResolver } from "./netlink/rule.ts";
import { elementSignature, type ExistingObjects, type KernelTable } from "./transactions.ts";
import type { NftablesRuleset, NftChain, NftContainer, NftElement } from "./types.ts";

/** What one read of the kernel tells the writer and the drift check. */
export interface TableReading {
  /** The table does not exist (a first start on this node). */
  readonly absent: boolean;
  readonly existing: ExistingObjects;
  readonly kernel: KernelTable;
  /** Endpoint chains that hold exactly the rules the proxy would write. */
  readonly unchangedChains: ReadonlySet<string>;
  /** The other per-Service chains (`service-`, `local-`, `external-`, `firewall-`) that do. */
  readonly unchangedServiceChains: ReadonlySet<string>;
  readonly drift: DriftReport;
}

export interface ReadOptions {
  readonly ifIndex: IfIndexResolver;
  /** Chains flushed by the writer and waiting to be deleted: empty and present, not drift. */
  readonly pendingStaleChains?: ReadonlySet<string>;
}

/** `ns/name` from a per-Service chain or set name (`service-HASH-ns/name/tcp/p80`). */
function serviceOfName(name: string): string | null {
  const m = /^[a-z]+-[A-Z0-9]{8}-([^/]+)\/([^/]+)\//.exec(name);
  return m === null ? null : `${m[1]}/${m[2]}`;
}

/** `ns/name` from an element's comment (`ns/name:port`) or the chain its verdict names. */
function serviceOfElement(e: NftElement): string | null {
  const m = e.comment === undefined ? null : /^([^/\s]+)\/([^:\s]+)/.exec(e.comment);
  if (m !== null) return `${m[1]}/${m[2]}`;
  const chain = e.value === undefined ? null : /^(?:goto|jump) (\S+)$/.exec(e.value);
  return chain === null ? null : serviceOfName(chain[1]!);
}

/** A key as the kernel prints it back: addresses in canonical form. */
function canonicalKey(key: string): string {
  return key
    .split(" . ")
    .map((part) => {
      const ip = parseIPSloppy(part);
      return ip === null ? part : formatIP(ip.bytes);
    })
    .join(" . ");
}

export function elementText(e: NftElement): string {
  const comment = e.comment === undefined ? "" : ` comment ${JSON.stringify(e.comment)}`;
  const value = e.value === undefined ? "" : ` : ${e.value}`;
  return `${e.key}${comment}${value}`;
}

interface IntendedChain {
  readonly chain: NftChain;
  readonly service: string | null;
  readonly hook?: { readonly type: string; readonly hook: string; readonly priority: number };
}

/** Multiset difference of two key lists. */
function keyDiff(want: readonly string[], have: readonly string[]): { missing: number[]; extra: number[] } {
  const left = new Map<string, number>();
  for (const k of have) left.set(k, (left.get(k) ?? 0) + 1);
  const missing: number[] = [];
  want.forEach((k, i) => {
    const n = left.get(k) ?? 0;
    if (n > 0) left.set(k, n - 1);
    else missing.push(i);
  });
  const extra: number[] = [];
  have.forEach((k, i) => {
    const n = left.get(k) ?? 0;
    if (n > 0) {
      left.set(k, n - 1);
      extra.push(i);
    }
  });
  return { missing, extra };
}

class DriftBuilder {
  private readonly byService = new Map<string | null, Map<string, ObjectDrift>>();
  readonly foreign: ForeignObject[] = [];

  constructor(private readonly table: string) {}

  add(service: string | null, drift: Omit<ObjectDrift, "table">): void {
    let objects = this.byService.get(service);
    if (objects === undefined) this.byService.set(service, (objects = new Map()));
    const key = `${drift.kind} ${drift.name}`;
    const had = objects.get(key);
    objects.set(
      key,
      had === undefined
        ? { ...drift, table: this.table }
        : {
            ...had,
            missing: [...had.missing, ...drift.missing],
            extra: [...had.extra, ...drift.extra],
            reordered: had.reordered || drift.reordered,
          },
    );
  }

  report(family: IPFamily): DriftReport {
    const services: ServiceDrift[] = [...this.byService]
      .sort(([a], [b]) => (a === null ? -1 : b === null ? 1 : a.localeCompare(b)))
      .map(([service, objects]) => ({ service, objects: [...objects.values()] }));
    const differences = services.reduce(
      (n, s) => n + s.objects.reduce((m, o) => m + objectDifferences(o), 0),
      0,
    );
    return {
      mode: "nftables",
      family,
      inSync: differences === 0,
      differences,
      services,
      foreign: this.foreign,
    };
  }
}

/** Compares one read of the kernel with the table the proxy would write now; pure. */
export function readTable(ruleset: NftablesRuleset, dump: TableDump, options: ReadOptions): TableReading {
  const family: IPFamily = ruleset.family === "ip" ? "IPv4" : "IPv6";
  const tableName = `${ruleset.family} ${KUBE_PROXY_TABLE}`;
  const drift = new DriftBuilder(tableName);
  for (const t of dump.otherTables)
    drift.foreign.push({ kind: "table", table: `${ruleset.family} ${t}`, name: t });
  const pending = options.pendingStaleChains ?? new Set<string>();

  if (!dump.exists) {
    drift.add(null, {
      kind: "table",
      name: tableName,
      change: "missing",
      missing: [],
      extra: [],
      reordered: false,
    });
  } else if (dump.comment !== TABLE_COMMENT) {
    drift.add(null, {
      kind: "table",
      name: tableName,
      change: "changed",
      missing: [`comment ${JSON.stringify(TABLE_COMMENT)}`],
      extra: dump.comment === null ? [] : [`comment ${JSON.stringify(dump.comment)}`],
      reordered: false,
    });
  }

  // A first start reads an absent table: nothing in it to compare (at 10,000 Services the maps
  // of every intended chain and element below were 15 MB of garbage just before the first sync).
  if (!dump.exists && dump.chains.length === 0 && dump.sets.length === 0)
    return {
      absent: true,
      existing: { chains: [], sets: [] },
      kernel: { chains: new Set(), affinitySets: new Set(), elements: new Map() },
      unchangedChains: new Set(),
      unchangedServiceChains: new Set(),
      drift: drift.report(family),
    };

  // The intended objects, by name. Their rules are compiled only where the kernel holds the
  // chain (a first start reads an absent table: nothing to compile), and dropped once compared.
  const chains = new Map<string, IntendedChain>();
  const compileKeys = (c: NftChain): string[] =>
    c.rules.map((r) => ruleKey(compileRule(c.name, r, ruleset.family, options.ifIndex)));
  for (const c of ruleset.baseChains) {
    const base = BASE_CHAINS.find((b) => b.name === c.name);
    const hook =
      base === undefined ? {} : { hook: { type: base.type, hook: base.hook, priority: base.priority } };
    chains.set(c.name, { chain: c, service: null, ...hook });
  }
  for (const c of ruleset.fixedChains) chains.set(c.name, { chain: c, service: null });
  const affinity = new Map<string, string>();
  for (const svc of ruleset.services) {
    for (const c of svc.chains) chains.set(c.name, { chain: c, service: svc.service });
    for (const s of svc.affinitySets) affinity.set(s.name, svc.service);
  }
  const containers = new Map<string, NftContainer>();
  for (const c of [...ruleset.containers, ruleset.nodePortIPsSet]) containers.set(c.name, c);
  const wantElements = new Map<string, Map<string, { element: NftElement; service: string | null }>>();
  for (const c of ruleset.containers) wantElements.set(c.name, new Map());
  for (const svc of ruleset.services)
    for (const e of svc.elements)
      wantElements.get(e.container)?.set(canonicalKey(e.key), { element: e, service: svc.service });
  if (ruleset.nodePortIPs !== null)
    wantElements.set(
      NODEPORT_IPS_SET,
      new Map(
        ruleset.nodePortIPs.map((ip) => [
          canonicalKey(ip),
          { element: { container: NODEPORT_IPS_SET, key: ip }, service: null },
        ]),
      ),
    );

  // Chains.
  const unchangedChains = new Set<string>();
  const unchangedServiceChains = new Set<string>();
  const kernelChains = new Set<string>();
  for (const have of dump.chains) {
    kernelChains.add(have.name);
    const want = chains.get(have.name);
    if (want === undefined) {
      if (!isServiceChainName(have.name)) {
        drift.foreign.push({ kind: "chain", table: tableName, name: have.name });
        continue;
      }
      if (pending.has(have.name) && have.rules.length === 0) continue;
      drift.add(serviceOfName(have.name), {
        kind: "chain",
        name: have.name,
        change: "extra",
        missing: [],
        extra: [...have.rules],
        reordered: false,
      });
      continue;
    }
    const hookMissing: string[] = [];
    const hookExtra: string[] = [];
    const hookText = (h: { type: string; hook: string; priority: number }) =>
      `type ${h.type} hook ${h.hook} priority ${h.priority}`;
    if (want.hook !== undefined && (have.hook === undefined || hookText(have.hook) !== hookText(want.hook))) {
      hookMissing.push(hookText(want.hook));
      if (have.hook !== undefined) hookExtra.push(hookText(have.hook));
    }
    const keys = compileKeys(want.chain);
    const { missing, extra } = keyDiff(keys, have.rules);
    const sameOrder = keys.length === have.rules.length && keys.every((k, i) => k === have.rules[i]);
    if (missing.length + extra.length + hookMissing.length > 0 || !sameOrder) {
      drift.add(want.service, {
        kind: "chain",
        name: have.name,
        change: "changed",
        missing: [...hookMissing, ...missing.map((i) => want.chain.rules[i]!)],
        extra: [...hookExtra, ...extra.map((i) => have.rules[i]!)],
        reordered: missing.length + extra.length === 0 && !sameOrder,
      });
    } else if (have.name.startsWith(PREFIX_ENDPOINT)) unchangedChains.add(have.name);
    else if (isServiceChainName(have.name)) unchangedServiceChains.add(have.name);
  }
  for (const [name, want] of chains)
    if (!kernelChains.has(name) && dump.exists)
      drift.add(want.service, {
        kind: "chain",
        name,
        change: "missing",
        missing: [...want.chain.rules],
        extra: [],
        reordered: false,
      });

  // Sets and maps.
  const kernelSets = new Set<string>();
  const elements = new Map<string, Map<string, string>>();
  for (const have of dump.sets) {
    kernelSets.add(have.name);
    if (isAffinitySetName(have.name)) {
      if (!affinity.has(have.name))
        drift.add(serviceOfName(have.name), {
          kind: "set",
          name: have.name,
          change: "extra",
          missing: [],
          extra: [],
          reordered: false,
        });
      continue;
    }
    const want = containers.get(have.name);
    if (want === undefined || (have.name === NODEPORT_IPS_SET && ruleset.nodePortIPs === null)) {
      if (want === undefined) drift.foreign.push({ kind: have.kind, table: tableName, name: have.name });
      else
        drift.add(null, {
          kind: have.kind,
          name: have.name,
          change: "extra",
          missing: [],
          extra: [],
          reordered: false,
        });
      continue;
    }
    const wantType = want.type;
    if (have.type !== wantType || have.kind !== want.kind) {
      drift.add(null, {
        kind: want.kind,
        name: have.name,
        change: "changed",
        missing: [`type ${wantType}`],
        extra: [`type ${have.type ?? "(unknown)"}`],
        reordered: false,
      });
      continue;
    }
    const wantMap =
      wantElements.get(have.name) ?? new Map<string, { element: NftElement; service: string | null }>();
    const held = new Map<string, string>();
    const seen = new Set<string>();
    for (const e of have.elements ?? []) {
      const key = canonicalKey(e.key);
      const w = wantMap.get(key);
      // The writer's keys are the renderer's text: keep it where the kernel's element is ours.
      held.set(w?.element.key ?? e.key, elementSignature(e));
      seen.add(key);
      if (w !== undefined && elementSignature(w.element) === elementSignature(e)) continue;
      const owner = w?.service ?? serviceOfElement(e);
      drift.add(owner, {
        kind: want.kind,
        name: have.name,
        change: "changed",
        missing: w === undefined ? [] : [elementText(w.element)],
        extra: [elementText(e)],
        reordered: false,
      });
    }
    for (const [key, w] of wantMap)
      if (!seen.has(key))
        drift.add(w.service, {
          kind: want.kind,
          name: have.name,
          change: "changed",
          missing: [elementText(w.element)],
          extra: [],
          reordered: false,
        });
    if (have.name !== NODEPORT_IPS_SET) elements.set(have.name, held);
  }
  if (dump.exists) {
    for (const c of containers.values()) {
      if (kernelSets.has(c.name) || (c.name === NODEPORT_IPS_SET && ruleset.nodePortIPs === null)) continue;
      const want = [...(wantElements.get(c.name)?.values() ?? [])];
      drift.add(null, {
        kind: c.kind,
        name: c.name,
        change: "missing",
        missing: want.filter((w) => w.service === null).map((w) => elementText(w.element)),
        extra: [],
        reordered: false,
      });
      for (const w of want)
        if (w.service !== null)
          drift.add(w.service, {
            kind: c.kind,
            name: c.name,
            change: "changed",
            missing: [elementText(w.element)],
            extra: [],
            reordered: false,
          });
    }
    for (const [name, service] of affinity)
      if (!kernelSets.has(name))
        drift.add(service, {
          kind: "set",
          name,
          change: "missing",
          missing: [],
          extra: [],
          reordered: false,
        });
  }

  const chainNames = [...kernelChains].filter(isServiceChainName);
  const setNames = [...kernelSets].filter(isAffinitySetName);
  return {
    absent: !dump.exists,
    existing: { chains: chainNames, sets: setNames },
    kernel: { chains: new Set(chainNames), affinitySets: new Set(setNames), elements },
    unchangedChains,
    unchangedServiceChains,
    drift: drift.report(family),
  };
}
