/**
 * KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), the same fields and JSON names as
 * upstream's staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go. Durations stay Go
 * duration strings so that `--write-config-to` and `/configz` print what upstream prints.
 */
export type ProxyMode = "iptables" | "nftables" | "ipvs";
export type NftablesWriterKind = "netlink" | "nft";
export type LocalMode = "ClusterCIDR" | "NodeCIDR" | "BridgeInterface" | "InterfaceNamePrefix";

export interface KubeProxyConfiguration {
  apiVersion: "kubeproxy.config.k8s.io/v1alpha1";
  kind: "KubeProxyConfiguration";
  featureGates: Record<string, boolean>;
  clientConnection: {
    kubeconfig: string;
    acceptContentTypes: string;
    contentType: string;
    qps: number;
    burst: number;
  };
  logging: { verbosity: number; format: string };
  hostnameOverride: string;
  bindAddress: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  bindAddressHardFail: boolean;
  enableProfiling: boolean;
  showHiddenMetricsForVersion: string;
  mode: ProxyMode;
  iptables: {
    masqueradeBit: number;
    masqueradeAll: boolean;
    localhostNodePorts: boolean;
    syncPeriod: string;
    minSyncPeriod: string;
  };
  ipvs: {
    syncPeriod: string;
    minSyncPeriod: string;
    scheduler: string;
    excludeCIDRs: string[] | null;
    strictARP: boolean;
    tcpTimeout: string;
    tcpFinTimeout: string;
    udpTimeout: string;
  };
  nftables: {
    masqueradeBit: number;
    masqueradeAll: boolean;
    syncPeriod: string;
    minSyncPeriod: string;
    /**
     * Ours, not upstream's (no KubeProxyConfiguration field, only `--nftables-writer`): how
     * nftables mode writes the kernel, netlink batches (default) or `nft -f`.
     */
    writer: NftablesWriterKind;
  };
  detectLocalMode: LocalMode;
  detectLocal: { bridgeInterface: string; interfaceNamePrefix: string };
  clusterCIDR: string;
  nodePortAddresses: string[] | null;
  oomScoreAdj: number;
  conntrack: {
    maxPerCore: number;
    min: number;
    tcpEstablishedTimeout: string;
    tcpCloseWaitTimeout: string;
    tcpBeLiberal: boolean;
    udpTimeout: string;
    udpStreamTimeout: string;
  };
  configSyncPeriod: string;
  portRange: string;
}

/** Upstream v1alpha1 defaulting plus the Linux platform defaults (server_linux.go). */
export function defaultConfiguration(): KubeProxyConfiguration {
  return {
    apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
    kind: "KubeProxyConfiguration",
    featureGates: {},
    clientConnection: {
      kubeconfig: "",
      acceptContentTypes: "",
      contentType: "application/vnd.kubernetes.protobuf",
      qps: 5,
      burst: 10,
    },
    logging: { verbosity: 0, format: "text" },
    hostnameOverride: "",
    bindAddress: "0.0.0.0",
    healthzBindAddress: "0.0.0.0:10256",
    metricsBindAddress: "127.0.0.1:10249",
    bindAddressHardFail: false,
    enableProfiling: false,
    showHiddenMetricsForVersion: "",
    mode: "iptables",
    iptables: {
      masqueradeBit: 14,
      masqueradeAll: false,
      localhostNodePorts: true,
      syncPeriod: "30s",
      minSyncPeriod: "1s",
    },
    ipvs: {
      syncPeriod: "30s",
      minSyncPeriod: "0s",
      scheduler: "",
      excludeCIDRs: null,
      strictARP: false,
      tcpTimeout: "0s",
      tcpFinTimeout: "0s",
      udpTimeout: "0s",
    },
    nftables: {
      masqueradeBit: 14,
      masqueradeAll: false,
      syncPeriod: "30s",
      minSyncPeriod: "1s",
      writer: "netlink",
    },
    detectLocalMode: "ClusterCIDR",
    detectLocal: { bridgeInterface: "", interfaceNamePrefix: "" },
    clusterCIDR: "",
    nodePortAddresses: null,
    oomScoreAdj: -999,
    conntrack: {
      maxPerCore: 32768,
      min: 131072,
      tcpEstablishedTimeout: "24h0m0s",
      tcpCloseWaitTimeout: "1h0m0s",
      tcpBeLiberal: false,
      udpTimeout: "0s",
      udpStreamTimeout: "0s",
    },
    configSyncPeriod: "15m0s",
    portRange: "",
  };
}
