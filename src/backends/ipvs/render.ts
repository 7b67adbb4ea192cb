/**
 * The pure renderer of ipvs mode (upstream pkg/proxy/ipvs/proxier.go `syncProxyRules` and
 * `writeIptablesRules`, without the kernel calls in between): from the state of one family and
 * the node, the virtual servers with their real servers, the addresses kube-ipvs0 must hold, the
 * ipsets with their entries and the iptables payload. Same input, same output: the writer diffs
 * it against the kernel, `render` prints it. docs/ipvs-mode.md says what each part is for.
 */
import { cidrContainsSloppy, familyOf, isZeroCIDR, joinHostPort } from "../../ip.ts";
import type { LocalDetector } from "../../proxy/node.ts";
import { resolveFeatureGates } from "../../proxy/serviceport.ts";
import { categorizeEndpoints } from "../../proxy/topology.ts";
import {
  compareServicePorts,
  servicePortKey,
  servicePortNameString,
  type Endpoint,
} from "../../proxy/types.ts";
import {
  IPSET_INFO,
  IPVS_CHAINS,
  ipsetName,
  KUBE_FORWARD,
  KUBE_IPVS_FILTER,
  KUBE_IPVS_OUT_FILTER,
  KUBE_LOAD_BALANCER,
  KUBE_MARK_MASQ,
  KUBE_NODE_PORT,
  KUBE_POSTROUTING,
  KUBE_SERVICES,
  KUBE_SOURCE_RANGES_FIREWALL,
  SET_RULES,
  type SetKey,
} from "./names.ts";
import type {
  DesiredVirtualServer,
  IpsetState,
  IpvsDesiredState,
  IpvsRenderRequest,
  IpvsSettings,
  RealServer,
  VirtualServer,
  VirtualServerKind,
} from "./types.ts";

/** `TCP:10.0.0.1:80`, `UDP:[2001:db8::1]:53`: one virtual server's identity. */
export function virtualServerKey(vs: Pick<VirtualServer, "protocol" | "address" | "port">): string {
  return `${vs.protocol}:${joinHostPort(vs.address, vs.port)}`;
}

/** `10.180.0.1:80`: one real server's identity within its virtual server. */
export function realServerKey(rs: Pick<RealServer, "address" | "port">): string {
  return joinHostPort(rs.address, rs.port);
}

/** Upstream `LocalTrafficDetector.IfNotLocal()`; null = not implemented. */
function ifNotLocal(d: LocalDetector): string | null {
  switch (d.mode) {
    case "None":
      return null;
    case "ClusterCIDR":
    case "NodeCIDR":
      return `! -s ${d.cidr}`;
    case "BridgeInterface":
      return `! -i ${d.interfaceName}`;
    case "InterfaceNamePrefix":
      return `! -i ${d.prefix}+`;
  }
}

/**
 * The node IPs NodePort virtual servers are created on (upstream: all node addresses when
 * `--nodeport-addresses` matches everything of this family, else those in its CIDRs, loopback
 * excluded either way).
 */
export function nodePortIPs(settings: IpvsSettings, nodeAddresses: readonly string[]): string[] {
  const cidrs = settings.nodePortAddresses.filter((c) => familyOf(c) === settings.family);
  if (cidrs.length === 0 || cidrs.some(isZeroCIDR)) return [...nodeAddresses];
  return nodeAddresses.filter((ip) => cidrs.some((c) => cidrContainsSloppy(c, ip)));
}

const compareRealServers = (a: RealServer, b: RealServer): number =>
  a.address < b.address ? -1 : a.address > b.address ? 1 : a.port - b.port;

class SetEntries {
  private readonly entries = new Map<SetKey, Set<string>>();
  add(key: SetKey, entry: string): void {
    let set = this.entries.get(key);
    if (set === undefined) this.entries.set(key, (set = new Set()));
    set.add(entry);
  }
  has(key: SetKey): boolean {
    return (this.entries.get(key)?.size ?? 0) > 0;
  }
  list(key: SetKey): string[] {
    return [...(this.entries.get(key) ?? [])].sort();
  }
}

