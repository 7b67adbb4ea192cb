/**
 * The pure nftables renderer: ProxyState + settings → every object of `table ip|ip6 kube-proxy`
 * as upstream's nftables proxier (v1.35 layout) writes it in `setupNFTables` and
 * `syncProxyRules`. No clock, no I/O, no randomness; ./transactions.ts turns the result into
 * `nft -f` text.
 */
import { KubeProxyError } from "../../errors.ts";
import {
  canonicalIP,
  cidrContainsSloppy,
  familyOfSloppy,
  isLoopbackSloppy,
  isZeroCIDR,
  parseCIDRSloppy,
} from "../../ip.ts";
import type { LocalDetector } from "../../proxy/node.ts";
import { resolveFeatureGates, type FeatureGates } from "../../proxy/serviceport.ts";
import { categorizeEndpoints, planTrafficPolicy } from "../../proxy/topology.ts";
import { NO_ENDPOINTS, ServicePortMemo } from "../../proxy/memo.ts";
import { servicePortNameString, type Endpoint, type ServicePort } from "../../proxy/types.ts";
import {
  BASE_CHAINS,
  CLUSTER_IPS_CHECK_CHAIN,
  CLUSTER_IPS_SET,
  FIREWALL_CHECK_CHAIN,
  FIREWALL_IPS_MAP,
  JUMP_CHAINS,
  MARK_MASQ_CHAIN,
  MASQUERADING_CHAIN,
  NO_ENDPOINT_NODEPORTS_MAP,
  NO_ENDPOINT_SERVICES_MAP,
  NODEPORT_ENDPOINTS_CHECK_CHAIN,
  NODEPORT_IPS_SET,
  PREFIX_AFFINITY,
  PREFIX_CLUSTER,
  PREFIX_ENDPOINT,
  PREFIX_EXTERNAL,
  PREFIX_FIREWALL,
  PREFIX_LOCAL,
  REJECT_CHAIN,
  SERVICE_ENDPOINTS_CHECK_CHAIN,
  SERVICE_IPS_MAP,
  SERVICE_NODEPORTS_MAP,
  SERVICES_CHAIN,
  servicePortChainNameBase,
  servicePortEndpointChainNameBase,
} from "./names.ts";
import type {
  NftablesRuleset,
  NftablesSettings,
  NftChain,
  NftContainer,
  NftElement,
  RenderRequest,
  ServicePortObjects,
} from "./types.ts";

/**
 * Objects are validated when decoded; this is the last check before text reaches nft: a token
 * with a space, quote, brace or newline would change what a command means.
 */
const SAFE_TOKEN = /^[A-Za-z0-9._:/[\]+*-]+$/;

/** A value in the renderer's input that cannot be written into a command safely. */
export class NftRenderInputError extends KubeProxyError {
  readonly code = "KPT_RENDER_INPUT";

  constructor(
    readonly field: string,
    readonly value: string,
  ) {
    super(`refusing to render ${field} ${JSON.stringify(value)}: not a plain token`);
  }
}

/**
 * nft refuses a comment over 128 characters (NFTNL_UDATA_COMMENT_MAXLEN), and with it the whole
 * transaction; a Service port name can reach 191 (`namespace/name:port`). Comments only inform,
 * so a long one is cut (the text is a validated plain token: one byte per character).
 */
export const NFT_MAX_COMMENT_LENGTH = 128;

function commentText(text: string): string {
  return text.length <= NFT_MAX_COMMENT_LENGTH ? text : text.slice(0, NFT_MAX_COMMENT_LENGTH);
}

function safe(value: string, field: string): string {
  if (!SAFE_TOKEN.test(value)) throw new NftRenderInputError(field, value);
  return value;
}

interface FamilyWords {
  /** `ip` / `ip6`: the table family and the address match keyword. */
  readonly ipX: "ip" | "ip6";
  readonly addrType: "ipv4_addr" | "ipv6_addr";
  /** Excludes loopback from the match-all NodePort rules (no localhost NodePorts in this mode). */
  readonly noLocalhost: string;
}

