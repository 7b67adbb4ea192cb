import { parseIPSloppy } from "../ip.ts";
import { parseDuration } from "./duration.ts";

/*
 * Upstream decodes a KubeProxyConfiguration file and then defaults it: the v1alpha1 defaulting
 * (pkg/proxy/apis/config/v1alpha1/defaults.go, SetDefaults_KubeProxyConfiguration) and the Linux
 * platform defaults (cmd/kube-proxy/app/server_linux.go, platformApplyDefaults). Both test a field
 * for its zero value, not for its absence, so a file that spells every field out with zero values
 * means the same as one that leaves them out. kubeadm writes exactly such a file: it marshals the
 * whole v1alpha1 struct after its own defaulting only (bindAddress, clusterCIDR,
 * clientConnection.kubeconfig), which gives `qps: 0`, `mode: ""`, `syncPeriod: 0s`,
 * `healthzBindAddress: ""`, `masqueradeBit: null`… (test/fixtures/kubeadm/). Null pointers are
 * already left to the defaults by the merge; this handles the zero scalars, on the decoded file
 * before it is laid over the defaults (docs/deployment.md, "kubeadm's ConfigMap").
 */

type Section = Record<string, unknown>;

const HEALTHZ_PORT = 10256;
const METRICS_PORT = 10249;

function isZeroDuration(value: unknown): boolean {
  if (typeof value !== "string") return false;
  try {
    return parseDuration(value, "") === 0;
  } catch {
    // Not a duration: validation names the field.
    return false;
  }
}

function sectionOf(data: Section, key: string): Section | undefined {
  const value = data[key];
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? (value as Section)
    : undefined;
}

/** Deletes `key` from `section` when it holds its zero value, so that the default stays. */
function unsetZero(section: Section | undefined, key: string, zero: (value: unknown) => boolean): void {
  if (section !== undefined && key in section && zero(section[key])) delete section[key];
}

const emptyString = (value: unknown): boolean => value === "";
const zeroNumber = (value: unknown): boolean => value === 0;

/** upstream's AppendPortIfNeeded: an address without a port gets `port` (IPv6 in brackets). */
function appendPortIfNeeded(address: string, port: number): string {
  const ip = parseIPSloppy(address);
  if (ip === null) return address;
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * The decoded file with upstream's zero-value defaulting applied: zero scalars removed (the
 * defaults then fill them) and the health and metrics addresses defaulted from bindAddress's
 * family, as upstream's getDefaultAddresses does. Returns a new object; `data` is not changed.
 */
export function applyUpstreamDefaulting(data: Section): Section {
  const out = structuredClone(data);
  unsetZero(out, "bindAddress", emptyString);
  unsetZero(out, "mode", emptyString);
  unsetZero(out, "detectLocalMode", emptyString);
  unsetZero(out, "configSyncPeriod", isZeroDuration);
  const client = sectionOf(out, "clientConnection");
  unsetZero(client, "contentType", emptyString);
  unsetZero(client, "qps", zeroNumber);
  unsetZero(client, "burst", zeroNumber);
  const iptables = sectionOf(out, "iptables");
  unsetZero(iptables, "syncPeriod", isZeroDuration);
  unsetZero(iptables, "minSyncPeriod", isZeroDuration);
  unsetZero(sectionOf(out, "ipvs"), "syncPeriod", isZeroDuration);
  const nftables = sectionOf(out, "nftables");
  unsetZero(nftables, "syncPeriod", isZeroDuration);
  unsetZero(nftables, "minSyncPeriod", isZeroDuration);

  const bind = typeof out["bindAddress"] === "string" ? out["bindAddress"] : "0.0.0.0";
  const ipv4 = parseIPSloppy(bind)?.family !== "IPv6";
  const addresses: readonly [string, string, number][] = [
    ["healthzBindAddress", ipv4 ? "0.0.0.0" : "[::]", HEALTHZ_PORT],
    ["metricsBindAddress", ipv4 ? "127.0.0.1" : "[::1]", METRICS_PORT],
  ];
  for (const [key, host, port] of addresses) {
    const value = out[key];
    if (value === undefined || value === "") out[key] = `${host}:${port}`;
    else if (typeof value === "string") out[key] = appendPortIfNeeded(value, port);
  }
  return out;
}
