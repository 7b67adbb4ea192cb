import { InvalidArgumentError, Option, type Command } from "../commander.ts";
import { familyOf, formatCIDR, parseNetwork } from "../ip.ts";
import type { KubeProxyConfiguration } from "./types.ts";

/**
 * Upstream kube-proxy's command-line flags (cmd/kube-proxy/app/options.go) as data: name, value
 * kind, the KubeProxyConfiguration field each one sets, and its help. Registering and applying
 * them is generic, so adding a flag is one row.
 */
type Kind = "string" | "bool" | "int" | "duration" | "list" | "gates";

export interface FlagSpec {
  readonly flag: string;
  readonly kind: Kind;
  /** Dotted path into KubeProxyConfiguration; null for flags that are not config fields. */
  readonly path: string | null;
  readonly help: string;
}

export const PROXY_FLAGS: readonly FlagSpec[] = [
  {
    flag: "proxy-mode",
    kind: "string",
    path: "mode",
    help: "Which proxy mode to use: 'iptables' (default), 'nftables' or 'ipvs'.",
  },
  {
    flag: "hostname-override",
    kind: "string",
    path: "hostnameOverride",
    help: "If non-empty, will be used as the name of the Node that kube-proxy is running on.",
  },
  {
    flag: "bind-address",
    kind: "string",
    path: "bindAddress",
    help: "Overrides kube-proxy's idea of what its node's primary IP is.",
  },
  {
    flag: "healthz-bind-address",
    kind: "string",
    path: "healthzBindAddress",
    help: "The IP address and port for the health check server to serve on; empty to disable.",
  },
  {
    flag: "metrics-bind-address",
    kind: "string",
    path: "metricsBindAddress",
    help: "The IP address and port for the metrics server to serve on; empty to disable.",
  },
  {
    flag: "bind-address-hard-fail",
    kind: "bool",
    path: "bindAddressHardFail",
    help: "If true kube-proxy will treat failure to bind to a port as fatal and exit.",
  },
  {
    flag: "cluster-cidr",
    kind: "string",
    path: "clusterCIDR",
    help: "The CIDR range of the pods in the cluster (comma-separated dual-stack pair allowed).",
  },
  {
    flag: "detect-local-mode",
    kind: "string",
    path: "detectLocalMode",
    help: "Mode to detect local traffic: ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix.",
  },
  {
    flag: "pod-bridge-interface",
    kind: "string",
    path: "detectLocal.bridgeInterface",
    help: "A bridge interface name (detect-local-mode=BridgeInterface).",
  },
  {
    flag: "pod-interface-name-prefix",
    kind: "string",
    path: "detectLocal.interfaceNamePrefix",
    help: "An interface name prefix (detect-local-mode=InterfaceNamePrefix).",
  },
  {
    flag: "masquerade-all",
    kind: "bool",
    path: "iptables.masqueradeAll",
    help: "SNAT all traffic sent via Service cluster IPs.",
  },
  {
    flag: "iptables-masquerade-bit",
    kind: "int",
    path: "iptables.masqueradeBit",
    help: "The bit of the fwmark space to mark packets requiring SNAT with, [0, 31].",
  },
  {
    flag: "iptables-localhost-nodeports",
    kind: "bool",
    path: "iptables.localhostNodePorts",
    help: "If false, disable accessing NodePort services via localhost (IPv4 only).",
  },
  {
    flag: "iptables-sync-period",
    kind: "duration",
    path: "iptables.syncPeriod",
    help: "An interval indicating how frequently re-synchronizing and cleanup operations are performed.",
  },
  {
    flag: "iptables-min-sync-period",
    kind: "duration",
    path: "iptables.minSyncPeriod",
    help: "The minimum period between iptables rule resyncs; 0 = sync on every change.",
  },
  {
    flag: "nftables-writer",
    kind: "string",
    path: "nftables.writer",
    help: "How nftables mode writes the kernel: 'netlink' (default, bounded netlink batches) or 'nft' (nft -f).",
  },
  {
    flag: "nodeport-addresses",
    kind: "list",
    path: "nodePortAddresses",
    help: "CIDR ranges and/or 'primary' selecting the IPs that accept NodePort traffic.",
  },
  {
    flag: "conntrack-max-per-core",
    kind: "int",
    path: "conntrack.maxPerCore",
    help: "Maximum number of NAT connections to track per CPU core (0 to leave as-is).",
  },
  {
    flag: "conntrack-min",
    kind: "int",
    path: "conntrack.min",
    help: "Minimum number of conntrack entries to allocate, regardless of conntrack-max-per-core.",
  },
  {
    flag: "conntrack-tcp-timeout-established",
    kind: "duration",
    path: "conntrack.tcpEstablishedTimeout",
    help: "Idle timeout for established TCP connections (0 to leave as-is).",
  },
  {
    flag: "conntrack-tcp-timeout-close-wait",
    kind: "duration",
    path: "conntrack.tcpCloseWaitTimeout",
    help: "NAT timeout for TCP connections in CLOSE_WAIT (0 to leave as-is).",
  },
  {
    flag: "conntrack-tcp-be-liberal",
    kind: "bool",
    path: "conntrack.tcpBeLiberal",
    help: "Enable liberal mode for tracking TCP packets.",
  },
  {
    flag: "conntrack-udp-timeout",
    kind: "duration",
    path: "conntrack.udpTimeout",
    help: "Idle timeout for UNREPLIED UDP connections (0 to leave as-is).",
  },
  {
    flag: "conntrack-udp-timeout-stream",
    kind: "duration",
    path: "conntrack.udpStreamTimeout",
    help: "Idle timeout for ASSURED UDP connections (0 to leave as-is).",
  },
  {
    flag: "config-sync-period",
    kind: "duration",
    path: "configSyncPeriod",
    help: "How often configuration from the apiserver is refreshed.",
  },
  {
    flag: "oom-score-adj",
    kind: "int",
    path: "oomScoreAdj",
    help: "The oom-score-adj value for the kube-proxy process, [-1000, 1000].",
  },
  {
    flag: "kubeconfig",
    kind: "string",
    path: "clientConnection.kubeconfig",
    help: "Path to kubeconfig file with authorization information.",
  },
  {
    flag: "kube-api-content-type",
    kind: "string",
    path: "clientConnection.contentType",
    help: "Content type of requests sent to apiserver.",
  },
  {
    flag: "kube-api-qps",
    kind: "int",
    path: "clientConnection.qps",
    help: "QPS to use while talking with the kubernetes apiserver.",
  },
  {
    flag: "kube-api-burst",
    kind: "int",
    path: "clientConnection.burst",
    help: "Burst to use while talking with the kubernetes apiserver.",
  },
  {
    flag: "profiling",
    kind: "bool",
    path: "enableProfiling",
    help: "Enable profiling via web interface host:port/debug/pprof/.",
  },
  {
    flag: "show-hidden-metrics-for-version",
    kind: "string",
    path: "showHiddenMetricsForVersion",
    help: "The previous version for which you want to show hidden metrics.",
  },
  {
    flag: "feature-gates",
    kind: "gates",
    path: "featureGates",
    help: "A set of key=value pairs that describe feature gates, e.g. LoadBalancerIPMode=true.",
  },
  {
    flag: "ipvs-sync-period",
    kind: "duration",
    path: "ipvs.syncPeriod",
    help: "ipvs mode: maximum interval of how often rules are refreshed.",
  },
  {
    flag: "ipvs-min-sync-period",
    kind: "duration",
    path: "ipvs.minSyncPeriod",
    help: "ipvs mode: minimum period between rule resyncs.",
  },
  { flag: "ipvs-scheduler", kind: "string", path: "ipvs.scheduler", help: "ipvs mode: the scheduler type." },
  {
    flag: "ipvs-exclude-cidrs",
    kind: "list",
    path: "ipvs.excludeCIDRs",
    help: "ipvs mode: CIDRs not to touch when cleaning up IPVS rules.",
  },
  { flag: "ipvs-strict-arp", kind: "bool", path: "ipvs.strictARP", help: "ipvs mode: enable strict ARP." },
  {
    flag: "ipvs-tcp-timeout",
    kind: "duration",
    path: "ipvs.tcpTimeout",
    help: "ipvs mode: the timeout for idle IPVS TCP connections, 0 to leave as is (e.g. '5s', '1m', '2h22m').",
  },
  {
    flag: "ipvs-tcpfin-timeout",
    kind: "duration",
    path: "ipvs.tcpFinTimeout",
    help: "ipvs mode: the timeout for IPVS TCP connections after receiving a FIN packet, 0 to leave as is.",
  },
  {
    flag: "ipvs-udp-timeout",
    kind: "duration",
    path: "ipvs.udpTimeout",
    help: "ipvs mode: the timeout for IPVS UDP packets, 0 to leave as is.",
  },
];

