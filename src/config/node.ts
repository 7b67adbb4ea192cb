import { hostname } from "node:os";
import { isIP } from "node:net";
import type { IPFamily } from "../ip.ts";
import type { KubeProxyConfiguration } from "./types.ts";

/** Upstream: hostnameOverride (trimmed, lower-cased) or the OS hostname. */
export function nodeName(config: Pick<KubeProxyConfiguration, "hostnameOverride">): string {
  const override = config.hostnameOverride.trim().toLowerCase();
  return override !== "" ? override : hostname().trim().toLowerCase();
}

export function familyOf(ip: string): IPFamily | null {
  const bare = ip.split("/")[0] ?? "";
  const v = isIP(bare);
  return v === 4 ? "IPv4" : v === 6 ? "IPv6" : null;
}
