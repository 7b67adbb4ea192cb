/**
 * The pure iptables renderer: ProxyState + settings → the iptables-restore document upstream
 * kube-proxy writes in `syncProxyRules` (docs/iptables.md §2.5, §3, §4). No clock, no I/O, no randomness.
 */
import { KubeProxyError } from "../../errors.ts";
import { NO_ENDPOINTS, ServicePortMemo } from "../../proxy/memo.ts";
import type { Endpoint, ServicePort } from "../../proxy/types.ts";
import { compareServicePorts, servicePortNameString } from "../../proxy/types.ts";
import {
  canonicalIP,
  cidrContainsSloppy,
  familyOfSloppy,
  isLoopbackSloppy,
  isZeroCIDR,
  parseCIDRSloppy,
} from "../../ip.ts";
import { categorizeEndpoints, planTrafficPolicy } from "../../proxy/topology.ts";
import { resolveFeatureGates } from "../../proxy/serviceport.ts";
import type { FeatureGates } from "../../proxy/serviceport.ts";
import {
  KUBE_EXTERNAL_SERVICES,
  KUBE_FIREWALL,
  KUBE_FORWARD,
  KUBE_MARK_MASQ,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  NFACCT_CT_STATE_INVALID_DROPPED_PKTS,
  NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS,
  computeProbability,
  endpointChainName,
  isServiceChainName,
  servicePortChainNames,
} from "./chains.ts";
import type { LocalDetector } from "../../proxy/node.ts";
import type {
  FinishRender,
  IptablesSettings,
  RenderRequest,
  RenderResult,
  ServiceChainsBlock,
  StreamRenderRequest,
} from "./types.ts";

const chainLine = (chain: string): string => `:${chain} - [0:0]`;

/**
 * A template literal as one flat string. V8 builds a template literal as a rope, one string
 * object per part once it is 13 characters long, and flattens it only when something first
 * hashes or reads it; the memo keeps every Service's capture and filter rules from sync to sync,
 * so they are made flat at once.
 */
function line(strings: TemplateStringsArray, ...values: readonly (string | number)[]): string {
  const parts: (string | number)[] = [strings[0]!];
  for (let i = 0; i < values.length; i++) parts.push(values[i]!, strings[i + 1]!);
  return parts.join("");
}

/**
 * The model is validated when objects are decoded; this is the last line of defence before text
 * reaches iptables-restore: a token with a space, quote or newline would change the rule's meaning.
 */
const SAFE_TOKEN = /^[A-Za-z0-9._:/[\]+-]+$/;

/** A value in the renderer's input that cannot be written into a rule safely. */
export class RenderInputError extends KubeProxyError {
  readonly code = "KPT_RENDER_INPUT";

  constructor(
    readonly field: string,
    readonly value: string,
  ) {
    super(`refusing to render ${field} ${JSON.stringify(value)}: not a plain token`);
  }
}

function safe(value: string, field: string): string {
  if (!SAFE_TOKEN.test(value)) throw new RenderInputError(field, value);
  return value;
}

const NODEPORTS_TAIL_COMMENT =
  '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"';

/** Upstream `NodePortAddresses` for one family (pkg/proxy/util/nodeport_addresses.go). */
interface NodePortAddresses {
  readonly matchAll: boolean;
  /** Masked networks of this family. */
  readonly cidrs: readonly string[];
  readonly containsIPv4Loopback: boolean;
}

function nodePortAddressesFor(settings: IptablesSettings): NodePortAddresses {
  const cidrs: string[] = [];
  let containsIPv4Loopback = false;
  for (const text of settings.nodePortAddresses) {
    const c = parseCIDRSloppy(text.trim());
    if (c === null || c.family !== settings.family) continue;
    cidrs.push(c.cidr);
    if (c.family === "IPv4" && (isLoopbackSloppy(c.ip) || cidrContainsSloppy(c.cidr, "127.0.0.0"))) {
      containsIPv4Loopback = true;
    }
  }
  if (cidrs.length === 0) {
    cidrs.push(settings.family === "IPv4" ? "0.0.0.0/0" : "::/0");
    if (settings.family === "IPv4") containsIPv4Loopback = true;
  }
  return { matchAll: cidrs.some(isZeroCIDR), cidrs, containsIPv4Loopback };
}

