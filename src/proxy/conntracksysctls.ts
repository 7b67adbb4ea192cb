import { parseDuration } from "../config/duration.ts";
import type { KubeProxyConfiguration } from "../config/types.ts";

/** One conntrack sysctl upstream kube-proxy writes at start-up (pkg/proxy/conntrack/sysctls.go). */
export interface ConntrackSysctl {
  readonly name: string;
  readonly value: number;
  /** nf_conntrack_max is one value for the whole host: only written from the initial namespace. */
  readonly hostWide: boolean;
  /** How to leave it alone: the configuration field (and flag) that set to 0 skips it. */
  readonly remedy: string;
}

/**
 * The sysctls the `conntrack` configuration asks for: `nf_conntrack_max = min(1048576,
 * max(maxPerCore × CPUs, min))` when maxPerCore > 0, and each timeout only when > 0.
 */
export function conntrackSysctls(
  config: Pick<KubeProxyConfiguration, "conntrack">,
  cpus: number,
): ConntrackSysctl[] {
  const c = config.conntrack;
  const out: ConntrackSysctl[] = [];
  if (c.maxPerCore > 0) {
    const max = Math.min(1_048_576, Math.max(c.maxPerCore * cpus, c.min));
    out.push({
      name: "net/netfilter/nf_conntrack_max",
      value: max,
      hostWide: true,
      remedy: "set conntrack.maxPerCore (--conntrack-max-per-core) to 0 to leave it alone",
    });
  }
  const seconds = (text: string, field: string) => Math.floor(parseDuration(text, field) / 1000);
  const timeouts: Array<[string, string, string, string]> = [
    [
      "net/netfilter/nf_conntrack_tcp_timeout_established",
      c.tcpEstablishedTimeout,
      "conntrack.tcpEstablishedTimeout",
      "--conntrack-tcp-timeout-established",
    ],
    [
      "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
      c.tcpCloseWaitTimeout,
      "conntrack.tcpCloseWaitTimeout",
      "--conntrack-tcp-timeout-close-wait",
    ],
    [
      "net/netfilter/nf_conntrack_udp_timeout",
      c.udpTimeout,
      "conntrack.udpTimeout",
      "--conntrack-udp-timeout",
    ],
    [
      "net/netfilter/nf_conntrack_udp_timeout_stream",
      c.udpStreamTimeout,
      "conntrack.udpStreamTimeout",
      "--conntrack-udp-timeout-stream",
    ],
  ];
  for (const [name, text, field, flag] of timeouts) {
    const value = seconds(text, field);
    if (value > 0)
      out.push({ name, value, hostWide: false, remedy: `set ${field} (${flag}) to 0 to leave it alone` });
  }
  if (c.tcpBeLiberal)
    out.push({
      name: "net/netfilter/nf_conntrack_tcp_be_liberal",
      value: 1,
      hostWide: false,
      remedy: "leave conntrack.tcpBeLiberal (--conntrack-tcp-be-liberal) off",
    });
  return out;
}
