/**
 * ipvs mode's see-inside tools: the reader of the node (live, or a dump), the tracer run over it
 * and the explainer that turns one Service's virtual servers into the mode-neutral ServiceView
 * (src/inspect/model.ts).
 *
 * A dump (docs/ipvs-mode.md, "Reading a node") is one text holding, in any order:
 * `ipvsadm -Ln --exact` (virtual and real servers, weights, connection counts),
 * `ipvsadm -Ln --exact --stats` (packets and bytes), `ipset save` or `ipset list`, `iptables-save -c` of one
 * family, `#address IP` lines (the node's addresses) and `#service-port NS/NAME[:PORT] KIND
 * PROTO:IP:PORT` lines (IPVS holds no names: these say which Service port a virtual server
 * serves). Each tool's output may also come with its own prefix (`#ipvsadm `, `#ipvsadm-stats `,
 * `#ipset `), which is how the live reader writes it for the web view, so that the iptables part
 * stays a valid iptables-save text. `render --proxy-mode ipvs` output is a dump too (its
 * sections are recognised): what a sync would write, named, without counters.
 */
import { createHash } from "node:crypto";
import { InputError } from "../../errors.ts";
import type { IPFamily } from "../../ip.ts";
import { familyOf, parseIP } from "../../ip.ts";
import { readEndpointFlows } from "../../kernel/conntrack-count.ts";
import type { EndpointKey, Frontend } from "../../kernel/conntrack-count.ts";
import { detectBackend } from "../../kernel/detect.ts";
import type { Runner } from "../../kernel/exec.ts";
import { localAddresses as readLocalAddresses } from "../../kernel/ip.ts";
import { Iptables, type IptablesInterface } from "../../kernel/iptables.ts";
import { Ipset, parseIpsetList, parseIpsetSave, type IpsetSaved } from "../../kernel/ipset.ts";
import {
  parseIpvsadmList,
  parseIpvsadmStats,
  splitHostPort,
  type IpvsServiceEntry,
  type IpvsServiceStats,
  type IpvsStats,
} from "../../kernel/ipvs.ts";
import {
  whyNoTraffic,
  type EndpointView,
  type FrontendKind,
  type FrontendView,
  type MasqueradeView,
  type ServiceView,
} from "../../inspect/model.ts";
import type {
  InspectionSource,
  ModeWebSnapshot,
  WebGraphNode,
  WebRuleRow,
  WebServiceEntry,
  WebServiceSummary,
} from "../../inspect/types.ts";
import { parseIptablesSave } from "../../netfilter/iptables-save.ts";
import {
  hostPort,
  realServerShares,
  setContains,
  virtualServerLabel,
  type IpsetModel,
} from "../../netfilter/ipvs.ts";
import type { Rule, Ruleset } from "../../netfilter/model.ts";
import { endpointAndMasqueradeLines, flowLines, frontendLines } from "../../netfilter/view-text.ts";
import {
  formatPercent,
  formatTrace,
  packetFromQuery,
  tracePacket,
  traceToJson,
  type TracePacket,
  type TraceResult,
} from "../../netfilter/tracer.ts";
import type { InspectDump, InspectExplainRequest, InspectTraceRequest, ModeInspector } from "../types.ts";
import { SERVICE_PORTS_SECTION } from "./format.ts";
import { ipsetName, KUBE_MARK_MASQ, type SetKey } from "./names.ts";

/** One `#service-port` line: which Service port a virtual server serves. */
export interface ServicePortBinding {
  /** `ns/name:port` (upstream ServicePortName.String()). */
  readonly servicePort: string;
  /** ClusterIP, ExternalIP, LoadBalancer, NodePort. */
  readonly kind: string;
  readonly protocol: "TCP" | "UDP" | "SCTP";
  readonly address: string;
  readonly port: number;
}

/** What a dump or the live node says, parsed. */
export interface IpvsReading {
  readonly virtualServers: readonly IpvsServiceEntry[];
  /** By `virtualServerLabel`; empty without `--stats` output. */
  readonly stats: ReadonlyMap<string, IpvsServiceStats>;
  readonly ipsets: ReadonlyMap<string, IpsetModel>;
  /** iptables-save text (one family in a dump; per family live). */
  readonly iptables: ReadonlyMap<IPFamily | "dump", string>;
  readonly localAddresses: readonly string[];
  readonly servicePorts: readonly ServicePortBinding[];
  /** Whether any `ipvsadm -Ln` output was found. */
  readonly hasIpvs: boolean;
}

export interface DumpParts {
  readonly ipvsadm: string;
  readonly stats?: string;
  readonly ipset: string;
  readonly iptables: string;
  readonly localAddresses?: readonly string[];
  readonly servicePorts?: readonly string[];
}

const nonEmpty = (text: string): string[] => text.split("\n").filter((l) => l.trim() !== "");

/** Joins the parts of a dump, each tool's lines behind its prefix (pure). */
export function joinDump(parts: DumpParts): string {
  return [
    ...nonEmpty(parts.ipvsadm).map((l) => `#ipvsadm ${l}`),
    ...nonEmpty(parts.stats ?? "").map((l) => `#ipvsadm-stats ${l}`),
    ...nonEmpty(parts.ipset).map((l) => `#ipset ${l}`),
    ...(parts.localAddresses ?? []).map((a) => `#address ${a}`),
    ...(parts.servicePorts ?? []).map((s) => `#service-port ${s}`),
    ...nonEmpty(parts.iptables),
    "",
  ].join("\n");
}

