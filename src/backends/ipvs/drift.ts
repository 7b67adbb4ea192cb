/**
 * ipvs mode's drift check: what the kernel holds (IPVS virtual and real servers, the ipsets'
 * members, the iptables rules of the mode's chains, the kube-ipvs0 addresses) against what a
 * full sync would write now, per Service. Pure.
 *
 * Ours, and so drift when they differ: every virtual server of the family that
 * `--ipvs-exclude-cidrs` does not cover (a full sync deletes the ones it does not want, as
 * upstream's `cleanLegacyService`), the sets of upstream's list for the family, the mode's
 * chains and its jump rules, kube-ipvs0's addresses of the family. Foreign (reported, never
 * drift, never touched): excluded virtual servers, sets that are not ipvs mode's, other
 * chains and rules. A real server at weight 0 waiting for its connections to end (the
 * graceful-termination list) is not drift either.
 */
import { cidrContainsSloppy, familyOf, type IPFamily } from "../../ip.ts";
import {
  objectDifferences,
  type DriftReport,
  type ForeignObject,
  type ObjectDrift,
  type ServiceDrift,
} from "../../inspect/drift.ts";
import type { IpvsServiceEntry } from "../../kernel/ipvs.ts";
import { jumpRuleArgs, quoteRuleArg } from "../../kernel/iptables.ts";
import { compareRulesets } from "../../netfilter/drift.ts";
import { parseIptablesSave } from "../../netfilter/iptables-save.ts";
import { allIpsetNames, DUMMY_DEVICE, IPVS_CHAINS, IPVS_JUMP_CHAINS } from "./names.ts";
import { addServiceLine, gracefulKey, realServerLine } from "./plan.ts";
import { realServerKey, virtualServerKey } from "./render.ts";
import type { IpvsDesiredState, RealServer, VirtualServer } from "./types.ts";

/** What the proxy would leave in the kernel for one family. */
export interface IpvsIntended {
  readonly virtualServers: readonly {
    /** `ns/name`; null when unknown. */
    readonly service: string | null;
    readonly vs: VirtualServer;
    readonly realServers: readonly RealServer[];
  }[];
  readonly ipsets: readonly { readonly name: string; readonly entries: readonly string[] }[];
  /** iptables-save text of the mode's chains and its jump rules in the built-in chains. */
  readonly iptables: string;
  readonly bindAddresses: readonly string[];
}

/** What the kernel holds, as the writer's and the see-inside tools' readers read it. */
export interface IpvsKernelHeld {
  /** Every virtual server (all families; foreign ones too). */
  readonly virtualServers: readonly IpvsServiceEntry[];
  readonly ipsets: readonly { readonly name: string; readonly entries: readonly string[] }[];
  /** `iptables-save` of the family (every table). */
  readonly iptables: string;
  /** kube-ipvs0's addresses of the family; null when they were not read. */
  readonly boundAddresses: readonly string[] | null;
}

export interface IpvsDriftOptions {
  readonly family: IPFamily;
  readonly excludeCIDRs: readonly string[];
  /**
   * Real servers draining (`gracefulKey`), not drift: the writer's list, or "weight-zero" when
   * the list is unknown (`kube-proxy-ts diff`): then any TCP real server at weight 0 is taken
   * as draining.
   */
  readonly draining: ReadonlySet<string> | "weight-zero";
}

/** The jump rules of `IPVS_JUMP_CHAINS` merged into a restore payload, as iptables-save shows them. */
export function withJumpRules(payload: string): string {
  const out: string[] = [];
  let rows: typeof IPVS_JUMP_CHAINS = [];
  for (const line of payload.split("\n")) {
    // The rules go last: a jump's target parses as a chain only once the chain is declared.
    if (line === "COMMIT")
      for (const r of rows) out.push(`-A ${r.srcChain} ${jumpRuleArgs(r).map(quoteRuleArg).join(" ")}`);
    out.push(line);
    const table = /^\*(\S+)$/.exec(line)?.[1];
    if (table === undefined) continue;
    rows = IPVS_JUMP_CHAINS.filter((r) => r.table === table);
    for (const chain of new Set(rows.map((r) => r.srcChain))) out.push(`:${chain} ACCEPT [0:0]`);
  }
  return out.join("\n");
}

