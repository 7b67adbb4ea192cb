import { hostname } from "node:os";
import type { KubeProxyConfiguration } from "./types.ts";

/** Upstream: hostnameOverride (trimmed, lower-cased) or the OS hostname. */
export function nodeName(config: Pick<KubeProxyConfiguration, "hostnameOverride">): string {
  const override = config.hostnameOverride.trim().toLowerCase();
  return override !== "" ? override : hostname().trim().toLowerCase();
}