/** Upstream `LocalTrafficDetector.IfLocal()` / `IfNotLocal()`; null = not implemented. */
function localDetectorArgs(d: LocalDetector): { ifLocal: string; ifNotLocal: string } | null {
  switch (d.mode) {
    case "None":
      return null;
    case "ClusterCIDR":
    case "NodeCIDR":
      return { ifLocal: `-s ${safe(d.cidr, "localDetector.cidr")}`, ifNotLocal: `! -s ${d.cidr}` };
    case "BridgeInterface":
      return {
        ifLocal: `-i ${safe(d.interfaceName, "localDetector.interfaceName")}`,
        ifNotLocal: `! -i ${d.interfaceName}`,
      };
    case "InterfaceNamePrefix":
      return { ifLocal: `-i ${safe(d.prefix, "localDetector.prefix")}+`, ifNotLocal: `! -i ${d.prefix}+` };
  }
}

interface Ctx {
  readonly settings: IptablesSettings;
  readonly gates: FeatureGates;
  readonly detector: { ifLocal: string; ifNotLocal: string } | null;
  readonly localhostNodePorts: boolean;
  readonly ipv4: boolean;
  readonly largeClusterMode: boolean;
  readonly nodeIPInRange: (ranges: readonly string[]) => boolean;
}

/**
 * What the memo keeps of a rendered service port: all that a sync needs of a Service it does not
 * write. The text of its chains' rules is not kept (at 10,000 Services x 10 endpoints it is 27 MB,
 * the largest part of the daemon's heap): a partial sync writes only Services that changed, which
 * the memo misses anyway, and a full sync renders the written Services again.
 */
interface ServiceOutput {
  readonly filterRules: string[];
  readonly captureRules: string[];
  readonly ruleCount: number;
  /** The chains, in the order they are declared (`chainText`). */
  readonly activeChains: string[];
  readonly noLocalInternal: boolean;
  readonly noLocalExternal: boolean;
}

/** Service → endpoint rules of one policy chain (upstream `writeServiceToEndpointRules`). */
function writeServiceToEndpointRules(
  out: string[],
  ctx: Ctx,
  spn: string,
  sepOf: (ep: Endpoint) => string,
  sp: ServicePort,
  chain: string,
  endpoints: readonly Endpoint[],
): void {
  if (sp.sessionAffinity !== null) {
    for (const ep of endpoints) {
      const sep = sepOf(ep);
      const comment = ctx.largeClusterMode ? "" : ` -m comment --comment "${spn} -> ${ep.endpoint}"`;
      out.push(
        `-A ${chain}${comment} -m recent --name ${sep} --rcheck --seconds ${sp.sessionAffinity.maxAgeSeconds} --reap -j ${sep}`,
      );
    }
  }
  const n = endpoints.length;
  for (let i = 0; i < n; i++) {
    const ep = endpoints[i] as Endpoint;
    const sep = sepOf(ep);
    const comment = ctx.largeClusterMode ? "" : ` -m comment --comment "${spn} -> ${ep.endpoint}"`;
    const statistic =
      i < n - 1 ? ` -m statistic --mode random --probability ${computeProbability(n - i)}` : "";
    out.push(`-A ${chain}${comment}${statistic} -j ${sep}`);
  }
}

