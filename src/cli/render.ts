import { fileURLToPath } from "node:url";
import { resolveConfiguration } from "../config/load.ts";
import { backendFor } from "../backends/index.ts";
import { nodeName } from "../config/node.ts";
import { familyOf } from "../ip.ts";
import { parseBool } from "../config/flags.ts";
import { InputError, type InvalidObjectError } from "../errors.ts";
import { serviceCIDRUnion } from "../k8s/objects.ts";
import { nodeInfoFromObject } from "../proxy/node.ts";
import { buildProxyState } from "../proxy/state.ts";
import type { IPFamily } from "../ip.ts";
import { readManifestPaths } from "../source/manifests.ts";

function optionalBool(
  options: Record<string, unknown>,
  key: string,
  flag: string,
  fallback: boolean,
): boolean {
  const value = options[key];
  if (value === undefined) return fallback;
  if (typeof value === "boolean") return value;
  return parseBool(String(value), flag);
}

function families(option: unknown, hasIPv6: boolean): IPFamily[] {
  switch (option) {
    case undefined:
      return hasIPv6 ? ["IPv4", "IPv6"] : ["IPv4"];
    case "IPv4":
    case "IPv6":
      return [option];
    case "dual":
      return ["IPv4", "IPv6"];
    default:
      throw new InputError("--ip-family", `must be IPv4, IPv6 or dual, not ${JSON.stringify(option)}`);
  }
}

/** The seed's nginx Service (examples/seed-nginx), rendered for its node unless told otherwise. */
export const BUILT_IN_EXAMPLE = fileURLToPath(new URL("../../examples/seed-nginx", import.meta.url));

function withBuiltInExample(options: Record<string, unknown>): Record<string, unknown> {
  const files = options["filename"];
  if (Array.isArray(files) && files.length > 0) return options;
  return {
    hostnameOverride: "node-1",
    clusterCidr: "10.244.0.0/16",
    ...options,
    filename: [BUILT_IN_EXAMPLE],
  };
}

/**
 * `kube-proxy-ts render`: the full-sync payload(s) for the objects given, exactly what would be
 * piped into iptables-restore. Returns the whole text only once everything succeeded, so a
 * failure never prints a partial payload.
 */
export async function renderCommand(given: Record<string, unknown>): Promise<string> {
  const options = withBuiltInExample(given);
  const { config, warnings } = resolveConfiguration(options);
  for (const warning of warnings) process.stderr.write(`kube-proxy-ts: warning: ${warning}\n`);
  const backend = await backendFor(config.mode);
  const objects = await readManifestPaths(options["filename"] as string[]);
  const name = options["upstreamTestSettings"] === true ? "test-node" : nodeName(config);
  const nodeObject = objects.nodes.find((n) => n.metadata.name === name) ?? null;
  const node = nodeInfoFromObject(name, nodeObject);

  const hasIPv6 =
    node.ips.some((ip) => familyOf(ip) === "IPv6") ||
    objects.services.some((s) =>
      (s.spec?.clusterIPs ?? [s.spec?.clusterIP ?? ""]).some((ip) => familyOf(ip) === "IPv6"),
    );
  const problems: InvalidObjectError[] = [...objects.problems];
  const payloads: string[] = [];
  const wanted = families(options["ipFamily"], hasIPv6);
  const localAddressOption = options["localAddresses"];
  const localAddresses =
    typeof localAddressOption === "string"
      ? localAddressOption
          .split(",")
          .map((s) => s.trim())
          .filter((s) => s !== "")
      : ["127.0.0.1/8", "::1/128", ...node.ips];
  const kernel = {
    nfacct: optionalBool(options, "nfacct", "nfacct", true),
    randomFully: optionalBool(options, "randomFully", "random-fully", true),
  };
  const serviceCIDRs = serviceCIDRUnion(objects.serviceCIDRs);
  const flagCIDRs = (options["serviceClusterIpRange"] as string[] | undefined) ?? [];
  for (const family of wanted) {
    const built = buildProxyState(
      { services: objects.services, endpointSlices: objects.endpointSlices, node: nodeObject },
      { family, nodeName: name, featureGates: config.featureGates },
    );
    if (family === wanted[0]) problems.push(...built.problems);
    const rendered = backend.render({
      config,
      node,
      family,
      state: built.state,
      localAddresses,
      kernel,
      upstreamTestSettings: options["upstreamTestSettings"] === true,
      serviceCIDRs: serviceCIDRs.length > 0 ? serviceCIDRs : flagCIDRs,
    });
    payloads.push(
      wanted.length > 1 ? `# ${rendered.consumer} payload (${family})\n${rendered.text}` : rendered.text,
    );
  }
  if (problems.length > 0) {
    const list = problems.map((p) => `  - ${p.message}`).join("\n");
    if (options["skipInvalid"] !== true) {
      throw new InputError(
        "render",
        `${problems.length} invalid object(s); fix them or pass --skip-invalid:\n${list}`,
      );
    }
    process.stderr.write(`kube-proxy-ts: skipped ${problems.length} invalid object(s):\n${list}\n`);
  }
  return payloads.join("");
}