/** The rendered desired state as the drift check compares it. */
export function intendedOf(desired: IpvsDesiredState): IpvsIntended {
  return {
    virtualServers: desired.virtualServers.map((d) => ({
      service: d.service,
      vs: d.vs,
      realServers: d.realServers,
    })),
    ipsets: desired.ipsets,
    iptables: withJumpRules(desired.iptables),
    bindAddresses: desired.bindAddresses,
  };
}

/** ipset prints a host network without its prefix length: compare both spellings as one. */
const normaliseEntry = (entry: string): string => entry.replace(/\/(32|128)$/, "");

const rsLine = (vs: VirtualServer | IpvsServiceEntry, rs: RealServer): string =>
  realServerLine(vs, { address: rs.address, port: rs.port, weight: rs.weight });

function sameService(vs: VirtualServer, cur: IpvsServiceEntry): boolean {
  return (
    vs.scheduler === cur.scheduler &&
    vs.persistence === cur.persistence &&
    [...vs.schedFlags].sort().join(",") === [...cur.schedFlags].sort().join(",")
  );
}

class Builder {
  readonly byService = new Map<string | null, Map<string, ObjectDrift>>();

  add(service: string | null, o: ObjectDrift): void {
    let objects = this.byService.get(service);
    if (objects === undefined) this.byService.set(service, (objects = new Map()));
    const key = `${o.kind} ${o.table} ${o.name}`;
    const had = objects.get(key);
    objects.set(
      key,
      had === undefined
        ? o
        : { ...had, missing: [...had.missing, ...o.missing], extra: [...had.extra, ...o.extra] },
    );
  }
}