function renderServicePort(
  ctx: Ctx,
  sp: ServicePort,
  allEndpoints: readonly Endpoint[],
  req: StreamRenderRequest,
): { readonly out: ServiceOutput; readonly ruleText: string } {
  const { settings } = ctx;
  const spn = safe(servicePortNameString(sp.name), "service port name");
  const p = sp.protocol.toLowerCase();
  safe(sp.clusterIP, `${spn} clusterIP`);
  for (const v of sp.externalIPs) safe(v, `${spn} externalIP`);
  for (const v of sp.loadBalancerVIPs) safe(v, `${spn} loadBalancer IP`);
  for (const v of sp.loadBalancerSourceRanges) safe(v, `${spn} loadBalancerSourceRange`);
  const names = servicePortChainNames(spn, p);
  const clusterChain = names.cluster;
  const localChain = names.local;
  const extChain = names.external;
  const fwChain = names.firewall;
  // Each endpoint's chain name is needed up to three times; hash it once per service port.
  const sepNames = new Map<string, string>();
  const sepOf = (ep: Endpoint): string => {
    let name = sepNames.get(ep.endpoint);
    if (name === undefined) {
      name = endpointChainName(spn, p, ep.endpoint);
      sepNames.set(ep.endpoint, name);
    }
    return name;
  };

  const cat = categorizeEndpoints(allEndpoints, sp, settings.nodeName, req.state.nodeLabels, ctx.gates);
  const clusterEps = cat.clusterEndpoints;
  const localEps = cat.localEndpoints;
  const hasEndpoints = cat.hasAnyEndpoints;

  const {
    usesClusterChain,
    usesLocalChain,
    internalChain,
    hasInternalEndpoints: hasInternal,
    externalPolicyChain,
    hasExternalEndpoints: hasExternal,
    usesExternalTrafficChain: usesExtChain,
  } = planTrafficPolicy(sp, cat, clusterChain, localChain);
  const usesFW = hasEndpoints && sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0;
  const lbTarget = usesFW ? fwChain : extChain;

  let iTarget = "";
  let iCmt = "";
  let eTarget = "";
  let eCmt = "";
  let noLocalInternal = false;
  let noLocalExternal = false;
  if (!hasEndpoints) {
    iTarget = eTarget = "REJECT";
    iCmt = eCmt = `"${spn} has no endpoints"`;
  } else {
    if (!hasInternal) {
      iTarget = "DROP";
      iCmt = `"${spn} has no local endpoints"`;
      noLocalInternal = true;
    }
    if (!hasExternal) {
      eTarget = "DROP";
      eCmt = `"${spn} has no local endpoints"`;
      noLocalExternal = true;
    }
  }

  const filterRules: string[] = [];
  const captureRules: string[] = [];
  const match = `-m ${p} -p ${p}`;

  if (hasInternal) {
    captureRules.push(
      line`-A ${KUBE_SERVICES} -m comment --comment "${spn} cluster IP" ${match} -d ${sp.clusterIP} --dport ${sp.port} -j ${internalChain}`,
    );
  } else {
    filterRules.push(
      line`-A ${KUBE_SERVICES} -m comment --comment ${iCmt} ${match} -d ${sp.clusterIP} --dport ${sp.port} -j ${iTarget}`,
    );
  }

  for (const eip of sp.externalIPs) {
    if (hasEndpoints) {
      captureRules.push(
        line`-A ${KUBE_SERVICES} -m comment --comment "${spn} external IP" ${match} -d ${eip} --dport ${sp.port} -j ${extChain}`,
      );
    }
    if (!hasExternal) {
      filterRules.push(
        line`-A ${KUBE_EXTERNAL_SERVICES} -m comment --comment ${eCmt} ${match} -d ${eip} --dport ${sp.port} -j ${eTarget}`,
      );
    }
  }

  for (const lb of sp.loadBalancerVIPs) {
    if (hasEndpoints) {
      captureRules.push(
        line`-A ${KUBE_SERVICES} -m comment --comment "${spn} loadbalancer IP" ${match} -d ${lb} --dport ${sp.port} -j ${lbTarget}`,
      );
    }
    if (usesFW) {
      filterRules.push(
        line`-A ${KUBE_PROXY_FIREWALL} -m comment --comment "${spn} traffic not accepted by ${fwChain}" ${match} -d ${lb} --dport ${sp.port} -j DROP`,
      );
    }
  }
  if (!hasExternal) {
    for (const lb of sp.loadBalancerVIPs) {
      filterRules.push(
        line`-A ${KUBE_EXTERNAL_SERVICES} -m comment --comment ${eCmt} ${match} -d ${lb} --dport ${sp.port} -j ${eTarget}`,
      );
    }
  }

  if (sp.nodePort !== 0) {
    if (hasEndpoints) {
      if (ctx.localhostNodePorts && ctx.ipv4 && settings.nfacct.localhostNodePortsAcceptedPkts) {
        captureRules.push(
          line`-A ${KUBE_NODEPORTS} -m comment --comment ${spn} ${match} -d 127.0.0.0/8 --dport ${sp.nodePort} -m nfacct --nfacct-name ${NFACCT_LOCALHOST_NPS_ACCEPTED_PKTS} -j ${extChain}`,
        );
      }
      captureRules.push(
        line`-A ${KUBE_NODEPORTS} -m comment --comment ${spn} ${match} --dport ${sp.nodePort} -j ${extChain}`,
      );
    }
    if (!hasExternal) {
      filterRules.push(
        line`-A ${KUBE_EXTERNAL_SERVICES} -m comment --comment ${eCmt} -m addrtype --dst-type LOCAL ${match} --dport ${sp.nodePort} -j ${eTarget}`,
      );
    }
  }

  if (sp.healthCheckNodePort !== 0) {
    filterRules.push(
      line`-A ${KUBE_NODEPORTS} -m comment --comment "${spn} health check node port" -m tcp -p tcp --dport ${sp.healthCheckNodePort} -j ACCEPT`,
    );
  }

  const chainRules: string[] = [];
  const activeChains: string[] = [];

  if (hasInternal) {
    const base = `-A ${internalChain} -m comment --comment "${spn} cluster IP" ${match} -d ${sp.clusterIP} --dport ${sp.port}`;
    if (settings.masqueradeAll) {
      chainRules.push(`${base} -j ${KUBE_MARK_MASQ}`);
    } else if (ctx.detector !== null) {
      chainRules.push(`${base} ${ctx.detector.ifNotLocal} -j ${KUBE_MARK_MASQ}`);
    }
  }

  if (usesExtChain) {
    activeChains.push(extChain);
    if (!sp.externalPolicyLocal) {
      chainRules.push(
        `-A ${extChain} -m comment --comment "masquerade traffic for ${spn} external destinations" -j ${KUBE_MARK_MASQ}`,
      );
    } else {
      if (ctx.detector !== null) {
        chainRules.push(
          `-A ${extChain} -m comment --comment "pod traffic for ${spn} external destinations" ${ctx.detector.ifLocal} -j ${clusterChain}`,
        );
      }
      chainRules.push(
        `-A ${extChain} -m comment --comment "masquerade LOCAL traffic for ${spn} external destinations" -m addrtype --src-type LOCAL -j ${KUBE_MARK_MASQ}`,
        `-A ${extChain} -m comment --comment "route LOCAL traffic for ${spn} external destinations" -m addrtype --src-type LOCAL -j ${clusterChain}`,
      );
    }
    if (hasExternal) chainRules.push(`-A ${extChain} -j ${externalPolicyChain}`);
  }

  if (usesFW) {
    activeChains.push(fwChain);
    const lbComment = `-m comment --comment "${spn} loadbalancer IP"`;
    for (const range of sp.loadBalancerSourceRanges) {
      chainRules.push(`-A ${fwChain} ${lbComment} -s ${range} -j ${extChain}`);
    }
    if (ctx.nodeIPInRange(sp.loadBalancerSourceRanges)) {
      for (const lb of sp.loadBalancerVIPs) {
        chainRules.push(`-A ${fwChain} ${lbComment} -s ${lb} -j ${extChain}`);
      }
    }
    chainRules.push(
      `-A ${fwChain} -m comment --comment "other traffic to ${spn} will be dropped by ${KUBE_PROXY_FIREWALL}"`,
    );
  }

  if (usesClusterChain) {
    activeChains.push(clusterChain);
    writeServiceToEndpointRules(chainRules, ctx, spn, sepOf, sp, clusterChain, clusterEps);
  }
  if (usesLocalChain) {
    activeChains.push(localChain);
    writeServiceToEndpointRules(chainRules, ctx, spn, sepOf, sp, localChain, localEps);
  }

  const sepComment = ctx.largeClusterMode ? "" : ` -m comment --comment ${spn}`;
  for (const ep of cat.allReachableEndpoints) {
    const sep = sepOf(ep);
    activeChains.push(sep);
    safe(ep.ip, `${spn} endpoint IP`);
    safe(ep.endpoint, `${spn} endpoint`);
    const recent = sp.sessionAffinity !== null ? ` -m recent --name ${sep} --set` : "";
    chainRules.push(
      `-A ${sep}${sepComment} -s ${ep.ip} -j ${KUBE_MARK_MASQ}`,
      `-A ${sep}${sepComment}${recent} ${match} -j DNAT --to-destination ${ep.endpoint}`,
    );
  }

  return {
    out: {
      filterRules,
      captureRules,
      ruleCount: chainRules.length,
      activeChains,
      noLocalInternal,
      noLocalExternal,
    },
    // Joined per Service: one flat string instead of dozens of short-lived line strings keeps a
    // 10,000-Service render's memory near the size of its output.
    ruleText: textOf(chainRules),
  };
}

