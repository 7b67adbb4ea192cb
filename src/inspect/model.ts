/**
 * The mode-neutral picture of one Service in the kernel, which every mode's explainer produces
 * and the see-inside tools consume: where traffic is captured (frontends), what happens there
 * (load-balanced, rejected, dropped), which endpoints it reaches with which share of new
 * connections, and where it is masqueraded, each with its packet counters and the place in the
 * mode's own objects (an iptables rule, an nftables map element, an IPVS virtual server).
 */
import type { ProxyMode } from "../config/types.ts";

export interface Counters {
  readonly packets: number;
  readonly bytes: number;
}

export type FrontendKind =
  | "cluster IP"
  | "external IP"
  | "loadbalancer IP"
  /** An external or load-balancer IP where the mode's object does not say which. */
  | "external address"
  | "node port"
  | "health check node port";

/** What the kernel does with a new connection at a frontend. */
export type FrontendAction = "load-balance" | "reject" | "drop" | "accept";

export interface FrontendView {
  readonly servicePortName: string;
  readonly kind: FrontendKind;
  /** In words: `10.1.0.27:80 (tcp)`, `node port 31004 (tcp) on any local address`. */
  readonly destination: string;
  readonly action: FrontendAction;
  /** Why it is not load-balanced. */
  readonly reason?: "no endpoints" | "no local endpoints" | "source not allowed";
  /** For a source-range firewall: the sources that are let in. */
  readonly allowedSources?: readonly string[];
  /** Where those sources are listed, e.g. `nat KUBE-FW-…`. */
  readonly allowedSourcesWhere?: string;
  readonly counters?: Counters;
  /** Where the mode holds it, e.g. `nat KUBE-SERVICES rule 3`. */
  readonly where: string;
}

export interface EndpointView {
  readonly servicePortName: string;
  /** `ip:port` ([ip]:port for IPv6). */
  readonly endpoint: string;
  /** Share of new connections (0..1) from the frontends that load-balance. */
  readonly share: number;
  readonly counters?: Counters;
  /** The mode's objects a connection passes on the way, first to last. */
  readonly via: readonly string[];
}

export interface MasqueradeView {
  readonly where: string;
  readonly counters?: Counters;
}

export interface ServiceView {
  readonly mode: ProxyMode;
  readonly service: string;
  readonly servicePortNames: readonly string[];
  readonly frontends: readonly FrontendView[];
  readonly endpoints: readonly EndpointView[];
  readonly masquerade: readonly MasqueradeView[];
}

const VERDICT_WORD: Readonly<Record<Exclude<FrontendAction, "load-balance">, string>> = {
  reject: "REJECTed",
  drop: "DROPped",
  accept: "ACCEPTed",
};

/** Plain answers to "why does this Service get no traffic?", one per blocking frontend. */
export function whyNoTraffic(view: ServiceView): string[] {
  const out: string[] = [];
  for (const f of view.frontends) {
    if (f.action === "load-balance" || f.reason === undefined) continue;
    const verdict = VERDICT_WORD[f.action];
    switch (f.reason) {
      case "no endpoints":
        out.push(
          `${f.servicePortName} has no endpoints: packets to ${f.destination} are ${verdict} in ${f.where}`,
        );
        break;
      case "no local endpoints":
        out.push(
          `${f.servicePortName} has no local endpoints on this node: packets to ${f.destination} are ${verdict} in ${f.where}` +
            " (traffic policy Local: endpoints on other nodes are not used)",
        );
        break;
      case "source not allowed": {
        const sources = f.allowedSources ?? [];
        const listed = f.allowedSourcesWhere === undefined ? "" : ` (${f.allowedSourcesWhere})`;
        const allowed =
          sources.length === 0 ? "no source at all" : `only sources in ${sources.join(", ")}${listed}`;
        out.push(
          `${f.servicePortName}: load-balancer IP ${f.destination} accepts ${allowed}; packets from any other source are ${verdict} in ${f.where}`,
        );
        break;
      }
    }
  }
  return out;
}
