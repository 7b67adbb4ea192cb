/**
 * The migration report `kube-proxy-ts migrate --from ipvs --to nftables` prints: per Service, what
 * will behave differently once the node runs nftables mode instead of ipvs mode, and why; then
 * what changes for the node as a whole. Pure: it reads the state, what ipvs mode renders for it
 * (./render.ts) and, when given, what the live kernel holds. Each finding names the upstream code
 * or issue it comes from (docs/ipvs-mode.md §5 has the list with the reasoning).
 */
import type { IPFamily } from "../../ip.ts";
import { categorizeEndpoints } from "../../proxy/topology.ts";
import {
  compareServicePorts,
  servicePortKey,
  servicePortNameString,
  type ProxyState,
} from "../../proxy/types.ts";
import { virtualServerKey } from "./render.ts";
import type { IpvsDesiredState } from "./types.ts";

export type FindingId =
  | "scheduler"
  | "affinity-timeout"
  | "affinity-scope"
  | "undefined-ports"
  | "vip-hijack"
  | "strict-arp"
  | "nodeport-addresses"
  | "itp-local-fallback"
  | "etp-local-fallback"
  | "connection-timeouts"
  | "kube-ipvs0-removed";

export interface Finding {
  readonly id: FindingId;
  /** One line: what changes. */
  readonly summary: string;
  /** How ipvs mode behaves, how nftables mode will, and the source of both. */
  readonly ipvs: string;
  readonly nftables: string;
  readonly source: string;
}

export interface ServiceReport {
  /** `ns/name`. */
  readonly service: string;
  readonly findings: readonly Finding[];
  /** Things checked that behave the same in both modes (so nobody has to wonder). */
  readonly unchanged: readonly string[];
}

export interface MigrationReport {
  readonly from: "ipvs";
  readonly to: "nftables";
  /** Where the Services came from and whether the kernel was read. */
  readonly source: string;
  readonly services: readonly ServiceReport[];
  readonly node: readonly Finding[];
}

/** What the live kernel says, when it was read. */
export interface LiveIpvs {
  /** Scheduler and persistence of each virtual server (`virtualServerKey`). */
  readonly virtualServers: ReadonlyMap<string, { readonly scheduler: string; readonly persistence: number }>;
  readonly arpIgnore: number | null;
  readonly arpAnnounce: number | null;
  /** `ipvsadm -L --timeout`: tcp, tcpfin, udp seconds. */
  readonly timeouts: readonly [number, number, number] | null;
}

export interface MigrationInput {
  readonly source: string;
  readonly families: ReadonlyMap<
    IPFamily,
    { readonly state: ProxyState; readonly desired: IpvsDesiredState }
  >;
  readonly nodeName: string;
  readonly scheduler: string;
  readonly strictARP: boolean;
  /** `--nodeport-addresses` as configured (null = unset: every address in ipvs mode). */
  readonly nodePortAddresses: readonly string[] | null;
  /** The node addresses ipvs mode puts NodePorts on, and the primary node IPs nftables defaults to. */
  readonly nodeAddresses: readonly string[];
  readonly primaryNodeIPs: readonly string[];
  readonly conntrackTCPEstablishedSeconds: number;
  /** `--ipvs-tcp-timeout`, `-tcpfin-timeout`, `-udp-timeout` in seconds (0 = the kernel's). */
  readonly ipvsTimeouts: readonly [number, number, number];
  readonly live: LiveIpvs | null;
}

const SCHEDULER_NAMES: Readonly<Record<string, string>> = {
  rr: "round robin",
  wrr: "weighted round robin",
  lc: "least connection",
  wlc: "weighted least connection",
  lblc: "locality-based least connection",
  lblcr: "locality-based least connection with replication",
  sh: "source hashing",
  dh: "destination hashing",
  mh: "maglev hashing",
  sed: "shortest expected delay",
  nq: "never queue",
};

function schedulerFinding(scheduler: string): Finding {
  const sticky =
    scheduler === "sh" || scheduler === "mh"
      ? " It also kept each client on one endpoint (a hash of the source), which nftables will not do unless the Service sets sessionAffinity: ClientIP."
      : scheduler === "dh"
        ? " It sent each destination to one endpoint."
        : "";
  return {
    id: "scheduler",
    summary: `load balancing changes from IPVS ${scheduler} (${SCHEDULER_NAMES[scheduler] ?? scheduler}) to a uniform random choice`,
    ipvs: `each virtual server uses the ${scheduler} scheduler, which looks at connection counts or hashes, per node.${sticky}`,
    nftables:
      "each new connection picks an endpoint with `numgen random mod N`: equal shares, no look at load.",
    source:
      "pkg/proxy/ipvs/proxier.go (VirtualServer.Scheduler = --ipvs-scheduler); pkg/proxy/nftables/proxier.go (numgen random)",
  };
}