function nodePortTailRules(
  settings: IptablesSettings,
  npa: NodePortAddresses,
  localhostNodePorts: boolean,
): string[] {
  const head = `-A ${KUBE_SERVICES} -m comment --comment ${NODEPORTS_TAIL_COMMENT}`;
  const ipv6 = settings.family === "IPv6";
  if (npa.matchAll) {
    let exclusion = "";
    if (ipv6) exclusion = " ! -d ::1/128";
    else if (!localhostNodePorts) exclusion = " ! -d 127.0.0.0/8";
    return [`${head} -m addrtype --dst-type LOCAL${exclusion} -j ${KUBE_NODEPORTS}`];
  }
  const ips = new Set<string>();
  for (const addr of settings.localAddresses) {
    const slash = addr.indexOf("/");
    const ip = canonicalIP(slash < 0 ? addr.trim() : addr.slice(0, slash).trim());
    if (ip === null || familyOfSloppy(ip) !== settings.family) continue;
    if (!npa.cidrs.some((c) => cidrContainsSloppy(c, ip))) continue;
    // Upstream logs an error and skips these instead of writing an unusable rule.
    if (isLoopbackSloppy(ip) && (ipv6 || !localhostNodePorts)) continue;
    ips.add(ip);
  }
  return [...ips].sort().map((ip) => `${head} -d ${ip} -j ${KUBE_NODEPORTS}`);
}

