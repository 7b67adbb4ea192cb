import type { NodeModel } from "../../proxy/node.ts";
import type { FeatureGates } from "../../proxy/serviceport.ts";
import type { Protocol, ProxyState } from "../../proxy/types.ts";
import type { IpsetType } from "./names.ts";

/** The node of one family as ipvs mode renders it: the shared node model plus the mode's own. */
export interface IpvsSettings extends NodeModel {
  /** `--ipvs-scheduler`, already defaulted to rr. */
  readonly scheduler: string;
  /** `MASQUERADE --random-fully` (the iptables binary supports it). */
  readonly randomFully: boolean;
}

/** One IPVS virtual server (upstream `utilipvs.VirtualServer`). */
export interface VirtualServer {
  readonly protocol: Protocol;
  readonly address: string;
  readonly port: number;
  readonly scheduler: string;
  /** Persistence timeout in seconds (ClientIP affinity); 0 = not persistent. */
  readonly persistence: number;
  /** Scheduler flags (`ipvsadm -b`): `mh-port` for the mh scheduler, as upstream's FlagSourceHash. */
  readonly schedFlags: readonly string[];
}

/** One IPVS real server (destination). Forwarding is always masquerade (NAT), as upstream. */
export interface RealServer {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
}

export type VirtualServerKind = "ClusterIP" | "ExternalIP" | "LoadBalancer" | "NodePort";

/** A virtual server the state asks for, with the real servers it should have. */
export interface DesiredVirtualServer {
  /** `ns/name`: what a partial sync's change set names. */
  readonly service: string;
  /** `ns/name:port` (upstream ServicePortName.String()). */
  readonly servicePort: string;
  readonly kind: VirtualServerKind;
  readonly vs: VirtualServer;
  /** Sorted by address then port. */
  readonly realServers: readonly RealServer[];
  /** The address goes on kube-ipvs0 (ClusterIPs; external and LB IPs the node does not own). */
  readonly bind: boolean;
}

export interface IpsetState {
  readonly name: string;
  readonly type: IpsetType;
  /** `inet` / `inet6` for hash sets; bitmap:port has none. */
  readonly family: "inet" | "inet6" | null;
  /** Entries as ipset prints them (`10.0.0.1,tcp:80`), sorted. */
  readonly entries: readonly string[];
}

/** Everything ipvs mode wants in the kernel for one family: pure data. */
export interface IpvsDesiredState {
  readonly family: ProxyState["family"];
  /** In service-port order, each service port's ClusterIP, externalIPs, LB IPs, NodePorts. */
  readonly virtualServers: readonly DesiredVirtualServer[];
  /** Addresses kube-ipvs0 must hold (this family), sorted. */
  readonly bindAddresses: readonly string[];
  /** Every set of upstream's list, in its order, empty ones included. */
  readonly ipsets: readonly IpsetState[];
  /** The iptables-restore payload (nat then filter), applied with --noflush. */
  readonly iptables: string;
  readonly noLocalEndpoints: { readonly internal: number; readonly external: number };
}

export interface IpvsRenderRequest {
  readonly state: ProxyState;
  readonly settings: IpvsSettings;
  /**
   * This family's addresses on the node's interfaces other than kube-ipvs0, without loopback and
   * IPv6 link-local ones (upstream `GetAllLocalAddressesExcept`): NodePort virtual servers go on
   * them, and an external or LB IP among them is not bound to kube-ipvs0.
   */
  readonly nodeAddresses: readonly string[];
  readonly featureGates?: Partial<FeatureGates>;
}
