import { fileURLToPath } from "node:url";
import { resolveConfiguration } from "../config/load.ts";
import { backendFor } from "../backends/index.ts";
import type { ProxyBackend, RenderedPayload, RenderTarget } from "../backends/types.ts";
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

/** What a full sync would be rendered from: the mode, and one target per IP family. */
export interface RenderPlan {
  readonly backend: ProxyBackend;
  readonly targets: readonly RenderTarget[];
  /** The files and folders the objects came from. */
  readonly paths: readonly string[];
}

/**
 * Reads the objects of `-f` (the seed example without it), resolves the node and kernel flags
 * and the families to render; invalid objects fail the whole plan unless `--skip-invalid`.
 */
export async function renderPlan(given: Record<string, unknown>): Promise<RenderPlan> {
  const options = withBuiltInExample(given);
  const { config, warnings } = resolveConfiguration(options);
  for (const warning of warnings) process.stderr.write(`kube-proxy-ts: warning: ${warning}\n`);
  const backend = await backendFor(config.mode);
  const paths = options["filename"] as string[];
  const objects = await readManifestPaths(paths);
  const name = options["upstreamTestSettings"] === true ? "test-node" : nodeName(config);
  const nodeObject = objects.nodes.find((n) => n.metadata.name === name) ?? null;
  const node = nodeInfoFromObject(name, nodeObject);

  const hasIPv6 =
    node.ips.some((ip) => familyOf(ip) === "IPv6") ||
    objects.services.some((s) =>
      (s.spec?.clusterIPs ?? [s.spec?.clusterIP ?? ""]).some((ip) => familyOf(ip) === "IPv6"),
    );
  const problems: InvalidObjectError[] = [...objects.problems];
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
  const targets: RenderTarget[] = [];
  for (const family of wanted) {
    const built = buildProxyState(
      { services: objects.services, endpointSlices: objects.endpointSlices, node: nodeObject },
      { family, nodeName: name, featureGates: config.featureGates },
    );
    if (family === wanted[0]) problems.push(...built.problems);
    targets.push({
      config,
      node,
      family,
      state: built.state,
      localAddresses,
      kernel,
      upstreamTestSettings: options["upstreamTestSettings"] === true,
      serviceCIDRs: serviceCIDRs.length > 0 ? serviceCIDRs : flagCIDRs,
    });
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
  return { backend, targets, paths };
}

/** The node's whole ruleset after a full sync, in the mode's dump format (`render --node-ruleset`). */
export async function renderNodeRuleset(plan: RenderPlan, target: RenderTarget): Promise<RenderedPayload> {
  const { backend } = plan;
  if (backend.renderNode === undefined)
    throw new InputError(
      "--node-ruleset",
      `${backend.mode} mode cannot print a node's ruleset yet; \`render\` without it prints the ${backend.mode} payload`,
    );
  return backend.renderNode(target);
}

/**
 * `kube-proxy-ts render`: the full-sync payload(s) for the objects given, exactly what would be
 * piped into iptables-restore, or with `--node-ruleset` the node's whole ruleset after that sync
 * as iptables-save would print it. Returns the whole text only once everything succeeded, so a
 * failure never prints a partial payload.
 */
export async function renderCommand(given: Record<string, unknown>): Promise<string> {
  const plan = await renderPlan(given);
  const whole = given["nodeRuleset"] === true;
  const payloads: string[] = [];
  for (const target of plan.targets) {
    const rendered = whole ? await renderNodeRuleset(plan, target) : plan.backend.render(target);
    payloads.push(
      plan.targets.length > 1
        ? `# ${rendered.consumer} ${whole ? "output" : "payload"} (${target.family})\n${rendered.text}`
        : rendered.text,
    );
  }
  return payloads.join("");
}