export function ipvsDrift(
  intended: IpvsIntended,
  kernel: IpvsKernelHeld,
  options: IpvsDriftOptions,
): DriftReport {
  const { family } = options;
  const b = new Builder();
  const foreign: ForeignObject[] = [];

  // Which Service an address (or a NodePort) is, for the kernel's objects that carry no name.
  const byAddress = new Map<string, string>();
  const byNodePort = new Map<string, string>();
  for (const d of intended.virtualServers) {
    if (d.service === null) continue;
    byAddress.set(d.vs.address, d.service);
    byNodePort.set(`${d.vs.protocol.toLowerCase()}:${d.vs.port}`, d.service);
  }
  const serviceOfEntry = (entry: string): string | null => {
    const first = entry.split(",")[0]!.replace(/\/\d+$/, "");
    const s = byAddress.get(first);
    if (s !== undefined) return s;
    const port = /^(?:(\w+):)?(\d+)$/.exec(entry);
    if (port === null) return null;
    return byNodePort.get(`${port[1] ?? "tcp"}:${port[2]}`) ?? byNodePort.get(`udp:${port[2]}`) ?? null;
  };

  // IPVS: virtual servers with their real servers.
  const current = new Map<string, IpvsServiceEntry>();
  for (const e of kernel.virtualServers) current.set(virtualServerKey(e), e);
  const wanted = new Set<string>();
  const isDraining = (vs: IpvsServiceEntry, rs: IpvsServiceEntry["realServers"][number]): boolean =>
    options.draining === "weight-zero"
      ? vs.protocol === "TCP" && rs.weight === 0
      : options.draining.has(gracefulKey({ vs, rs }));
  for (const d of intended.virtualServers) {
    const key = virtualServerKey(d.vs);
    if (wanted.has(key)) continue;
    wanted.add(key);
    const cur = current.get(key);
    const base = { kind: "virtual-server", table: "ipvs", name: key, reordered: false };
    if (cur === undefined) {
      b.add(d.service, {
        ...base,
        change: "missing",
        missing: [addServiceLine(d.vs), ...d.realServers.map((rs) => rsLine(d.vs, rs))],
        extra: [],
      });
      continue;
    }
    const missing: string[] = [];
    const extra: string[] = [];
    if (!sameService(d.vs, cur)) {
      missing.push(addServiceLine(d.vs));
      extra.push(addServiceLine(cur));
    }
    const have = new Map(cur.realServers.map((rs) => [realServerKey(rs), rs]));
    const want = new Set<string>();
    for (const rs of d.realServers) {
      want.add(realServerKey(rs));
      const h = have.get(realServerKey(rs));
      if (h === undefined) missing.push(rsLine(d.vs, rs));
      else if (h.weight !== rs.weight) {
        missing.push(rsLine(d.vs, rs));
        extra.push(rsLine(cur, h));
      }
    }
    for (const [k, h] of have) if (!want.has(k) && !isDraining(cur, h)) extra.push(rsLine(cur, h));
    if (missing.length + extra.length > 0) b.add(d.service, { ...base, change: "changed", missing, extra });
  }
  for (const [key, cur] of current) {
    if (wanted.has(key) || familyOf(cur.address) !== family) continue;
    if (options.excludeCIDRs.some((c) => cidrContainsSloppy(c, cur.address))) {
      foreign.push({ kind: "virtual-server", table: "ipvs", name: key });
      continue;
    }
    b.add(byAddress.get(cur.address) ?? null, {
      kind: "virtual-server",
      table: "ipvs",
      name: key,
      change: "extra",
      missing: [],
      extra: [addServiceLine(cur), ...cur.realServers.map((rs) => rsLine(cur, rs))],
      reordered: false,
    });
  }

  // ipsets: members per Service (by the address or NodePort they hold).
  const held = new Map(kernel.ipsets.map((s) => [s.name, s]));
  const ours = new Set(allIpsetNames());
  const intendedSets = new Set(intended.ipsets.map((s) => s.name));
  for (const set of intended.ipsets) {
    const h = held.get(set.name);
    const base = { kind: "ipset", table: "ipset", name: set.name, reordered: false };
    if (h === undefined) {
      b.add(null, { ...base, change: "missing", missing: [], extra: [] });
      for (const e of set.entries)
        b.add(serviceOfEntry(e), { ...base, change: "missing", missing: [e], extra: [] });
      continue;
    }
    const have = new Set(h.entries.map(normaliseEntry));
    const want = new Set(set.entries.map(normaliseEntry));
    for (const e of set.entries)
      if (!have.has(normaliseEntry(e)))
        b.add(serviceOfEntry(e), { ...base, change: "changed", missing: [e], extra: [] });
    for (const e of h.entries)
      if (!want.has(normaliseEntry(e)))
        b.add(serviceOfEntry(e), { ...base, change: "changed", missing: [], extra: [e] });
  }
  for (const s of kernel.ipsets)
    // The other family's sets (and upstream's legacy names) are ipvs mode's too, not this family's.
    if (!intendedSets.has(s.name) && !ours.has(s.name))
      foreign.push({ kind: "ipset", table: "ipset", name: s.name });

  // iptables: the mode's chains and jump rules, compared as iptables mode compares its own.
  const modeChains = new Set([...IPVS_CHAINS.nat, ...IPVS_CHAINS.filter]);
  const rules = compareRulesets(
    parseIptablesSave(intended.iptables, { family }),
    parseIptablesSave(kernel.iptables, { family }),
    { mode: "ipvs", staleChain: (name) => modeChains.has(name) },
  );
  for (const s of rules.services) for (const o of s.objects) b.add(s.service, o);
  foreign.push(...rules.foreign);

  // kube-ipvs0's addresses.
  if (kernel.boundAddresses !== null) {
    const bound = new Set(kernel.boundAddresses);
    const want = new Set(intended.bindAddresses);
    const base = { kind: "interface", table: "ip", name: DUMMY_DEVICE, reordered: false } as const;
    for (const a of intended.bindAddresses)
      if (!bound.has(a))
        b.add(byAddress.get(a) ?? null, { ...base, change: "changed", missing: [a], extra: [] });
    for (const a of kernel.boundAddresses)
      if (!want.has(a))
        b.add(byAddress.get(a) ?? null, { ...base, change: "changed", missing: [], extra: [a] });
  }

  const services: ServiceDrift[] = [...b.byService]
    .sort(([a], [c]) => (a === null ? -1 : c === null ? 1 : a.localeCompare(c)))
    .map(([service, objects]) => ({ service, objects: [...objects.values()] }));
  const differences = services.reduce(
    (n, s) => n + s.objects.reduce((m, o) => m + objectDifferences(o), 0),
    0,
  );
  return { mode: "ipvs", family, inSync: differences === 0, differences, services, foreign };
}