export function renderIpvs(request: IpvsRenderRequest): IpvsDesiredState {
  const { state, settings, nodeAddresses } = request;
  const gates = resolveFeatureGates(request.featureGates);
  const family = state.family;
  const sets = new SetEntries();
  const virtualServers: DesiredVirtualServer[] = [];
  const bindAddresses = new Set<string>();
  const nodeAddressSet = new Set(nodeAddresses);
  const npIPs = nodePortIPs(settings, nodeAddresses);
  const noLocalInternal = new Set<string>();
  const noLocalExternal = new Set<string>();
  const lbNoNodeAccess: { ip: string; protocol: string; port: number }[] = [];

  const services = [...state.services.values()].sort(compareServicePorts);
  for (const sp of services) {
    const endpoints = state.endpoints.get(servicePortKey(sp.name)) ?? [];
    const protocol = sp.protocol.toLowerCase();
    const service = `${sp.name.namespace}/${sp.name.name}`;
    const servicePort = servicePortNameString(sp.name);
    const cat = categorizeEndpoints(endpoints, sp, settings.nodeName, state.nodeLabels, gates);

    // Upstream `syncEndpoint`: a Local policy uses the local endpoints, or the cluster ones when
    // there are none, so local pods still reach the Service (#97081).
    const realServersFor = (onlyNodeLocal: boolean): RealServer[] => {
      let chosen: readonly Endpoint[] = cat.clusterEndpoints;
      if (onlyNodeLocal) {
        if (cat.localEndpoints.length > 0) chosen = cat.localEndpoints;
        else {
          if (cat.hasAnyEndpoints && sp.internalPolicyLocal) noLocalInternal.add(service);
          if (cat.hasAnyEndpoints && sp.externalPolicyLocal) noLocalExternal.add(service);
        }
      }
      const unique = new Map<string, RealServer>();
      for (const ep of chosen) unique.set(ep.endpoint, { address: ep.ip, port: ep.port, weight: 1 });
      return [...unique.values()].sort(compareRealServers);
    };
    const virtualServer = (address: string, port: number): VirtualServer => ({
      protocol: sp.protocol,
      address,
      port,
      scheduler: settings.scheduler,
      persistence: sp.sessionAffinity === null ? 0 : sp.sessionAffinity.maxAgeSeconds,
      schedFlags: settings.scheduler === "mh" ? ["mh-port"] : [],
    });
    const push = (kind: VirtualServerKind, vs: VirtualServer, onlyNodeLocal: boolean, bind: boolean) => {
      virtualServers.push({
        service,
        servicePort,
        kind,
        vs,
        realServers: realServersFor(onlyNodeLocal),
        bind,
      });
      if (bind) bindAddresses.add(vs.address);
    };

    // Hairpin: an endpoint on this node reaching itself through the Service is masqueraded.
    for (const ep of endpoints) {
      if (ep.isLocal) sets.add("loopBack", `${ep.ip},${protocol}:${ep.port},${ep.ip}`);
    }

    sets.add("clusterIP", `${sp.clusterIP},${protocol}:${sp.port}`);
    push("ClusterIP", virtualServer(sp.clusterIP, sp.port), sp.internalPolicyLocal, true);

    for (const ip of sp.externalIPs) {
      sets.add(sp.externalPolicyLocal ? "externalIPLocal" : "externalIP", `${ip},${protocol}:${sp.port}`);
      push("ExternalIP", virtualServer(ip, sp.port), sp.externalPolicyLocal, !nodeAddressSet.has(ip));
    }

    for (const ip of sp.loadBalancerVIPs) {
      const entry = `${ip},${protocol}:${sp.port}`;
      sets.add("loadBalancer", entry);
      if (sp.externalPolicyLocal) sets.add("loadBalancerLocal", entry);
      if (sp.loadBalancerSourceRanges.length > 0) {
        sets.add("loadBalancerFW", entry);
        let allowFromNode = false;
        for (const cidr of sp.loadBalancerSourceRanges) {
          sets.add("loadBalancerSourceCIDR", `${entry},${cidr}`);
          if (cidrContainsSloppy(cidr, settings.nodeIP)) allowFromNode = true;
        }
        // The node reaching its own LB IP arrives with the LB IP as source (it is on kube-ipvs0).
        if (allowFromNode) sets.add("loadBalancerSourceIP", `${entry},${ip}`);
        else lbNoNodeAccess.push({ ip, protocol, port: sp.port });
      }
      push("LoadBalancer", virtualServer(ip, sp.port), sp.externalPolicyLocal, !nodeAddressSet.has(ip));
    }

    if (sp.nodePort !== 0 && npIPs.length > 0) {
      const local = sp.externalPolicyLocal;
      if (sp.protocol === "SCTP") {
        for (const ip of npIPs) {
          sets.add("nodePortSCTP", `${ip},sctp:${sp.nodePort}`);
          if (local) sets.add("nodePortLocalSCTP", `${ip},sctp:${sp.nodePort}`);
        }
      } else {
        const [all, localSet]: [SetKey, SetKey] =
          sp.protocol === "TCP" ? ["nodePortTCP", "nodePortLocalTCP"] : ["nodePortUDP", "nodePortLocalUDP"];
        sets.add(all, String(sp.nodePort));
        if (local) sets.add(localSet, String(sp.nodePort));
      }
      for (const ip of npIPs) push("NodePort", virtualServer(ip, sp.nodePort), local, false);
    }

    // Upstream skips this too when the NodePort could not be set up (no node IPs): its `continue`.
    if (sp.healthCheckNodePort !== 0 && !(sp.nodePort !== 0 && npIPs.length === 0)) {
      sets.add("healthCheckNodePort", String(sp.healthCheckNodePort));
    }
  }

  for (const ip of bindAddresses) sets.add("ipvsIPs", ip);

  const ipsets: IpsetState[] = IPSET_INFO.map((info) => ({
    name: ipsetName(info.key, family),
    type: info.type,
    family: info.type === "bitmap:port" ? null : family === "IPv4" ? "inet" : "inet6",
    entries: sets.list(info.key),
  }));

  return {
    family,
    virtualServers,
    bindAddresses: [...bindAddresses].sort(),
    ipsets,
    iptables: iptablesPayload(settings, sets, lbNoNodeAccess),
    noLocalEndpoints: { internal: noLocalInternal.size, external: noLocalExternal.size },
  };
}