/** An element line of `ipset list` (`10.1.0.1,tcp:80`, `30080`, `10.0.0.0/8 nomatch`, `fd00::1`). */
const LIST_ELEMENT = /^[0-9A-Fa-f.:/]+(?:,[\w.:/-]+)*(?:\s.*)?$/;

const RENDER_SECTIONS = new Set([
  "ipvsadm -R",
  "kube-ipvs0 addresses",
  "ipset -exist restore",
  "iptables-restore --noflush",
  SERVICE_PORTS_SECTION,
]);

const PROTOCOL_FLAGS: Readonly<Record<string, "TCP" | "UDP" | "SCTP">> = {
  "-t": "TCP",
  "-u": "UDP",
  "--sctp-service": "SCTP",
};

/** `ipvsadm -R`/`-S` lines (`-A -t VIP:PORT -s rr [-p N]`, `-a -t VIP:PORT -r RS:PORT -m -w W`). */
function parseIpvsadmRules(lines: readonly string[]): IpvsServiceEntry[] {
  const services = new Map<
    string,
    { entry: IpvsServiceEntry; rs: IpvsServiceEntry["realServers"][number][] }
  >();
  for (const line of lines) {
    const w = line.trim().split(/\s+/);
    const protocol = PROTOCOL_FLAGS[w[1] ?? ""];
    const hp = splitHostPort(w[2] ?? "");
    if (protocol === undefined || hp === null) continue;
    const key = `${protocol} ${w[2]}`;
    const opt = (name: string) => {
      const i = w.indexOf(name);
      return i < 0 ? undefined : w[i + 1];
    };
    if (w[0] === "-A") {
      services.set(key, {
        entry: {
          protocol,
          ...hp,
          scheduler: opt("-s") ?? "wlc",
          persistence: Number(opt("-p") ?? 0),
          schedFlags: (opt("-b") ?? "").split(",").filter((f) => f !== ""),
          realServers: [],
        },
        rs: [],
      });
    } else if (w[0] === "-a") {
      const rs = splitHostPort(opt("-r") ?? "");
      const forward = w.includes("-m")
        ? "Masq"
        : w.includes("-g")
          ? "Route"
          : w.includes("-i")
            ? "Tunnel"
            : "Masq";
      if (rs !== null)
        services
          .get(key)
          ?.rs.push({ ...rs, forward, weight: Number(opt("-w") ?? 1), activeConn: 0, inactiveConn: 0 });
    }
  }
  return [...services.values()].map(({ entry, rs }) => ({ ...entry, realServers: rs }));
}

function parseServicePort(line: string): ServicePortBinding | null {
  const [servicePort, kind, key] = line.trim().split(/\s+/);
  const m = /^(TCP|UDP|SCTP):(.+)$/.exec(key ?? "");
  const hp = m === null ? null : splitHostPort(m[2]!);
  if (servicePort === undefined || kind === undefined || m === null || hp === null) return null;
  return { servicePort, kind, protocol: m[1] as ServicePortBinding["protocol"], ...hp };
}

/** Reads a dump (see the top of this file); a dump with nothing ipvs mode writes is refused. */
export function readIpvsDump(dump: InspectDump): IpvsReading {
  const list: string[] = [];
  const stats: string[] = [];
  const rules: string[] = [];
  const ipset: string[] = [];
  const ipsetList: string[] = [];
  const iptables: string[] = [];
  const local: string[] = [];
  const names: ServicePortBinding[] = [];
  let section: string | null = null;
  let ipvsKind: "list" | "stats" | null = null;
  // Inside an `ipset list` block: its header lines, then (after `Members:`) its elements.
  let listing: "header" | "members" | null = null;
  for (const raw of dump.text.split("\n")) {
    const line = raw.trimEnd();
    if (/^Name: \S+$/.test(line)) {
      listing = "header";
      ipsetList.push(line);
      continue;
    }
    if (listing !== null) {
      const text = line.trim();
      if (listing === "header" && /^[A-Z][A-Za-z ]*:(\s|$)/.test(text)) {
        if (text === "Members:") listing = "members";
        ipsetList.push(text);
        continue;
      }
      if (listing === "members" && LIST_ELEMENT.test(text) && !text.startsWith("add ")) {
        ipsetList.push(text);
        continue;
      }
      listing = null;
    }
    if (line.trim() === "") continue;
    const header = /^# (.+)$/.exec(line)?.[1];
    if (header !== undefined && RENDER_SECTIONS.has(header)) {
      section = header;
      continue;
    }
    const prefixed = /^#(ipvsadm|ipvsadm-stats|ipset|address|service-port) (.*)$/.exec(line);
    if (prefixed !== null) {
      const [, kind, rest = ""] = prefixed;
      if (kind === "ipvsadm") list.push(rest);
      else if (kind === "ipvsadm-stats") stats.push(rest);
      else if (kind === "ipset") ipset.push(rest);
      else if (kind === "address") local.push(rest.trim());
      else {
        const b = parseServicePort(rest);
        if (b !== null) names.push(b);
      }
      continue;
    }
    switch (section) {
      case "ipvsadm -R":
        rules.push(line);
        continue;
      case "kube-ipvs0 addresses":
        local.push(line.trim());
        continue;
      case "ipset -exist restore":
        ipset.push(line);
        continue;
      case SERVICE_PORTS_SECTION: {
        const b = parseServicePort(line);
        if (b !== null) names.push(b);
        continue;
      }
      case "iptables-restore --noflush":
        iptables.push(line);
        continue;
    }
    if (/^IP Virtual Server version/.test(line)) {
      ipvsKind = null;
      list.push(line);
      continue;
    }
    if (/^Prot LocalAddress:Port/.test(line)) {
      ipvsKind = /\bConns\b/.test(line) ? "stats" : "list";
      continue;
    }
    if (/^\s+-> RemoteAddress:Port/.test(line)) continue;
    if (ipvsKind !== null && (/^(TCP|UDP|SCTP|FWM)\s/.test(line) || /^\s+->\s/.test(line))) {
      (ipvsKind === "stats" ? stats : list).push(line);
      continue;
    }
    ipvsKind = null;
    if (/^(create|add) \S+ /.test(line)) ipset.push(line);
    else iptables.push(line);
  }
  const virtualServers = [...parseIpvsadmList(list.join("\n")), ...parseIpvsadmRules(rules)];
  if (virtualServers.length === 0 && list.length === 0 && iptables.length === 0)
    throw new InputError(
      dump.origin,
      "neither `ipvsadm -Ln` output nor an iptables-save text is in it (docs/ipvs-mode.md says what an ipvs dump holds)",
    );
  return {
    virtualServers,
    stats: statsByLabel(parseIpvsadmStats(stats.join("\n"))),
    ipsets: ipsetModels([...parseIpsetSave(ipset.join("\n")), ...parseIpsetList(ipsetList.join("\n"))]),
    iptables: new Map([["dump", iptables.join("\n") + "\n"]]),
    localAddresses: local,
    servicePorts: names,
    hasIpvs: list.length > 0 || rules.length > 0,
  };
}