function familyWords(settings: NftablesSettings): FamilyWords {
  return settings.family === "IPv4"
    ? { ipX: "ip", addrType: "ipv4_addr", noLocalhost: "ip daddr != 127.0.0.0/8" }
    : { ipX: "ip6", addrType: "ipv6_addr", noLocalhost: "ip6 daddr != ::1" };
}

/** Upstream `LocalTrafficDetector.IfLocalNFT()` / `IfNotLocalNFT()`; null = not implemented. */
function localDetectorNFT(d: LocalDetector, ipX: string): { ifLocal: string; ifNotLocal: string } | null {
  switch (d.mode) {
    case "None":
      return null;
    case "ClusterCIDR":
    case "NodeCIDR": {
      const cidr = safe(d.cidr, "localDetector.cidr");
      return { ifLocal: `${ipX} saddr ${cidr}`, ifNotLocal: `${ipX} saddr != ${cidr}` };
    }
    case "BridgeInterface": {
      // By name (`iifname`), as upstream since kubernetes#134024: `iif` resolves the name to an
      // index when the rule is loaded, so nft refuses the whole transaction while the bridge is absent.
      const name = safe(d.interfaceName, "localDetector.interfaceName");
      return { ifLocal: `iifname ${name}`, ifNotLocal: `iifname != ${name}` };
    }
    case "InterfaceNamePrefix": {
      const prefix = safe(d.prefix, "localDetector.prefix");
      return { ifLocal: `iifname ${prefix}*`, ifNotLocal: `iifname != ${prefix}*` };
    }
  }
}

/**
 * Upstream `NodePortAddresses.GetNodeIPs` for this family: null when the CIDRs match every
 * address (or none of this family is given). Loopback addresses are left out: nftables mode
 * has no localhost NodePorts.
 */
function nodePortIPs(settings: NftablesSettings): string[] | null {
  const cidrs: string[] = [];
  for (const text of settings.nodePortAddresses) {
    const c = parseCIDRSloppy(text.trim());
    if (c !== null && c.family === settings.family) cidrs.push(c.cidr);
  }
  if (cidrs.length === 0 || cidrs.some(isZeroCIDR)) return null;
  const ips = new Set<string>();
  for (const addr of settings.localAddresses) {
    const slash = addr.indexOf("/");
    const ip = canonicalIP(slash < 0 ? addr.trim() : addr.slice(0, slash).trim());
    if (ip === null || familyOfSloppy(ip) !== settings.family || isLoopbackSloppy(ip)) continue;
    if (cidrs.some((c) => cidrContainsSloppy(c, ip))) ips.add(safe(ip, "node IP"));
  }
  return [...ips];
}

/**
 * A template literal as one flat string. V8 builds a template literal as a rope (one string
 * object per part once it reaches 13 characters) and flattens it only when something first
 * reads it; the render memo keeps every Service's chain names, rules and element keys from sync
 * to sync, and as ropes they took about twice the memory.
 */
function line(strings: TemplateStringsArray, ...values: readonly (string | number)[]): string {
  const parts: (string | number)[] = [strings[0]!];
  for (let i = 0; i < values.length; i++) parts.push(values[i]!, strings[i + 1]!);
  return parts.join("");
}

interface Ctx {
  readonly settings: NftablesSettings;
  readonly words: FamilyWords;
  readonly detector: { ifLocal: string; ifNotLocal: string } | null;
  readonly gates: FeatureGates;
  readonly nodeLabels: Readonly<Record<string, string>>;
}

interface EndpointNames {
  readonly chain: string;
  readonly affinitySet: string;
}

/**
 * An endpoint chain whose rules are printed when read. The render memo keeps every Service's
 * chains from sync to sync, and at 10,000 × 10 the endpoint chains' rule text (two or three
 * strings and an array per chain) was a third of it; the parts are strings the state already
 * holds (the endpoint's IP and `ip:port`) or constants.
 */
