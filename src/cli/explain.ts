import { iptablesServiceView, matchOf } from "../backends/iptables/view.ts";
import { whyNoTraffic } from "../inspect/model.ts";
import { InputError } from "../errors.ts";
import { readEndpointFlows } from "../kernel/conntrack-count.ts";
import type { EndpointKey, Frontend } from "../kernel/conntrack-count.ts";
import type { Runner } from "../kernel/exec.ts";
import { ProcessRunner } from "../kernel/exec.ts";
import type { IPFamily } from "../ip.ts";
import { formatCIDR, ipVersion } from "../ip.ts";
import { explainService, explanationToJson, formatExplanation } from "../netfilter/explain.ts";
import type { ServiceExplanation, ServiceRef } from "../netfilter/explain.ts";
import { flowLines } from "../netfilter/view-text.ts";
import type { InspectDump } from "../backends/types.ts";
import { withApiObjects } from "./api-objects.ts";
import { manifestPaths, RulesetLoader, rulesetJson, type LoadedRuleset } from "./rulesets.ts";
import { inspectorFor, outputFormat, rulesetDump } from "./trace.ts";

/** `NAMESPACE/SERVICE[:PORT]`; the port is the Service port's name (upstream's ServicePortName). */
export function parseServiceRef(text: string): ServiceRef {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)(?::([-a-z0-9]*))?$/.exec(text);
  if (m === null)
    throw new InputError("explain", `expected NAMESPACE/SERVICE[:PORT-NAME], got ${JSON.stringify(text)}`);
  const [, namespace = "", , name = "", , port] = m;
  return port === undefined ? { namespace, name } : { namespace, name, port };
}

function endpointKeys(ex: ServiceExplanation): (EndpointKey & { servicePortName: string })[] {
  const seen = new Set<string>();
  const out: (EndpointKey & { servicePortName: string })[] = [];
  for (const c of ex.chains) {
    for (const r of c.rules) {
      if (r.role !== "dnat" || r.dnat === undefined) continue;
      const protocol = matchOf(r.rule, "protocol")?.protocol ?? "tcp";
      const k = `${protocol} ${r.dnat}`;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push({ protocol, endpoint: r.dnat, servicePortName: r.servicePortName ?? ex.service });
    }
  }
  return out;
}

/** Where the entry rules capture traffic: cluster IP, external and LB IPs, node ports (any local address). */
export function frontendsOf(ex: ServiceExplanation): Frontend[] {
  const out: Frontend[] = [];
  for (const e of ex.entries) {
    const port = matchOf(e.rule, "destinationPort")?.ranges[0]?.[0];
    if (port === undefined) continue;
    const protocol = matchOf(e.rule, "protocol")?.protocol ?? "tcp";
    const dst = matchOf(e.rule, "destination");
    const single = dst !== undefined && dst.cidr.prefix === (dst.cidr.family === "IPv4" ? 32 : 128);
    out.push(
      single ? { protocol, ip: formatCIDR(dst.cidr).replace(/\/\d+$/, ""), port } : { protocol, port },
    );
  }
  return out;
}

interface Explained {
  readonly loaded: LoadedRuleset;
  readonly explanation: ServiceExplanation;
}

function tryExplain(loaded: LoadedRuleset, ref: ServiceRef): Explained | InputError {
  try {
    return { loaded, explanation: explainService(loaded.ruleset, ref) };
  } catch (error) {
    if (error instanceof InputError) return error;
    throw error;
  }
}

/** The families to render `-f`/`--manifests` for: `--ip-family`, or both (the Service's wins). */
function wantedFamilies(options: Record<string, unknown>): IPFamily[] {
  const asked = options["ipFamily"];
  if (asked === undefined) return ["IPv4", "IPv6"];
  if (asked === "IPv4" || asked === "IPv6") return [asked];
  throw new InputError("--ip-family", `must be IPv4 or IPv6, not ${JSON.stringify(asked)}`);
}

/** The node's whole ruleset rendered from `paths`, per family (what a sync would leave). */
async function renderedRulesets(
  options: Record<string, unknown>,
  paths: string[],
  runner: Runner,
): Promise<LoadedRuleset[]> {
  const loader = new RulesetLoader({ ...options, filename: paths, manifests: undefined }, runner, false);
  const out: LoadedRuleset[] = [];
  for (const family of wantedFamilies(options)) out.push(await loader.load(family));
  return out;
}