const quoted = (text: string): string => `"${text}"`;

/** Upstream `writeIptablesRules` and `acceptIPVSTraffic`, as one iptables-restore payload. */
function iptablesPayload(
  settings: IpvsSettings,
  sets: SetEntries,
  lbNoNodeAccess: readonly { ip: string; protocol: string; port: number }[],
): string {
  const family = settings.family;
  const name = (key: SetKey): string => ipsetName(key, family);
  const comment = (key: SetKey): string => quoted(IPSET_INFO.find((i) => i.key === key)!.comment);
  const mark = settings.masqueradeMark;
  const nat: string[] = [];
  const filter: string[] = [];

  nat.push(`-A ${KUBE_SERVICES} -s ${family === "IPv4" ? "127.0.0.0/8" : "::1/128"} -j RETURN`);
  for (const rule of SET_RULES) {
    if (!sets.has(rule.key)) continue;
    const proto = rule.protocol === "" ? "" : ` -p ${rule.protocol}`;
    const line = `-A ${rule.from}${proto} -m comment --comment ${comment(rule.key)} -m set --match-set ${name(rule.key)} ${rule.match} -j ${rule.to}`;
    (rule.table === "nat" ? nat : filter).push(line);
  }

  if (sets.has("clusterIP")) {
    const base = `-A ${KUBE_SERVICES} -m comment --comment ${comment("clusterIP")} -m set --match-set ${name("clusterIP")}`;
    const notLocal = ifNotLocal(settings.localDetector);
    if (settings.masqueradeAll) nat.push(`${base} dst,dst -j ${KUBE_MARK_MASQ}`);
    else if (notLocal !== null) nat.push(`${base} dst,dst ${notLocal} -j ${KUBE_MARK_MASQ}`);
    // Without a local detector, only node-originated traffic from a VIP (kube-ipvs0 holds them
    // all, so the kernel picks one as source) is masqueraded.
    else nat.push(`${base} src,dst -j ${KUBE_MARK_MASQ}`);
  }

  const externalIPRules = (base: string): void => {
    nat.push(`${base} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT`);
    nat.push(`${base} -m addrtype --dst-type LOCAL -j ACCEPT`);
  };
  if (sets.has("externalIP")) {
    const base = `-A ${KUBE_SERVICES} -m comment --comment ${comment("externalIP")} -m set --match-set ${name("externalIP")} dst,dst`;
    nat.push(`${base} -j ${KUBE_MARK_MASQ}`);
    externalIPRules(base);
  }
  if (sets.has("externalIPLocal")) {
    externalIPRules(
      `-A ${KUBE_SERVICES} -m comment --comment ${comment("externalIPLocal")} -m set --match-set ${name("externalIPLocal")} dst,dst`,
    );
  }

  nat.push(`-A ${KUBE_SERVICES} -m addrtype --dst-type LOCAL -j ${KUBE_NODE_PORT}`);
  nat.push(`-A ${KUBE_LOAD_BALANCER} -j ${KUBE_MARK_MASQ}`);
  filter.push(`-A ${KUBE_SOURCE_RANGES_FIREWALL} -j DROP`);
  for (const e of lbNoNodeAccess) {
    filter.push(
      `-A ${KUBE_IPVS_OUT_FILTER} -s ${e.ip} -m ipvs --vaddr ${e.ip} --vproto ${e.protocol} --vport ${e.port} -j DROP`,
    );
  }
  for (const key of ["clusterIP", "loadBalancer"] as const) {
    if (sets.has(key)) nat.push(`-A ${KUBE_SERVICES} -m set --match-set ${name(key)} dst,dst -j ACCEPT`);
  }

  filter.push(
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark ${mark}/${mark} -j ACCEPT`,
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
    `-A ${KUBE_NODE_PORT} -m comment --comment ${comment("healthCheckNodePort")} -m set --match-set ${name("healthCheckNodePort")} dst -j ACCEPT`,
    // Ports of the host must not answer on VIPs (#72236): only Service ports pass.
    `-A ${KUBE_IPVS_FILTER} -m set --match-set ${name("loadBalancer")} dst,dst -j RETURN`,
    `-A ${KUBE_IPVS_FILTER} -m set --match-set ${name("clusterIP")} dst,dst -j RETURN`,
    `-A ${KUBE_IPVS_FILTER} -m set --match-set ${name("externalIP")} dst,dst -j RETURN`,
    `-A ${KUBE_IPVS_FILTER} -m set --match-set ${name("externalIPLocal")} dst,dst -j RETURN`,
    `-A ${KUBE_IPVS_FILTER} -m set --match-set ${name("healthCheckNodePort")} dst -j RETURN`,
    `-A ${KUBE_IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set ${name("ipvsIPs")} dst -j REJECT`,
  );

  nat.push(
    `-A ${KUBE_POSTROUTING} -m mark ! --mark ${mark}/${mark} -j RETURN`,
    `-A ${KUBE_POSTROUTING} -j MARK --xor-mark ${mark}`,
    `-A ${KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE${settings.randomFully ? " --random-fully" : ""}`,
    `-A ${KUBE_MARK_MASQ} -j MARK --or-mark ${mark}`,
  );

  return [
    "*nat",
    ...IPVS_CHAINS.nat.map((c) => `:${c} - [0:0]`),
    ...nat,
    "COMMIT",
    "*filter",
    ...IPVS_CHAINS.filter.map((c) => `:${c} - [0:0]`),
    ...filter,
    "COMMIT",
    "",
  ].join("\n");
}