class EndpointChain implements NftChain {
  constructor(
    readonly name: string,
    private readonly ipX: string,
    private readonly ip: string,
    private readonly protocol: string,
    private readonly endpoint: string,
    private readonly affinitySet: string | null,
  ) {}

  get affinitySetName(): string | null {
    return this.affinitySet;
  }

  get rules(): readonly string[] {
    const { ipX, affinitySet } = this;
    // Hairpin: a pod reaching itself through the Service needs SNAT to see the reply.
    const masquerade = line`${ipX} saddr ${this.ip} jump ${MARK_MASQ_CHAIN}`;
    const dnat = line`meta l4proto ${this.protocol} dnat to ${this.endpoint}`;
    if (affinitySet === null) return [masquerade, dnat];
    return [masquerade, line`update @${affinitySet} { ${ipX} saddr }`, dnat];
  }
}

/**
 * A cluster or local policy chain: the rules before the dispatch (`head`), one affinity rule per
 * endpoint when the Service has session affinity, then `numgen random mod N vmap { … }` over the
 * endpoint chains, printed when read (the vmap alone is about 65 characters per endpoint).
 */
class PolicyChain implements NftChain {
  constructor(
    readonly name: string,
    private readonly ipX: string,
    private readonly head: readonly string[],
    private readonly endpoints: readonly EndpointChain[],
    private readonly affinity: boolean,
  ) {}

  get rules(): readonly string[] {
    const { ipX, endpoints } = this;
    const rules = [...this.head];
    if (this.affinity)
      for (const ep of endpoints) rules.push(line`${ipX} saddr @${ep.affinitySetName ?? ""} goto ${ep.name}`);
    const vmap = endpoints.map((ep, i) => `${i} : goto ${ep.name}`).join(" , ");
    rules.push(line`numgen random mod ${endpoints.length} vmap { ${vmap} }`);
    return rules;
  }
}