/** `-f`/`--manifests` rendered as `render` prints them, per family, for a mode's own reader. */
async function renderedPayloads(options: Record<string, unknown>, paths: string[]): Promise<InspectDump[]> {
  const { renderCommand } = await import("./render.ts");
  const out: InspectDump[] = [];
  for (const ipFamily of wantedFamilies(options)) {
    const text = await renderCommand({ ...options, filename: paths, ipFamily });
    out.push({ text, origin: `rendered ${ipFamily} payload` });
  }
  return out;
}

/** The Service, its EndpointSlices and this node from the API server, rendered like manifests. */
function fromApi<T>(
  options: Record<string, unknown>,
  ref: ServiceRef,
  runner: Runner,
  render: (paths: string[]) => Promise<T>,
): Promise<T> {
  return withApiObjects(options, runner, ref, render);
}

/**
 * `kube-proxy-ts explain NAMESPACE/SERVICE[:PORT]`: the seed's walk for one Service, from the
 * live kernel (with counters and conntrack flows per endpoint), a dump, or rendered manifests.
 */
export async function explainCommand(
  target: string,
  options: Record<string, unknown>,
  runner: Runner = new ProcessRunner(),
): Promise<string> {
  const format = outputFormat(options["output"]);
  const ref = parseServiceRef(target);
  const paths = manifestPaths(options);
  const rulesetPath = options["ruleset"];
  const mode = options["proxyMode"];
  if (typeof mode === "string" && mode !== "iptables") {
    const dumps = typeof rulesetPath === "string" ? [await rulesetDump(rulesetPath)] : undefined;
    const rendered =
      options["api"] === true
        ? await fromApi(options, ref, runner, (p) => renderedPayloads(options, p))
        : paths.length > 0
          ? await renderedPayloads(options, paths)
          : undefined;
    return (await inspectorFor(mode)).explain({
      service: ref,
      ...(dumps === undefined ? {} : { dumps }),
      ...(rendered === undefined ? {} : { rendered }),
      conntrack: options["conntrack"] !== false,
      format,
      runner,
    });
  }
  let candidates: (() => Promise<LoadedRuleset>)[];
  if (typeof rulesetPath === "string") {
    const loader = new RulesetLoader(options, runner, false, ref);
    candidates = [() => loader.load(undefined)];
  } else if (options["api"] === true) {
    const rendered = await fromApi(options, ref, runner, (p) => renderedRulesets(options, p, runner));
    candidates = rendered.map((r) => () => Promise.resolve(r));
  } else if (paths.length > 0) {
    candidates = (await renderedRulesets(options, paths, runner)).map((r) => () => Promise.resolve(r));
  } else {
    const loader = new RulesetLoader(options, runner, false, ref);
    candidates = (["IPv4", "IPv6"] as const).map((f) => () => loader.load(f));
  }
  let found: Explained | undefined;
  let firstMiss: InputError | undefined;
  for (const load of candidates) {
    const attempt = tryExplain(await load(), ref);
    if (attempt instanceof InputError) firstMiss ??= attempt;
    else {
      found = attempt;
      break;
    }
  }
  if (found === undefined) throw firstMiss ?? new InputError("explain", "no ruleset to explain");
  const { loaded, explanation } = found;
  const { ruleset, kernel } = loaded;
  const source =
    kernel !== undefined
      ? `live kernel (${kernel.serviceReadCommand(ruleset.family)}, conntrack -L; ${kernel.detection.reason})`
      : options["api"] === true
        ? `the API server's objects, ${loaded.description.replace(/^rendered from \S+ /, "rendered ")}`
        : loaded.description;
  const flows =
    kernel !== undefined && options["conntrack"] !== false
      ? await readEndpointFlows(runner, ruleset.family, endpointKeys(explanation), frontendsOf(explanation))
      : undefined;
  const view = iptablesServiceView(explanation);
  const reasons = whyNoTraffic(view);
  if (format === "json")
    return (
      JSON.stringify(
        {
          source,
          family: ipVersion(ruleset.family),
          ruleset: rulesetJson(loaded),
          ...(explanationToJson(explanation) as object),
          ...(flows === undefined ? {} : { conntrack: flows }),
          view,
          whyNoTraffic: reasons,
        },
        null,
        2,
      ) + "\n"
    );
  const lines = [`source: ${source}`];
  // The Service's chains are there, but a ruleset nothing reaches shows rules no packet meets.
  for (const p of loaded.problems) lines.push(`WARNING: ${p.message}`);
  lines.push("", formatExplanation(explanation, ruleset.family).trimEnd());
  if (flows !== undefined) lines.push("", ...flowLines(flows));
  lines.push("", "why no traffic:");
  if (reasons.length === 0) lines.push("  nothing in these rules stops traffic to this Service");
  for (const r of reasons) lines.push(`  ${r}`);
  return lines.join("\n") + "\n";
}