export function migrationReport(input: MigrationInput): MigrationReport {
  const services = new Map<string, { findings: Map<string, Finding>; unchanged: Set<string> }>();
  const entry = (name: string) => {
    let e = services.get(name);
    if (e === undefined) services.set(name, (e = { findings: new Map(), unchanged: new Set() }));
    return e;
  };
  const add = (name: string, f: Finding) => {
    const e = entry(name);
    const key = `${f.id}|${f.summary}`;
    if (!e.findings.has(key)) e.findings.set(key, f);
  };
  const nodeAddresses = new Set(input.nodeAddresses);
  let anyBoundExternal = false;

  for (const [, { state, desired }] of input.families) {
    const bySp = new Map<string, IpvsDesiredState["virtualServers"][number][]>();
    for (const d of desired.virtualServers) bySp.set(d.servicePort, [...(bySp.get(d.servicePort) ?? []), d]);
    for (const sp of [...state.services.values()].sort(compareServicePorts)) {
      const name = `${sp.name.namespace}/${sp.name.name}`;
      const spName = servicePortNameString(sp.name);
      const proto = sp.protocol;
      const vss = bySp.get(spName)?.filter((d) => d.vs.protocol === proto) ?? [];
      const e = entry(name);

      // Scheduler: what the kernel really uses when it was read, else the configuration.
      const schedulers = new Set(
        vss.map((d) => input.live?.virtualServers.get(virtualServerKey(d.vs))?.scheduler ?? input.scheduler),
      );
      for (const s of [...schedulers].sort()) if (s !== "rr") add(name, schedulerFinding(s));
      if (schedulers.size === 0 || (schedulers.size === 1 && schedulers.has("rr")))
        e.unchanged.add("round robin and random choice both give each endpoint an equal share over time");

      if (sp.sessionAffinity !== null) {
        const t = sp.sessionAffinity.maxAgeSeconds;
        add(name, {
          id: "affinity-timeout",
          summary: `ClientIP affinity (${t}s) is measured from the client's last new connection instead of its last packet`,
          ipvs: `IPVS persistence (-p ${t}) keeps a template per client that lives as long as any of its connections and ${t}s after the last one ends, so a client with a long-lived connection stays on its endpoint.`,
          nftables: `the client's address goes in an affinity set with a ${t}s timeout refreshed only when it opens a new connection: after ${t}s without a new connection it may land on another endpoint, even while an old connection is still open.`,
          source:
            "pkg/proxy/ipvs/proxier.go (FlagPersistent, Timeout = StickyMaxAgeSeconds); pkg/proxy/nftables/proxier.go (affinity sets, update @set { ip saddr })",
        });
        if (vss.length > 1) {
          add(name, {
            id: "affinity-scope",
            summary: `affinity becomes shared between the ${vss.length} addresses of the port (ClusterIP, NodePorts, external and LB IPs)`,
            ipvs: `each of ${vss.map((d) => virtualServerKey(d.vs)).join(", ")} is its own persistent virtual server: a client reaching the Service through two of them may get two endpoints.`,
            nftables:
              "one affinity set per endpoint of the service port: the client gets the same endpoint whichever address it uses.",
            source:
              "pkg/proxy/ipvs/proxier.go (one VirtualServer per address); pkg/proxy/nftables/proxier.go (affinity per endpoint chain)",
          });
        }
      }

      const bound = vss.filter((d) => d.bind).map((d) => d.vs.address);
      if (bound.length > 0) {
        const ports = [...new Set(vss.filter((d) => d.bind).map((d) => `${d.vs.port}/${proto}`))];
        add(name, {
          id: "undefined-ports",
          summary: `${[...new Set(bound)].join(", ")} stop being local addresses of the node (kube-ipvs0); only ${ports.join(", ")} is served`,
          ipvs: "the Service IPs sit on kube-ipvs0, so the node owns them: only KUBE-IPVS-FILTER's REJECT of new connections keeps host sockets off the other ports (kubernetes#72236); a firewall rule accepting earlier in INPUT, or traffic conntrack does not count as new, reaches the node's own processes on any port.",
          nftables:
            "the Service IPs are not local: a packet to a port the Service does not define is rejected by kube-proxy's rules and never reaches a host socket; nothing on the node can bind or answer on them.",
          source:
            "pkg/proxy/ipvs/proxier.go (KUBE-IPVS-FILTER, kube-ipvs0); kubernetes/kubernetes#72236; pkg/proxy/nftables/proxier.go (cluster-ips reject)",
        });
      }
      for (const d of vss) {
        if (d.kind !== "ExternalIP" && d.kind !== "LoadBalancer") continue;
        if (!d.bind) {
          e.unchanged.add(
            `${d.vs.address} is a node address: the node's own processes answer its other ports in both modes`,
          );
          continue;
        }
        anyBoundExternal = true;
        add(name, {
          id: "vip-hijack",
          summary: `${d.kind === "ExternalIP" ? "externalIP" : "LB IP"} ${d.vs.address}: only port ${d.vs.port}/${proto} will be intercepted, not the whole address`,
          ipvs: `${d.vs.address} is on kube-ipvs0 of every node: from nodes and pods every port of it is local (answered by the node or rejected), so a real host with that address is unreachable from the cluster on any port.`,
          nftables: `only ${d.vs.address}:${d.vs.port}/${proto} goes to the Service; other ports of ${d.vs.address} are routed to wherever that address lives.`,
          source:
            "pkg/proxy/ipvs/proxier.go (syncService bindAddr for externalIPs and LB IPs not on the node)",
        });
        if (!input.strictARP && (input.live === null || input.live.arpIgnore !== 1)) {
          add(name, {
            id: "strict-arp",
            summary: `the node stops answering ARP for ${d.vs.address}`,
            ipvs: `without --ipvs-strict-arp (arp_ignore=1, arp_announce=2) every node answers ARP for ${d.vs.address} on every interface, because kube-ipvs0 holds it: traffic for it may have reached the cluster only thanks to that (and MetalLB L2 needs strictARP to stop it, metallb#2919).`,
            nftables: `no node answers ARP for ${d.vs.address}: it must be announced (MetalLB speaker, BGP) or routed to the nodes, or it becomes unreachable from outside.`,
            source: "pkg/proxy/ipvs/proxier.go (strictARP sysctls); metallb/metallb#2919",
          });
        }
      }

      if (sp.nodePort !== 0) {
        e.unchanged.add(
          "NodePorts do not answer on 127.0.0.1 in either mode (iptables mode is the one that allows it)",
        );
        if (input.nodePortAddresses === null) {
          const lost = [...nodeAddresses].filter((a) => !input.primaryNodeIPs.includes(a)).sort();
          if (lost.length > 0) {
            add(name, {
              id: "nodeport-addresses",
              summary: `NodePort ${sp.nodePort}/${proto} stops answering on ${lost.join(", ")}`,
              ipvs: "with --nodeport-addresses unset, NodePort virtual servers are made on every node address except loopback and kube-ipvs0's.",
              nftables: `nftables mode defaults --nodeport-addresses to "primary": only ${input.primaryNodeIPs.join(", ") || "the primary node IPs"}. Set --nodeport-addresses to keep the others.`,
              source:
                "cmd/kube-proxy/app/server_linux.go platformApplyDefaults (nftables: primary); pkg/proxy/ipvs/proxier.go (nodeIPs)",
            });
          }
        }
      }

      const cat = categorizeEndpoints(
        state.endpoints.get(servicePortKey(sp.name)) ?? [],
        sp,
        input.nodeName,
        state.nodeLabels,
      );
      if (cat.localEndpoints.length === 0) {
        const cluster = vss.find((d) => d.kind === "ClusterIP");
        if (sp.internalPolicyLocal && cluster !== undefined && cluster.realServers.length > 0) {
          add(name, {
            id: "itp-local-fallback",
            summary: `internalTrafficPolicy Local without a local endpoint: the ClusterIP goes from ${cluster.realServers.length} remote endpoint(s) to none`,
            ipvs: "with no local endpoint, ipvs mode gives the ClusterIP virtual server the cluster-wide endpoints (kubernetes#97081), so pods on this node still reach the Service.",
            nftables: "the ClusterIP uses local endpoints only: with none, connections from this node fail.",
            source: "pkg/proxy/ipvs/proxier.go syncEndpoint (#97081 fallback); pkg/proxy/nftables/proxier.go",
          });
        }
        const external = vss.filter((d) => d.kind !== "ClusterIP" && d.realServers.length > 0);
        if (sp.externalPolicyLocal && external.length > 0) {
          add(name, {
            id: "etp-local-fallback",
            summary:
              "externalTrafficPolicy Local without a local endpoint: external traffic goes from remote endpoints to dropped",
            ipvs: "with no local endpoint, the NodePort/external/LB virtual servers get the cluster-wide endpoints (kubernetes#97081): external packets are forwarded unmasqueraded and their replies usually lost.",
            nftables:
              "external traffic to this node is dropped, as the policy says; health checks already report no local endpoint.",
            source:
              "pkg/proxy/ipvs/proxier.go syncEndpoint; pkg/proxy/nftables/proxier.go (no local endpoints: drop)",
          });
        }
      }
    }
  }

  const node: Finding[] = [];
  const live = input.live;
  if (input.strictARP || (live !== null && (live.arpIgnore === 1 || live.arpAnnounce === 2))) {
    node.push({
      id: "strict-arp",
      summary: "arp_ignore=1 and arp_announce=2 stay set after the switch",
      ipvs: "--ipvs-strict-arp set net.ipv4.conf.all.arp_ignore=1 and arp_announce=2 so that kube-ipvs0's addresses are not announced.",
      nftables:
        "nftables mode neither needs nor resets them: reset them by hand if nothing else (e.g. MetalLB L2) relies on them.",
      source: "pkg/proxy/ipvs/proxier.go NewProxier",
    });
  } else if (anyBoundExternal) {
    node.push({
      id: "strict-arp",
      summary:
        "external and LB IPs were answered by ARP from every node; after the switch no node answers for them",
      ipvs: "strict ARP is off, so every interface answers ARP for every kube-ipvs0 address.",
      nftables: "Service IPs are not local: announce them (MetalLB, BGP) or route them to the nodes.",
      source: "pkg/proxy/ipvs/proxier.go; metallb/metallb#2919",
    });
  }
  // The kernel's IPVS defaults (15 min established, 2 min FIN_WAIT, 5 min UDP) where not configured.
  const defaults = [900, 120, 300] as const;
  const [tcp, tcpFin, udp] = live?.timeouts ?? input.ipvsTimeouts.map((t, i) => (t > 0 ? t : defaults[i]!));
  node.push({
    id: "connection-timeouts",
    summary: `idle connections are kept by conntrack (${input.conntrackTCPEstablishedSeconds}s for established TCP) instead of IPVS's own table (tcp ${tcp}s, tcpfin ${tcpFin}s, udp ${udp}s)`,
    ipvs: "IPVS keeps its own connection entries with the --ipvs-tcp-timeout/-tcpfin-timeout/-udp-timeout values (kernel defaults when unset): an idle TCP connection through a Service is forgotten after them.",
    nftables:
      "connections are tracked by conntrack only: --conntrack-tcp-timeout-established and the kernel's UDP timeouts apply.",
    source: "pkg/proxy/ipvs/proxier.go (ConfigureTimeouts); pkg/proxy/conntrack",
  });
  node.push({
    id: "kube-ipvs0-removed",
    summary: "kube-ipvs0, the ipvs chains and ipsets are removed when nftables mode starts",
    ipvs: "every Service IP is an address of kube-ipvs0.",
    nftables:
      "nftables mode's start-up cleanup deletes kube-ipvs0 with its addresses, the IPVS virtual servers (outside --ipvs-exclude-cidrs) and the KUBE-* ipsets: anything on the node bound to a Service IP (a node-local DNS cache set up for ipvs mode, for one) must be reconfigured first.",
    source: "cmd/kube-proxy/app/server_linux.go platformCleanup; pkg/proxy/ipvs/cleanup.go",
  });

  return {
    from: "ipvs",
    to: "nftables",
    source: input.source,
    services: [...services]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([service, e]) => ({
        service,
        findings: [...e.findings.values()],
        unchanged: [...e.unchanged].sort(),
      })),
    node,
  };
}

export function formatMigrationReport(report: MigrationReport): string {
  const lines: string[] = [`Migration from ${report.from} to ${report.to} (${report.source})`, ""];
  const changed = report.services.filter((s) => s.findings.length > 0);
  lines.push(`${changed.length} of ${report.services.length} Service(s) will behave differently.`, "");
  for (const s of report.services) {
    lines.push(
      `${s.service}: ${s.findings.length === 0 ? "no difference found" : `${s.findings.length} difference(s)`}`,
    );
    for (const f of s.findings) {
      lines.push(
        `  [${f.id}] ${f.summary}`,
        `    ipvs:     ${f.ipvs}`,
        `    nftables: ${f.nftables}`,
        `    source:   ${f.source}`,
      );
    }
    for (const u of s.unchanged) lines.push(`  same: ${u}`);
    lines.push("");
  }
  lines.push("Node:");
  for (const f of report.node) {
    lines.push(
      `  [${f.id}] ${f.summary}`,
      `    ipvs:     ${f.ipvs}`,
      `    nftables: ${f.nftables}`,
      `    source:   ${f.source}`,
    );
  }
  return lines.join("\n") + "\n";
}