/** Chain and set names, the objects of one service port, its no-local-endpoint verdicts. */
function renderServicePort(
  ctx: Ctx,
  port: string,
  sp: ServicePort,
  allEndpoints: readonly Endpoint[],
): { objects: ServicePortObjects; noLocalInternal: boolean; noLocalExternal: boolean } {
  const { settings, words, detector } = ctx;
  const { ipX } = words;
  const spn = safe(servicePortNameString(sp.name), "service port name");
  const comment = commentText(spn);
  const protocol = sp.protocol.toLowerCase();
  const clusterIP = safe(sp.clusterIP, `${spn} clusterIP`);
  for (const v of sp.externalIPs) safe(v, `${spn} externalIP`);
  for (const v of sp.loadBalancerVIPs) safe(v, `${spn} loadBalancer IP`);
  for (const v of sp.loadBalancerSourceRanges) safe(v, `${spn} loadBalancerSourceRange`);
  const base = servicePortChainNameBase(sp.name, protocol);
  const clusterPolicyChain = line`${PREFIX_CLUSTER}${base}`;
  const localPolicyChain = line`${PREFIX_LOCAL}${base}`;
  const externalTrafficChain = line`${PREFIX_EXTERNAL}${base}`;
  const fwChain = line`${PREFIX_FIREWALL}${base}`;
  const epNames = new Map<string, EndpointNames>();
  const namesOf = (ep: Endpoint): EndpointNames => {
    let names = epNames.get(ep.endpoint);
    if (names === undefined) {
      const epBase = servicePortEndpointChainNameBase(sp.name, protocol, ep.ip, ep.port);
      names = { chain: line`${PREFIX_ENDPOINT}${epBase}`, affinitySet: line`${PREFIX_AFFINITY}${epBase}` };
      epNames.set(ep.endpoint, names);
    }
    return names;
  };

  const cat = categorizeEndpoints(allEndpoints, sp, settings.nodeName, ctx.nodeLabels, ctx.gates);
  const { clusterEndpoints, localEndpoints } = cat;
  const hasEndpoints = cat.hasAnyEndpoints;
  const {
    usesClusterChain: usesClusterPolicyChain,
    usesLocalChain: usesLocalPolicyChain,
    internalChain: internalTrafficChain,
    hasInternalEndpoints,
    externalPolicyChain,
    hasExternalEndpoints,
    usesExternalTrafficChain,
  } = planTrafficPolicy(sp, cat, clusterPolicyChain, localPolicyChain);

  let internalVerdict = "";
  let externalVerdict = "";
  let noLocalInternal = false;
  let noLocalExternal = false;
  if (!hasEndpoints) {
    internalVerdict = externalVerdict = line`goto ${REJECT_CHAIN}`;
  } else {
    if (!hasInternalEndpoints) {
      internalVerdict = "drop";
      noLocalInternal = true;
    }
    if (!hasExternalEndpoints) {
      externalVerdict = "drop";
      noLocalExternal = true;
    }
  }

  const elements: NftElement[] = [];
  const key = (ip: string): string => line`${ip} . ${protocol} . ${sp.port}`;
  elements.push({ container: CLUSTER_IPS_SET, key: clusterIP });
  if (hasInternalEndpoints) {
    elements.push({
      container: SERVICE_IPS_MAP,
      key: key(clusterIP),
      value: line`goto ${internalTrafficChain}`,
    });
  } else {
    elements.push({
      container: NO_ENDPOINT_SERVICES_MAP,
      key: key(clusterIP),
      comment,
      value: internalVerdict,
    });
  }
  for (const ip of sp.externalIPs) {
    if (hasEndpoints)
      elements.push({ container: SERVICE_IPS_MAP, key: key(ip), value: line`goto ${externalTrafficChain}` });
    if (!hasExternalEndpoints)
      elements.push({
        container: NO_ENDPOINT_SERVICES_MAP,
        key: key(ip),
        comment,
        value: externalVerdict,
      });
  }

  const chains: NftChain[] = [];
  const usesFWChain = sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
  if (usesFWChain) {
    const sources = [...sp.loadBalancerSourceRanges];
    // A VIP-like load balancer often has its IP on the node: the node's own requests to it come
    // back with the VIP as source, and must pass.
    if (sp.loadBalancerSourceRanges.some((r) => cidrContainsSloppy(r, settings.nodeIP)))
      sources.push(...sp.loadBalancerVIPs);
    chains.push({ name: fwChain, rules: [line`${ipX} saddr != { ${sources.join(" , ")} } drop`] });
  }
  for (const ip of sp.loadBalancerVIPs) {
    if (hasEndpoints)
      elements.push({ container: SERVICE_IPS_MAP, key: key(ip), value: line`goto ${externalTrafficChain}` });
    if (usesFWChain)
      elements.push({ container: FIREWALL_IPS_MAP, key: key(ip), value: line`goto ${fwChain}` });
  }
  if (!hasExternalEndpoints) {
    for (const ip of sp.loadBalancerVIPs)
      elements.push({
        container: NO_ENDPOINT_SERVICES_MAP,
        key: key(ip),
        comment,
        value: externalVerdict,
      });
  }
  if (sp.nodePort !== 0) {
    const npKey = line`${protocol} . ${sp.nodePort}`;
    // NodePorts are not subject to loadBalancerSourceRanges, as upstream.
    if (hasEndpoints)
      elements.push({
        container: SERVICE_NODEPORTS_MAP,
        key: npKey,
        value: line`goto ${externalTrafficChain}`,
      });
    if (!hasExternalEndpoints)
      elements.push({
        container: NO_ENDPOINT_NODEPORTS_MAP,
        key: npKey,
        comment,
        value: externalVerdict,
      });
  }

  // Rules per chain; the chains themselves are emitted in a fixed order below.
  const rulesOf = new Map<string, string[]>();
  const add = (chain: string, rule: string): void => {
    const list = rulesOf.get(chain);
    if (list === undefined) rulesOf.set(chain, [rule]);
    else list.push(rule);
  };

  if (hasInternalEndpoints) {
    // Off-cluster traffic to a ClusterIP (a static route to any node) may bounce off-node: masquerade it.
    if (settings.masqueradeAll)
      add(internalTrafficChain, line`${ipX} daddr ${clusterIP} jump ${MARK_MASQ_CHAIN}`);
    else if (detector !== null)
      add(
        internalTrafficChain,
        line`${ipX} daddr ${clusterIP} ${detector.ifNotLocal} jump ${MARK_MASQ_CHAIN}`,
      );
  }
  if (usesExternalTrafficChain) {
    if (!sp.externalPolicyLocal) {
      add(externalTrafficChain, line`jump ${MARK_MASQ_CHAIN}`);
    } else {
      // Pod traffic to an external address behaves as if it went out to the load balancer and
      // came back: all endpoints, no masquerade. Host traffic gets the node IP as source: masquerade.
      if (detector !== null)
        add(
          externalTrafficChain,
          line`${detector.ifLocal} goto ${clusterPolicyChain} comment "short-circuit pod traffic"`,
        );
      add(
        externalTrafficChain,
        line`fib saddr type local jump ${MARK_MASQ_CHAIN} comment "masquerade local traffic"`,
      );
      add(
        externalTrafficChain,
        line`fib saddr type local goto ${clusterPolicyChain} comment "short-circuit local traffic"`,
      );
    }
    if (hasExternalEndpoints) add(externalTrafficChain, line`goto ${externalPolicyChain}`);
  }

  const affinity = sp.sessionAffinity;
  const affinitySets: NftContainer[] = [];
  if (affinity !== null) {
    for (const ep of cat.allReachableEndpoints) {
      affinitySets.push({
        kind: "set",
        name: namesOf(ep).affinitySet,
        type: words.addrType,
        // Without "dynamic" some kernels (RHEL 8) add it themselves, and the next add then fails.
        flags: ["dynamic", "timeout"],
        timeoutSeconds: affinity.maxAgeSeconds,
      });
    }
  }
  const endpointChains = new Map<string, EndpointChain>();
  const chainOf = (ep: Endpoint): EndpointChain => {
    let chain = endpointChains.get(ep.endpoint);
    if (chain === undefined) {
      const names = namesOf(ep);
      chain = new EndpointChain(
        names.chain,
        ipX,
        safe(ep.ip, `${spn} endpoint IP`),
        protocol,
        safe(ep.endpoint, `${spn} endpoint`),
        affinity === null ? null : names.affinitySet,
      );
      endpointChains.set(ep.endpoint, chain);
    }
    return chain;
  };
  const policy = (name: string, endpoints: readonly Endpoint[]): PolicyChain =>
    new PolicyChain(name, ipX, rulesOf.get(name)?.slice() ?? [], endpoints.map(chainOf), affinity !== null);

  // Copied at their exact length: a pushed-to array keeps room for 17 and more.
  if (usesClusterPolicyChain) chains.push(policy(clusterPolicyChain, clusterEndpoints));
  if (usesLocalPolicyChain) chains.push(policy(localPolicyChain, localEndpoints));
  if (usesExternalTrafficChain)
    chains.push({ name: externalTrafficChain, rules: rulesOf.get(externalTrafficChain)?.slice() ?? [] });
  for (const ep of cat.allReachableEndpoints) chains.push(chainOf(ep));

  return {
    // One object per rendering: a partial sync tells an unchanged service port by its identity.
    objects: {
      service: line`${sp.name.namespace}/${sp.name.name}`,
      port,
      chains: chains.slice(),
      affinitySets: affinitySets.slice(),
      elements: elements.slice(),
    },
    noLocalInternal,
    noLocalExternal,
  };
}