function statsByLabel(stats: readonly IpvsServiceStats[]): Map<string, IpvsServiceStats> {
  return new Map(stats.map((s) => [virtualServerLabel(s), s]));
}

function ipsetModels(sets: readonly IpsetSaved[]): Map<string, IpsetModel> {
  return new Map(
    sets.map((s) => [
      s.name,
      {
        name: s.name,
        type: s.type,
        entries: s.entries,
        ...(s.nomatch.length > 0 ? { nomatch: s.nomatch } : {}),
      },
    ]),
  );
}

/** The node as it is now: IPVS (with counters), ipsets, iptables of the families asked, addresses. */
export async function readLiveIpvs(
  runner: Runner,
  families: readonly IPFamily[],
  iptables?: ReadonlyMap<IPFamily, Pick<IptablesInterface, "save">>,
  netns?: string,
  servicePorts: readonly string[] = [],
): Promise<{ reading: IpvsReading; dumps: string[] }> {
  const opts = { timeoutMs: 30_000, ...(netns === undefined ? {} : { netns }) };
  const [list, stats, sets] = await Promise.all([
    runner.run(["ipvsadm", "-Ln", "--exact"], opts),
    runner.run(["ipvsadm", "-Ln", "--exact", "--stats"], opts),
    new Ipset(runner, netns).saveText(),
  ]);
  let ipts = iptables;
  if (ipts === undefined) {
    const { backend } = await detectBackend(runner, netns === undefined ? {} : { netns });
    ipts = new Map(
      families.map((f) => [
        f,
        new Iptables({ runner, family: f, backend, ...(netns === undefined ? {} : { netns }) }),
      ]),
    );
  }
  const saved = new Map<IPFamily, string>();
  for (const [family, ipt] of ipts) {
    try {
      saved.set(family, await ipt.save(undefined, { counters: true }));
    } catch (error) {
      // A node may lack one family's iptables; asked for both, the other one still answers.
      if (ipts.size === 1) throw error;
    }
  }
  const local = (await readLocalAddresses(runner, netns)).map((a) => a.replace(/\/\d+$/, ""));
  const bindings = servicePorts.map(parseServicePort).filter((b): b is ServicePortBinding => b !== null);
  return {
    reading: {
      virtualServers: parseIpvsadmList(list.stdout),
      stats: statsByLabel(parseIpvsadmStats(stats.stdout)),
      ipsets: ipsetModels(parseIpsetSave(sets)),
      iptables: saved,
      localAddresses: local,
      servicePorts: bindings,
      hasIpvs: true,
    },
    dumps: [...saved.entries()].map(([family, text]) =>
      joinDump({
        ipvsadm: list.stdout,
        stats: stats.stdout,
        ipset: sets,
        iptables: text,
        localAddresses: local.filter((a) => familyOf(a) === family),
        servicePorts: servicePorts.filter((s) => {
          const b = parseServicePort(s);
          return b !== null && familyOf(b.address) === family;
        }),
      }),
    ),
  };
}