/**
 * A Service's chain declarations, one per line, each ending in a newline ("" when none): made
 * when the Service is written rather than kept in the memo next to the same chain names.
 */
function chainText(out: ServiceOutput): string {
  return textOf(out.activeChains.map(chainLine));
}

/** Lines as text, each ending in a newline ("" for none). */
function textOf(lines: readonly string[]): string {
  return lines.length === 0 ? "" : lines.join("\n") + "\n";
}

/** Rendered service ports of earlier syncs, by ServicePort (see ServicePortMemo). */
const serviceOutputs = new ServicePortMemo<ServiceOutput>();

/** The 4 fixed KUBE-POSTROUTING / KUBE-MARK-MASQ rules of nat (docs/iptables.md §2.5). */
export function natFixedRuleLines(settings: IptablesSettings): string[] {
  const mark = safe(settings.masqueradeMark, "masqueradeMark");
  return [
    `-A ${KUBE_POSTROUTING} -m mark ! --mark ${mark}/${mark} -j RETURN`,
    `-A ${KUBE_POSTROUTING} -j MARK --xor-mark ${mark}`,
    `-A ${KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE${settings.hasRandomFully ? " --random-fully" : ""}`,
    `-A ${KUBE_MARK_MASQ} -j MARK --or-mark ${mark}`,
  ];
}