/** The fixed skeleton of the table (upstream `setupNFTables`). */
function skeleton(
  settings: NftablesSettings,
  words: FamilyWords,
  npIPs: readonly string[] | null,
): Pick<NftablesRuleset, "baseChains" | "fixedChains" | "containers" | "nodePortIPsSet"> {
  const { ipX, addrType, noLocalhost } = words;
  const mark = safe(settings.masqueradeMark, "masqueradeMark");
  const tuple = `${addrType} . inet_proto . inet_service : verdict`;
  const containers: NftContainer[] = [
    { kind: "set", name: CLUSTER_IPS_SET, type: addrType, comment: "Active ClusterIPs" },
    {
      kind: "map",
      name: NO_ENDPOINT_SERVICES_MAP,
      type: tuple,
      comment: "vmap to drop or reject packets to services with no endpoints",
    },
    {
      kind: "map",
      name: NO_ENDPOINT_NODEPORTS_MAP,
      type: "inet_proto . inet_service : verdict",
      comment: "vmap to drop or reject packets to service nodeports with no endpoints",
    },
    {
      kind: "map",
      name: FIREWALL_IPS_MAP,
      type: tuple,
      comment: "destinations that are subject to LoadBalancerSourceRanges",
    },
    {
      kind: "map",
      name: SERVICE_IPS_MAP,
      type: tuple,
      comment: "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    },
    {
      kind: "map",
      name: SERVICE_NODEPORTS_MAP,
      type: "inet_proto . inet_service : verdict",
      comment: "NodePort traffic",
    },
  ];
  const nodePortIPsSet: NftContainer = {
    kind: "set",
    name: NODEPORT_IPS_SET,
    type: addrType,
    comment: "IPs that accept NodePort traffic",
  };

  const baseRules = new Map<string, string[]>(BASE_CHAINS.map((c) => [c.name, []]));
  for (const j of JUMP_CHAINS)
    baseRules.get(j.srcChain)!.push(j.match === "" ? `jump ${j.dstChain}` : `${j.match} jump ${j.dstChain}`);
  const baseChains = BASE_CHAINS.map((c) => ({ name: c.name, rules: baseRules.get(c.name)! }));

  const nodePortMatch =
    npIPs === null ? `fib daddr type local ${noLocalhost}` : `${ipX} daddr @${NODEPORT_IPS_SET}`;
  const clusterIPsCheck = [
    `${ipX} daddr @${CLUSTER_IPS_SET} reject comment "Reject traffic to invalid ports of ClusterIPs"`,
  ];
  if (settings.serviceCIDRs.length > 0) {
    const cidrs = settings.serviceCIDRs.map((c) => safe(c, "serviceCIDR")).join(",");
    clusterIPsCheck.push(`${ipX} daddr { ${cidrs} } drop comment "Drop traffic to unallocated ClusterIPs"`);
  }
  const fixedChains: NftChain[] = [
    {
      name: FIREWALL_CHECK_CHAIN,
      rules: [`${ipX} daddr . meta l4proto . th dport vmap @${FIREWALL_IPS_MAP}`],
    },
    {
      name: SERVICE_ENDPOINTS_CHECK_CHAIN,
      rules: [`${ipX} daddr . meta l4proto . th dport vmap @${NO_ENDPOINT_SERVICES_MAP}`],
    },
    {
      name: NODEPORT_ENDPOINTS_CHECK_CHAIN,
      rules: [`${nodePortMatch} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS_MAP}`],
    },
    { name: CLUSTER_IPS_CHECK_CHAIN, rules: clusterIPsCheck },
    {
      name: SERVICES_CHAIN,
      rules: [
        `${ipX} daddr . meta l4proto . th dport vmap @${SERVICE_IPS_MAP}`,
        `${nodePortMatch} meta l4proto . th dport vmap @${SERVICE_NODEPORTS_MAP}`,
      ],
    },
    {
      name: MASQUERADING_CHAIN,
      rules: [`mark and ${mark} == 0 return`, `mark set mark xor ${mark}`, "masquerade fully-random"],
    },
    { name: MARK_MASQ_CHAIN, rules: [`mark set mark or ${mark}`] },
    {
      name: REJECT_CHAIN,
      comment: "helper for @no-endpoint-services / @no-endpoint-nodeports",
      rules: ["reject"],
    },
  ];
  return { baseChains, fixedChains, containers, nodePortIPsSet };
}

type ServicePortOutput = ReturnType<typeof renderServicePort>;

interface SortedPort {
  readonly key: string;
  readonly sp: ServicePort;
  /** Orders as compareServicePorts: the name string, then (after a NUL, below any character) the protocol. */
  readonly order: string;
}

const byOrder = (a: SortedPort, b: SortedPort): number =>
  a.order < b.order ? -1 : a.order > b.order ? 1 : 0;

/** Rendered service ports of earlier syncs, by ServicePort (see ServicePortMemo). */
const outputs = new ServicePortMemo<ServicePortOutput>();

/** The last sync's service ports of each family in upstream's order, and by key (our own copy). */
const lastOrder = new Map<string, { byKey: Map<string, ServicePort>; sorted: readonly SortedPort[] }>();

/**
 * `services` in compareServicePorts order. A partial sync at 44,000 Services changes a few of
 * them: the last sync's order is kept for every ServicePort that is still the same object, and
 * only the others are sorted and inserted, instead of sorting (and building two name strings
 * per comparison) again. The result does not depend on the cache.
 */
function sortedPorts(services: ReadonlyMap<string, ServicePort>, family: string): readonly SortedPort[] {
  const entry = (key: string, sp: ServicePort): SortedPort => ({
    key,
    sp,
    order: `${servicePortNameString(sp.name)}\u0000${sp.protocol}`,
  });
  const last = lastOrder.get(family);
  if (last === undefined) {
    const sorted: SortedPort[] = [];
    for (const [key, sp] of services) sorted.push(entry(key, sp));
    sorted.sort(byOrder);
    lastOrder.set(family, { byKey: new Map(services), sorted });
    return sorted;
  }
  const { byKey } = last;
  const sorted: SortedPort[] = [];
  for (const p of last.sorted) {
    if (services.get(p.key) === p.sp) sorted.push(p);
    else byKey.delete(p.key);
  }
  if (sorted.length === last.sorted.length && sorted.length === services.size) return last.sorted;
  const added: SortedPort[] = [];
  if (sorted.length < services.size) {
    for (const [key, sp] of services) {
      if (byKey.get(key) === sp) continue;
      added.push(entry(key, sp));
      byKey.set(key, sp);
    }
  }
  if (added.length > sorted.length / 8) {
    for (const p of added) sorted.push(p);
    sorted.sort(byOrder);
  } else {
    added.sort(byOrder);
    for (const p of added) {
      let lo = 0;
      let hi = sorted.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (byOrder(sorted[mid]!, p) < 0) lo = mid + 1;
        else hi = mid;
      }
      sorted.splice(lo, 0, p);
    }
  }
  lastOrder.set(family, { byKey, sorted });
  return sorted;
}

/** Every object of the table for `req.state` (the whole desired state, partial or not). */
export function renderNftables(req: RenderRequest): NftablesRuleset {
  const { state, settings } = req;
  const words = familyWords(settings);
  const ctx: Ctx = {
    settings,
    words,
    detector: localDetectorNFT(settings.localDetector, words.ipX),
    gates: resolveFeatureGates(req.featureGates),
    nodeLabels: state.nodeLabels,
  };
  const npIPs = nodePortIPs(settings);
  const services: ServicePortObjects[] = [];
  let internal = 0;
  let external = 0;
  for (const { key, sp } of sortedPorts(state.services, words.ipX)) {
    const endpoints = state.endpoints.get(key) ?? NO_ENDPOINTS;
    const out = outputs.get(sp, endpoints, [ctx.settings, req.featureGates, ctx.nodeLabels], () =>
      renderServicePort(ctx, key, sp, endpoints),
    );
    if (out.noLocalInternal) internal++;
    if (out.noLocalExternal) external++;
    services.push(out.objects);
  }
  return {
    family: words.ipX,
    ...skeleton(settings, words, npIPs),
    nodePortIPs: npIPs,
    services,
    noLocalEndpoints: { internal, external },
  };
}