function iptablesOf(reading: IpvsReading, family: IPFamily, origin: string): Ruleset {
  const text = reading.iptables.get(family) ?? reading.iptables.get("dump") ?? "";
  try {
    return parseIptablesSave(text, { family });
  } catch (error) {
    throw new InputError(
      origin,
      `its iptables-save part cannot be read as ${family}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}

/** The node's addresses plus what kube-ipvs0 holds (the KUBE-IPVS-IPS set), which are local too. */
function localOf(reading: IpvsReading, family: IPFamily, given?: readonly string[]): string[] {
  const bound = reading.ipsets.get(ipsetName("ipvsIPs", family))?.entries ?? [];
  return [...new Set([...(given ?? reading.localAddresses), ...bound])].filter((a) => familyOf(a) === family);
}

/** The packet traced through the iptables payload, IPVS and back out (pure). */
export function traceIpvs(
  reading: IpvsReading,
  packet: TracePacket,
  options: {
    readonly origin: InspectTraceRequest["origin"];
    readonly localAddresses?: readonly string[];
    readonly affinity?: "kernel" | "new-client";
    readonly source: string;
  },
): { result: TraceResult; localAddresses: string[]; warnings: string[] } {
  const family = familyOf(packet.dst);
  if (family === null) throw new InputError("--dst", `not an IP address: ${packet.dst}`);
  const ruleset = iptablesOf(reading, family, options.source);
  const local = localOf(reading, family, options.localAddresses);
  const warnings: string[] = [];
  if (!reading.hasIpvs) warnings.push("no `ipvsadm -Ln` output: IPVS is traced as holding no virtual server");
  const prerouting = ruleset.tables.get("nat")?.chains.get("PREROUTING");
  if (
    prerouting === undefined ||
    !prerouting.rules.some((r) => r.target?.kind === "jump" && r.target.chain === "KUBE-SERVICES")
  )
    warnings.push(
      "nat PREROUTING does not jump to KUBE-SERVICES: the iptables part is not a whole node's (a render payload?)",
    );
  const result = tracePacket(ruleset, packet, {
    localAddresses: local,
    origin: options.origin,
    ...(options.affinity === "new-client" ? { recent: "new-client" as const } : {}),
    ipvs: { virtualServers: reading.virtualServers.filter((v) => familyOf(v.address) === family) },
    ipsets: reading.ipsets,
  });
  return { result, localAddresses: local, warnings };
}

// --- the explainer ---------------------------------------------------------------------------

export interface ServiceRef {
  readonly namespace: string;
  readonly name: string;
  readonly port?: string;
}

function belongs(servicePort: string, ref: ServiceRef): boolean {
  const base = `${ref.namespace}/${ref.name}`;
  if (ref.port === undefined) return servicePort === base || servicePort.startsWith(`${base}:`);
  return servicePort === (ref.port === "" ? base : `${base}:${ref.port}`);
}

const KINDS: Readonly<Record<string, FrontendKind>> = {
  ClusterIP: "cluster IP",
  ExternalIP: "external IP",
  LoadBalancer: "loadbalancer IP",
  NodePort: "node port",
};

const counters = (s: IpvsStats | undefined) =>
  s === undefined ? {} : { counters: { packets: s.inPkts, bytes: s.inBytes } };

export interface IpvsServiceExplanation {
  readonly view: ServiceView;
  /** Virtual servers the objects ask for that the node does not hold. */
  readonly missing: readonly string[];
  /** The iptables rules whose ipset matches hold this Service, and its virtual servers, in order. */
  readonly walk: readonly IpvsWalkStep[];
  readonly endpointKeys: readonly (EndpointKey & { servicePortName: string })[];
  readonly frontends: readonly Frontend[];
  readonly family: IPFamily;
}

/** One line of the walk: indented text, and the counters it shows with the web view's key for them. */
export interface IpvsWalkStep {
  readonly text: string;
  readonly counterKey?: string;
  readonly counters?: { readonly packets: number; readonly bytes: number };
}

const familyNumber = (family: IPFamily): number => (family === "IPv6" ? 6 : 4);

/** The web view's counter keys: a virtual server's totals, one of its real servers, an iptables rule. */
export const virtualServerKey = (family: IPFamily, label: string): string =>
  `${familyNumber(family)}/ipvs/${label}`;
export const realServerKey = (family: IPFamily, label: string, index: number): string =>
  `${familyNumber(family)}/ipvs/${label}/${index + 1}`;
const ruleKey = (family: IPFamily, r: Rule): string =>
  `${familyNumber(family)}/${r.table}/${r.chain}/${r.index}`;

/** Targets after which no later rule of the chain sees the packet. */
const ENDS_CHAIN = new Set(["verdict", "return", "goto", "dnat", "snat", "masquerade"]);

function ruleText(r: Rule): string {
  const c = r.counters === undefined ? "" : ` [${r.counters.packets} pkts, ${r.counters.bytes} bytes]`;
  return `${r.table} ${r.chain} rule ${r.index}: -A ${r.chain} ${r.text}${c}`;
}

/** One Service (or one of its ports) on the node; null when no virtual server is named after it. */
export function explainIpvsService(
  reading: IpvsReading,
  ref: ServiceRef,
  origin: string,
): IpvsServiceExplanation | null {
  const bindings = reading.servicePorts.filter((b) => belongs(b.servicePort, ref));
  if (bindings.length === 0) return null;
  const family = familyOf(bindings[0]!.address) ?? "IPv4";
  const byLabel = new Map(reading.virtualServers.map((v) => [virtualServerLabel(v), v]));
  const set = (key: SetKey) => reading.ipsets.get(ipsetName(key, family));
  const frontends: FrontendView[] = [];
  const endpoints: EndpointView[] = [];
  const missing: string[] = [];
  const walk: IpvsWalkStep[] = [];
  const keys: (EndpointKey & { servicePortName: string })[] = [];
  const seenKeys = new Set<string>();
  const conntrackFrontends: Frontend[] = [];
  const seen = new Set<string>();
  const loopProbes: {
    protocol: string;
    src: ReturnType<typeof parseIPOrThrow>;
    dst: ReturnType<typeof parseIPOrThrow>;
    srcPort: number;
    dstPort: number;
  }[] = [];
  for (const b of bindings) {
    const label = virtualServerLabel(b);
    if (seen.has(`${b.servicePort} ${label}`)) continue;
    seen.add(`${b.servicePort} ${label}`);
    const proto = b.protocol.toLowerCase();
    const vs = byLabel.get(label);
    const kind = KINDS[b.kind] ?? "external address";
    const destination =
      b.kind === "NodePort"
        ? `node port ${b.port} (${proto}) on ${b.address}`
        : `${hostPort(b.address, b.port)} (${proto})`;
    if (vs === undefined) {
      missing.push(`${b.servicePort} ${b.kind} ${label}`);
      continue;
    }
    const where = `IPVS virtual server ${label} ${vs.scheduler}${vs.persistence > 0 ? ` persistent ${vs.persistence}` : ""}`;
    const stats = reading.stats.get(label);
    const { shares } = realServerShares(vs);
    const balances = shares.some((s) => s.share > 0);
    frontends.push({
      servicePortName: b.servicePort,
      kind,
      destination,
      action: balances ? "load-balance" : "reject",
      ...(balances ? {} : { reason: "no endpoints" as const }),
      where,
      ...counters(stats?.stats),
    });
    conntrackFrontends.push({ protocol: proto, ip: b.address, port: b.port });
    walk.push({
      text: `${where}${stats === undefined ? "" : ` [${stats.stats.conns} conns, ${stats.stats.inPkts} pkts in]`}`,
      counterKey: virtualServerKey(family, label),
      ...counters(stats?.stats),
    });
    if (!balances)
      walk.push({ text: "  no real server takes new connections: IPVS answers ICMP port unreachable" });
    for (const { rs, share } of shares) {
      const endpoint = hostPort(rs.address, rs.port);
      const rsStats = stats?.realServers.get(endpoint);
      const state = rs.weight === 0 ? ", draining: no new connections" : "";
      const via = `real server ${endpoint} ${rs.forward} weight ${rs.weight} (${rs.activeConn} active, ${rs.inactiveConn} inactive connections${state})`;
      endpoints.push({
        servicePortName: b.servicePort,
        endpoint,
        share,
        via: [where, via],
        ...counters(rsStats),
      });
      const index = vs.realServers.indexOf(rs);
      walk.push({
        text: `  -> ${via}: ${formatPercent(share)}`,
        ...(index < 0 ? {} : { counterKey: realServerKey(family, label, index) }),
        ...counters(rsStats),
      });
      const rsAddress = parseIPOrThrow(rs.address);
      loopProbes.push({
        protocol: proto,
        src: rsAddress,
        dst: rsAddress,
        srcPort: rs.port,
        dstPort: rs.port,
      });
      const k = `${proto} ${endpoint}`;
      if (!seenKeys.has(k)) {
        seenKeys.add(k);
        keys.push({ protocol: proto, endpoint, servicePortName: b.servicePort });
      }
    }
    const fw = set("loadBalancerFW");
    const entry = `${b.address},${proto}:${b.port}`;
    if (b.kind === "LoadBalancer" && fw?.entries.includes(entry) === true) {
      const allowed = (set("loadBalancerSourceCIDR")?.entries ?? [])
        .filter((e) => e.startsWith(`${entry},`))
        .map((e) => e.slice(entry.length + 1));
      frontends.push({
        servicePortName: b.servicePort,
        kind,
        destination,
        action: "drop",
        reason: "source not allowed",
        allowedSources: allowed,
        allowedSourcesWhere: `ipset ${ipsetName("loadBalancerSourceCIDR", family)}`,
        where: `filter KUBE-SOURCE-RANGES-FIREWALL (ipset ${fw.name} holds ${entry})`,
      });
    }
  }

  const masquerade: MasqueradeView[] = [];
  const ruleset = iptablesOf(reading, family, origin);
  const probes = bindings.map((b) => {
    const a = parseIPOrThrow(b.address);
    return {
      protocol: b.protocol.toLowerCase(),
      src: a,
      dst: a,
      srcPort: b.port,
      dstPort: b.port,
      kind: b.kind,
    };
  });
  for (const table of ruleset.tables.values()) {
    for (const chain of table.chains.values()) {
      if (!chain.name.startsWith("KUBE-")) continue;
      // First match: a probe a rule RETURNs (or REJECTs, DNATs…) meets no later rule of the
      // chain. So KUBE-IPVS-FILTER's REJECT of a Service IP's other ports is not in the walk of
      // a port the Service defines: its RETURN came first.
      const candidates: readonly object[] = chain.name === "KUBE-POSTROUTING" ? loopProbes : probes;
      const ended = new Set<object>();
      for (const r of chain.rules) {
        const sets = r.matches.filter((m) => m.kind === "set");
        const matched =
          sets.length > 0
            ? (candidates as typeof probes).filter(
                (p) =>
                  !ended.has(p) &&
                  sets.every((m) => {
                    const s = reading.ipsets.get(m.name);
                    return s !== undefined && setContains(s, m.flags, p) === !m.negated;
                  }),
              )
            : chain.name === "KUBE-LOAD-BALANCER" && bindings.some((b) => b.kind === "LoadBalancer")
              ? candidates.filter((p) => !ended.has(p))
              : [];
        if (matched.length === 0) continue;
        if (r.target !== undefined && ENDS_CHAIN.has(r.target.kind)) for (const p of matched) ended.add(p);
        walk.push({
          text: ruleText(r),
          counterKey: ruleKey(family, r),
          ...(r.counters === undefined ? {} : { counters: r.counters }),
        });
        const target = r.target;
        if (
          (target?.kind === "jump" && target.chain === KUBE_MARK_MASQ) ||
          (target?.kind === "masquerade" && chain.name === "KUBE-POSTROUTING")
        )
          masquerade.push({
            where: `${table.name} ${chain.name} rule ${r.index}: -A ${chain.name} ${r.text}`,
            ...(r.counters === undefined ? {} : { counters: r.counters }),
          });
      }
    }
  }
  const names = [...new Set(bindings.map((b) => b.servicePort))].sort();
  return {
    view: {
      mode: "ipvs",
      service: `${ref.namespace}/${ref.name}`,
      servicePortNames: names,
      frontends,
      endpoints,
      masquerade,
    },
    missing,
    walk,
    endpointKeys: keys,
    frontends: conntrackFrontends,
    family,
  };
}

function parseIPOrThrow(text: string) {
  const a = parseIP(text);
  if (a === undefined) throw new InputError("explain", `not an IP address: ${text}`);
  return a;
}

/** The explanation in words: frontends, the walk, endpoints with shares, masquerade. */
export function formatIpvsExplanation(ex: IpvsServiceExplanation): string {
  const v = ex.view;
  const lines = [
    `service ${v.service} (ipvs, ${ex.family}): ${v.servicePortNames.join(", ")}`,
    "",
    ...frontendLines(v),
  ];
  if (ex.missing.length > 0) {
    lines.push("", "virtual servers the objects ask for that IPVS does not hold:");
    for (const m of ex.missing) lines.push(`  ${m}`);
  }
  lines.push("", "the walk (iptables rules whose ipsets hold this Service, then IPVS):");
  for (const w of ex.walk) lines.push(`  ${w.text}`);
  lines.push("", ...endpointAndMasqueradeLines(v));
  return lines.join("\n");
}

// --- the commands -------------------------------------------------------------------------------

async function trace(req: InspectTraceRequest): Promise<string> {
  const family = familyOf(req.packet.dst);
  if (family === null) throw new InputError("--dst", `not an IP address: ${req.packet.dst}`);
  let reading: IpvsReading;
  let source: string;
  if (req.dump !== undefined) {
    reading = readIpvsDump(req.dump);
    source = req.dump.origin;
  } else {
    reading = (await readLiveIpvs(req.runner, [family])).reading;
    source = `live kernel (ipvsadm -Ln --exact [--stats], ipset save, ${family === "IPv4" ? "iptables" : "ip6tables"}-save -c)`;
  }
  const { result, localAddresses, warnings } = traceIpvs(reading, req.packet, {
    origin: req.origin,
    ...(req.localAddresses === undefined ? {} : { localAddresses: req.localAddresses }),
    ...(req.affinity === undefined ? {} : { affinity: req.affinity }),
    source,
  });
  if (req.format === "json")
    return JSON.stringify({ source, localAddresses, warnings, ...traceToJson(result) }, null, 2) + "\n";
  const localText =
    localAddresses.length === 0 ? "loopback only (pass --local-addresses)" : localAddresses.join(", ");
  return [
    `ruleset: ${source}, local addresses: ${localText}`,
    ...warnings.map((w) => `WARNING: ${w}`),
    formatTrace(result),
  ].join("\n");
}

function withNames(reading: IpvsReading, rendered: readonly InspectDump[] | undefined): IpvsReading {
  if (rendered === undefined) return reading;
  const names = rendered.flatMap((d) => readIpvsDump(d).servicePorts);
  return { ...reading, servicePorts: [...reading.servicePorts, ...names] };
}

async function explain(req: InspectExplainRequest): Promise<string> {
  const ref = `${req.service.namespace}/${req.service.name}${req.service.port === undefined ? "" : `:${req.service.port}`}`;
  const live = req.dumps === undefined;
  let reading: IpvsReading;
  let source: string;
  if (req.dumps !== undefined) {
    const parts = req.dumps.map(readIpvsDump);
    reading = parts.length === 1 ? parts[0]! : mergeReadings(parts);
    source = req.dumps.map((d) => d.origin).join(", ");
  } else {
    reading = (await readLiveIpvs(req.runner, ["IPv4", "IPv6"])).reading;
    source = "live kernel (ipvsadm -Ln --exact [--stats], ipset save, iptables-save -c, ip6tables-save -c)";
  }
  reading = withNames(reading, req.rendered);
  const ex = explainIpvsService(reading, req.service, source);
  if (ex === null)
    throw new InputError(
      "explain",
      `no virtual server is named after ${ref}: IPVS holds no Service names, so give the objects (-f, --manifests or --api) ` +
        "or a dump with its #service-port lines (render --proxy-mode ipvs prints them) (" +
        source +
        ")",
    );
  const flows =
    live && req.conntrack
      ? await readEndpointFlows(req.runner, ex.family, ex.endpointKeys, ex.frontends)
      : undefined;
  const reasons = whyNoTraffic(ex.view);
  if (req.format === "json")
    return (
      JSON.stringify(
        {
          source,
          family: ex.family,
          view: ex.view,
          missing: ex.missing,
          walk: ex.walk.map((w) => w.text),
          whyNoTraffic: reasons,
          ...(flows === undefined ? {} : { conntrack: flows }),
        },
        null,
        2,
      ) + "\n"
    );
  const lines = [
    `source: ${source}${reading.stats.size > 0 ? "" : " (no ipvsadm --stats: counters unknown)"}`,
    "",
    formatIpvsExplanation(ex),
  ];
  if (flows !== undefined) lines.push("", ...flowLines(flows));
  lines.push("", "why no traffic:");
  if (reasons.length === 0 && ex.missing.length === 0)
    lines.push("  nothing on this node stops traffic to this Service");
  for (const r of reasons) lines.push(`  ${r}`);
  for (const m of ex.missing) lines.push(`  ${m}: IPVS holds no such virtual server`);
  return lines.join("\n") + "\n";
}

function mergeReadings(parts: readonly IpvsReading[]): IpvsReading {
  const iptables = new Map<IPFamily | "dump", string>();
  for (const p of parts) {
    const text = p.iptables.get("dump") ?? "";
    const family = parseIptablesSave(text).family;
    if (!iptables.has(family)) iptables.set(family, text);
  }
  return {
    virtualServers: parts.flatMap((p) => p.virtualServers),
    stats: new Map(parts.flatMap((p) => [...p.stats])),
    ipsets: new Map(parts.flatMap((p) => [...p.ipsets])),
    iptables,
    localAddresses: parts.flatMap((p) => p.localAddresses),
    servicePorts: parts.flatMap((p) => p.servicePorts),
    hasIpvs: parts.some((p) => p.hasIpvs),
  };
}

export const ipvsInspector: ModeInspector = { trace, explain };

// --- the web view -------------------------------------------------------------------------------

/** The web view's reader: the live node, named by the Service ports the proxiers last synced. */
export function ipvsInspectionSource(
  runner: Runner,
  iptables: ReadonlyMap<IPFamily, Pick<IptablesInterface, "save">>,
  servicePorts: () => readonly string[],
  netns?: string,
): InspectionSource {
  return {
    async read() {
      const names = servicePorts();
      const { reading, dumps } = await readLiveIpvs(runner, [...iptables.keys()], iptables, netns, names);
      return { mode: "ipvs", dumps, localAddresses: reading.localAddresses, web: ipvsWebSnapshot(reading) };
    },
  };
}

function serviceGraph(ex: IpvsServiceExplanation): WebServiceEntry["graph"] {
  const nodes: WebGraphNode[] = [
    {
      id: "service",
      kind: "service",
      label: ex.view.service,
      detail: `${ex.family} Service · ${new Set(ex.view.endpoints.map((e) => e.endpoint)).size} endpoints`,
      column: 0,
    },
  ];
  const edges: { from: string; to: string; label: string }[] = [];
  const vsNodes = new Set<string>();
  const epNodes = new Set<string>();
  ex.view.frontends.forEach((f, i) => {
    nodes.push({
      id: `entry:${i}`,
      kind: "entry",
      label: f.kind,
      detail: `${f.destination} · ${f.action}${f.reason === undefined ? "" : ` (${f.reason})`}`,
      column: 1,
    });
    edges.push({ from: "service", to: `entry:${i}`, label: "" });
    if (f.action === "drop") return;
    const id = `chain:${f.where}`;
    if (!vsNodes.has(id)) {
      vsNodes.add(id);
      nodes.push({
        id,
        kind: "chain",
        label: f.where.replace(/^IPVS virtual server /, ""),
        detail: "IPVS virtual server",
        column: 2,
      });
    }
    edges.push({ from: `entry:${i}`, to: id, label: "" });
  });
  for (const e of ex.view.endpoints) {
    const id = `endpoint:${e.endpoint}`;
    if (!epNodes.has(id)) {
      epNodes.add(id);
      nodes.push({ id, kind: "endpoint", label: e.endpoint, detail: e.via[1] ?? "", column: 3 });
    }
    edges.push({ from: `chain:${e.via[0]}`, to: id, label: formatPercent(e.share) });
  }
  return { nodes, edges };
}

/** Service refs named by the reading's `#service-port` lines. */
function servicesOf(reading: IpvsReading): ServiceRef[] {
  const found = new Map<string, ServiceRef>();
  for (const b of reading.servicePorts) {
    const m = /^([^/]+)\/([^:]+)/.exec(b.servicePort);
    if (m !== null) found.set(`${m[1]}/${m[2]}`, { namespace: m[1]!, name: m[2]! });
  }
  return [...found.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, r]) => r);
}

const optionalKey = (key: string | undefined) => (key === undefined ? {} : { counterKey: key });

/** Everything the web view shows of ipvs mode, built once per reading. */
export function ipvsWebSnapshot(reading: IpvsReading): ModeWebSnapshot {
  const hash = createHash("sha256");
  const rules: WebRuleRow[] = [];
  const counterMap: Record<string, readonly [number, number]> = {};
  /** A real server's row key by `IPVS virtual server … endpoint`, as the explanation's `via` names it. */
  const realServerKeys = new Map<string, string>();
  for (const vs of reading.virtualServers) {
    const label = virtualServerLabel(vs);
    hash.update(`${label} ${vs.scheduler} ${vs.persistence}\n`);
    const stats = reading.stats.get(label);
    if (stats !== undefined)
      counterMap[virtualServerKey(familyOf(vs.address) ?? "IPv4", label)] = [
        stats.stats.inPkts,
        stats.stats.inBytes,
      ];
    vs.realServers.forEach((rs, i) => {
      const family = familyOf(vs.address) === "IPv6" ? 6 : 4;
      const endpoint = hostPort(rs.address, rs.port);
      hash.update(`${label} ${endpoint} ${rs.weight}\n`);
      const s = stats?.realServers.get(endpoint);
      const key = realServerKey(familyOf(vs.address) ?? "IPv4", label, i);
      const chain = `${label} ${vs.scheduler}${vs.persistence > 0 ? ` persistent ${vs.persistence}` : ""}`;
      realServerKeys.set(`IPVS virtual server ${chain} ${endpoint}`, key);
      rules.push({
        key,
        family,
        table: "ipvs",
        chain,
        num: i + 1,
        pkts: s === undefined ? "" : String(s.inPkts),
        bytes: s === undefined ? "" : String(s.inBytes),
        rule: `-> ${endpoint} ${rs.forward} weight ${rs.weight} (${rs.activeConn} active, ${rs.inactiveConn} inactive)`,
      });
      if (s !== undefined) counterMap[key] = [s.inPkts, s.inBytes];
    });
  }
  for (const [family, text] of reading.iptables) {
    if (family === "dump") continue;
    const ruleset = parseIptablesSave(text, { family });
    const f = family === "IPv6" ? 6 : 4;
    for (const table of ruleset.tables.values())
      for (const chain of table.chains.values())
        for (const r of chain.rules) {
          if (
            !r.chain.startsWith("KUBE-") &&
            !(r.target?.kind === "jump" && r.target.chain.startsWith("KUBE-"))
          )
            continue;
          const key = `${f}/${table.name}/${chain.name}/${r.index}`;
          hash.update(`${key} ${r.text}\n`);
          rules.push({
            key,
            family: f,
            table: table.name,
            chain: chain.name,
            num: r.index,
            pkts: r.counters === undefined ? "" : String(r.counters.packets),
            bytes: r.counters === undefined ? "" : String(r.counters.bytes),
            rule: r.text,
          });
          if (r.counters !== undefined) counterMap[key] = [r.counters.packets, r.counters.bytes];
        }
  }
  for (const [name, set] of reading.ipsets) hash.update(`${name} ${set.entries.join(",")}\n`);
  // The list is built once per reading; a Service's entry (its explanation) when asked for.
  const services: WebServiceSummary[] = [];
  for (const ref of servicesOf(reading)) {
    const service = `${ref.namespace}/${ref.name}`;
    const bindings = reading.servicePorts.filter((b) => belongs(b.servicePort, ref));
    for (const family of [4, 6]) {
      const own = bindings.filter((b) => (familyOf(b.address) === "IPv6" ? 6 : 4) === family);
      if (own.length === 0) continue;
      const frontends = own.map((b) =>
        b.kind === "NodePort"
          ? `node port ${b.port}/${b.protocol.toLowerCase()}`
          : `${hostPort(b.address, b.port)}/${b.protocol.toLowerCase()}`,
      );
      services.push({ family, service, frontends: [...new Set(frontends)] });
    }
  }
  services.sort((a, b) => (a.service === b.service ? a.family - b.family : a.service < b.service ? -1 : 1));
  return {
    version: hash.digest("hex").slice(0, 16),
    services,
    service(family, namespace, name) {
      const ex = explainIpvsService(reading, { namespace, name }, "the web view's reading");
      if (ex === null || (ex.family === "IPv6" ? 6 : 4) !== family) return undefined;
      return {
        family,
        service: ex.view.service,
        servicePortNames: ex.view.servicePortNames,
        endpoints: ex.view.endpoints.map((e) => ({
          servicePortName: e.servicePortName,
          endpoint: e.endpoint,
          probability: e.share,
          viaChain: e.via[0] ?? "",
          sepChain: e.via[1] ?? "",
          packets: e.counters?.packets ?? null,
          bytes: e.counters?.bytes ?? null,
          ...optionalKey(realServerKeys.get(`${e.via[0] ?? ""} ${e.endpoint}`)),
        })),
        graph: serviceGraph(ex),
        view: ex.view,
        walk: ex.walk.map((w) => ({
          depth: /^ */.exec(w.text)![0].length >> 1,
          text: w.text.trimStart(),
          ...optionalKey(w.counterKey),
          ...(w.counters === undefined ? {} : { packets: w.counters.packets, bytes: w.counters.bytes }),
        })),
      };
    },
    columns: ["num", "pkts", "bytes", "rule"],
    rules(q, max) {
      const needle = q.trim().toLowerCase();
      const hits = rules.filter(
        (r) => needle === "" || Object.values(r).some((v) => String(v).toLowerCase().includes(needle)),
      );
      return { total: hits.length, rows: hits.slice(0, max) };
    },
    counters(keys) {
      if (keys === undefined) return counterMap;
      const out: Record<string, readonly [number, number]> = {};
      for (const k of keys) {
        const c = counterMap[k];
        if (c !== undefined) out[k] = c;
      }
      return out;
    },
    trace: (flags) => {
      const { packet, origin } = packetFromQuery(flags);
      const { result } = traceIpvs(reading, packet, { origin, source: "the web view's reading" });
      return traceToJson(result);
    },
  };
}