const serviceOf = (sp: ServicePort): string => `${sp.name.namespace}/${sp.name.name}`;

/** How many `ServiceChainsBlock`s a render of `req` writes (what `renderIptablesStream` yields). */
export function writtenServicePorts(req: StreamRenderRequest): number {
  if (req.fullSync) return req.state.services.size;
  let written = 0;
  for (const sp of req.state.services.values()) if (req.changedServices.has(serviceOf(sp))) written++;
  return written;
}

/** Render one sync's iptables-restore input (docs/iptables.md §4.2 layout, deterministic service order). */
export function renderIptables(req: RenderRequest): RenderResult {
  const render = renderIptablesStream(req);
  const written: ServiceChainsBlock[] = [];
  for (;;) {
    const step = render.next();
    if (step.done === true) return step.value(req.existingNatChains, written);
    written.push(step.value);
  }
}

/**
 * `renderIptables` one written Service port at a time: yields each `ServiceChainsBlock` as soon
 * as it is rendered (in the order of `nat.serviceBlocks`), so a writer can send the first blocks
 * to the kernel while the rest is still being rendered. It returns the function that completes
 * the result once the kernel's nat chains are listed (the stale-chain deletions come after every
 * Service), so the listing need not hold up the first blocks either.
 */
export function* renderIptablesStream(
  req: StreamRenderRequest,
): Generator<ServiceChainsBlock, FinishRender, void> {
  const { state, settings, fullSync, changedServices } = req;
  const ipv4 = settings.family === "IPv4";
  const mark = safe(settings.masqueradeMark, "masqueradeMark");
  const npa = nodePortAddressesFor(settings);
  const localhostNodePorts = ipv4 && settings.localhostNodePorts && npa.containsIPv4Loopback;

  const servicePorts = [...state.services.entries()].sort((a, b) => compareServicePorts(a[1], b[1]));
  let totalEndpoints = 0;
  for (const [key] of servicePorts) totalEndpoints += state.endpoints.get(key)?.length ?? 0;
  const largeClusterMode = totalEndpoints > settings.largeClusterEndpointsThreshold;

  const ctx: Ctx = {
    settings,
    gates: resolveFeatureGates(req.featureGates),
    detector: localDetectorArgs(settings.localDetector),
    localhostNodePorts,
    ipv4,
    largeClusterMode,
    nodeIPInRange: (ranges) => ranges.some((r) => cidrContainsSloppy(r, settings.nodeIP)),
  };

  const filterChainLines = [
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
  ].map(chainLine);
  const filterRules: string[] = [];
  if (localhostNodePorts) {
    filterChainLines.push(chainLine(KUBE_FIREWALL));
    filterRules.push(
      `-A ${KUBE_FIREWALL} -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP`,
    );
  }

  const natTopChainLines = [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ].map(chainLine);
  const natFixedRules = natFixedRuleLines(settings);

  const outputs: Array<{ readonly out: ServiceOutput; readonly written: boolean }> = [];
  const captureRuleLines: string[] = [];
  const activeNatChains = new Set<string>();
  let skippedNatRules = 0;
  let writtenNatRules = 0;
  let noLocalInternal = 0;
  let noLocalExternal = 0;

  for (const [key, sp] of servicePorts) {
    const endpoints = state.endpoints.get(key) ?? NO_ENDPOINTS;
    const inputs = [ctx.settings, req.featureGates, req.state.nodeLabels, ctx.largeClusterMode];
    let out = serviceOutputs.lookup(sp, endpoints, inputs);
    let ruleText: string | null = null;
    if (out === undefined) {
      const rendered = renderServicePort(ctx, sp, endpoints, req);
      serviceOutputs.remember(sp, endpoints, inputs, rendered.out);
      out = rendered.out;
      ruleText = rendered.ruleText;
    }
    for (const r of out.filterRules) filterRules.push(r);
    for (const r of out.captureRules) captureRuleLines.push(r);
    for (const c of out.activeChains) activeNatChains.add(c);
    if (out.noLocalInternal) noLocalInternal++;
    if (out.noLocalExternal) noLocalExternal++;
    const service = serviceOf(sp);
    if (fullSync || changedServices.has(service)) {
      ruleText ??= renderServicePort(ctx, sp, endpoints, req).ruleText;
      const block = { service, chainText: chainText(out), ruleText, ruleCount: out.ruleCount };
      outputs.push({ out, written: true });
      writtenNatRules += out.captureRules.length + out.ruleCount;
      yield block;
    } else {
      outputs.push({ out, written: false });
      writtenNatRules += out.captureRules.length;
      skippedNatRules += out.ruleCount;
    }
  }

  const tailRuleLines = nodePortTailRules(settings, npa, localhostNodePorts);

  if (!settings.conntrackTCPLiberal) {
    const nfacct = settings.nfacct.ctStateInvalidDroppedPkts
      ? ` -m nfacct --nfacct-name ${NFACCT_CT_STATE_INVALID_DROPPED_PKTS}`
      : "";
    filterRules.push(`-A ${KUBE_FORWARD} -m conntrack --ctstate INVALID${nfacct} -j DROP`);
  }
  filterRules.push(
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark ${mark}/${mark} -j ACCEPT`,
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  );

  const natRulesWritten = natFixedRules.length + writtenNatRules + tailRuleLines.length;
  return (existingNatChains, serviceBlocks) => {
    const deletedChains =
      existingNatChains === null
        ? []
        : [...new Set(existingNatChains)]
            .filter((c) => isServiceChainName(c) && !activeNatChains.has(c))
            .sort();
    const deletedChainLines = deletedChains.map(chainLine);
    const deleteLines = deletedChains.map((c) => `-X ${c}`);
    // Built on first use: a sync split into bounded transactions never needs the single document,
    // and a caller of `payload` (render CLI, tests) does not keep the pieces next to the text.
    let parts: string[] | null = null;
    let payload: string | null = null;
    const buildParts = (): string[] => {
      if (serviceBlocks === null)
        throw new Error("a render whose blocks were sent as they came has no payload");
      const out: string[] = [
        textOf(["*filter", ...filterChainLines, ...filterRules, "COMMIT", "*nat", ...natTopChainLines]),
      ];
      for (const block of serviceBlocks) out.push(block.chainText);
      out.push(textOf([...deletedChainLines, ...natFixedRules]));
      let next = 0;
      for (const { out: service, written } of outputs) {
        out.push(textOf(service.captureRules));
        if (written) out.push(serviceBlocks[next++]!.ruleText);
      }
      out.push(textOf([...deleteLines, ...tailRuleLines, "COMMIT"]));
      return out;
    };
    return {
      get payloadParts() {
        parts ??= buildParts();
        return parts;
      },
      get payload() {
        payload ??= (parts ?? buildParts()).join("");
        return payload;
      },
      filter: { chainLines: filterChainLines, ruleLines: filterRules },
      nat: {
        topChainLines: natTopChainLines,
        fixedRuleLines: natFixedRules,
        captureRuleLines,
        serviceBlocks,
        deletedChains,
        tailRuleLines,
      },
      activeNatChains,
      counts: {
        filterRules: filterRules.length,
        natRulesWritten,
        natRulesTotal: natRulesWritten + skippedNatRules,
      },
      largeClusterMode,
      noLocalEndpoints: { internal: noLocalInternal, external: noLocalExternal },
    };
  };
}