export function parseBool(value: string, flag: string): boolean {
  if (value === "true" || value === "1") return true;
  if (value === "false" || value === "0") return false;
  throw new InvalidArgumentError(`--${flag} takes true or false, not ${JSON.stringify(value)}`);
}

function parseInt32(value: string, flag: string): number {
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || n < -2147483648 || n > 2147483647)
    throw new InvalidArgumentError(
      `--${flag} takes an int32 (-2147483648 to 2147483647), not ${JSON.stringify(value)}`,
    );
  return n;
}

function parseGates(value: string, flag: string): Record<string, boolean> {
  const gates: Record<string, boolean> = {};
  for (const pair of value.split(",").filter((p) => p.trim() !== "")) {
    const [key, raw] = pair.split("=", 2).map((s) => s.trim());
    if (key === undefined || key === "" || raw === undefined) {
      throw new InvalidArgumentError(`--${flag}: expected key=value pairs, got ${JSON.stringify(pair)}`);
    }
    gates[key] = parseBool(raw, flag);
  }
  return gates;
}

function optionFor(spec: FlagSpec): Option {
  const flag = spec.flag;
  switch (spec.kind) {
    case "bool":
      // pflag accepts both `--flag` and `--flag=false`.
      return new Option(`--${flag} [bool]`, spec.help).argParser((v: string) => parseBool(v, flag));
    case "int":
      return new Option(`--${flag} <n>`, spec.help).argParser((v: string) => parseInt32(v, flag));
    case "list":
      return new Option(`--${flag} <items>`, spec.help).argParser((v: string) =>
        v
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s !== ""),
      );
    case "gates":
      return new Option(`--${flag} <pairs>`, spec.help).argParser((v: string) => parseGates(v, flag));
    case "duration":
      return new Option(`--${flag} <duration>`, spec.help);
    case "string":
      return new Option(`--${flag} <value>`, spec.help);
  }
}

/**
 * `--service-cluster-ip-range` as kube-apiserver takes it: one CIDR, or a comma-separated
 * dual-stack pair (one per family); each normalised to its network address.
 */
export function parseServiceClusterIPRange(value: string): string[] {
  const flag = "--service-cluster-ip-range";
  const cidrs = value
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((text) => {
      const network = text.includes("/") ? parseNetwork(text) : undefined;
      if (network === undefined)
        throw new InvalidArgumentError(
          `${flag}: ${JSON.stringify(text)} is not a CIDR (address/prefix length)`,
        );
      return formatCIDR(network);
    });
  if (cidrs.length > 2 || (cidrs.length === 2 && familyOf(cidrs[0]!) === familyOf(cidrs[1]!)))
    throw new InvalidArgumentError(`${flag}: at most one CIDR per IP family, not ${JSON.stringify(value)}`);
  return cidrs;
}

export function registerProxyFlags(command: Command): Command {
  for (const spec of PROXY_FLAGS) command.addOption(optionFor(spec));
  command.addOption(
    new Option(
      "--service-cluster-ip-range <cidrs>",
      "The Service CIDRs (kube-apiserver's flag; dual-stack: comma-separated) for nftables mode's drop of unallocated ClusterIPs, when the source has no ServiceCIDR objects.",
    ).argParser(parseServiceClusterIPRange),
  );
  command.addOption(new Option("--config <file>", "The path to the KubeProxyConfiguration file."));
  command.addOption(
    new Option(
      "--master <url>",
      "The address of the Kubernetes API server (overrides any value in kubeconfig).",
    ),
  );
  command.addOption(
    new Option(
      "--healthz-port <port>",
      "DEPRECATED: the port to bind the health check server; 0 to disable.",
    ).argParser((v: string) => parseInt32(v, "healthz-port")),
  );
  command.addOption(
    new Option(
      "--metrics-port <port>",
      "DEPRECATED: the port to bind the metrics server; 0 to disable.",
    ).argParser((v: string) => parseInt32(v, "metrics-port")),
  );
  command.addOption(
    new Option("-v, --v <level>", "number for the log level verbosity").argParser((v: string) =>
      parseInt32(v, "v"),
    ),
  );
  return command;
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
}

/** Writes the flags that were given on the command line into `config` (flag values win). */
export function applyFlags(config: KubeProxyConfiguration, options: Record<string, unknown>): void {
  for (const spec of PROXY_FLAGS) {
    const value = options[camel(spec.flag)];
    if (value === undefined || spec.path === null) continue;
    setPath(config, spec.path, value === true && spec.kind !== "bool" ? "" : value);
  }
  const healthzPort = options["healthzPort"];
  if (typeof healthzPort === "number") {
    config.healthzBindAddress = healthzPort === 0 ? "" : withPort(config.healthzBindAddress, healthzPort);
  }
  const metricsPort = options["metricsPort"];
  if (typeof metricsPort === "number") {
    config.metricsBindAddress = metricsPort === 0 ? "" : withPort(config.metricsBindAddress, metricsPort);
  }
  const verbosity = options["v"];
  if (typeof verbosity === "number") config.logging.verbosity = verbosity;
}

function withPort(address: string, port: number): string {
  const host = address === "" ? "0.0.0.0" : address.replace(/:\d+$/, "");
  return `${host}:${port}`;
}

function setPath(target: object, path: string, value: unknown): void {
  const parts = path.split(".");
  let node = target as Record<string, unknown>;
  for (const part of parts.slice(0, -1)) node = node[part] as Record<string, unknown>;
  node[parts[parts.length - 1] as string] = value;
}
